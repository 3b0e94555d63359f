"""Opcode table (as data) and the instruction decoder.

The table maps each of the 512 opcodes (one-byte, then 0x0F-prefixed) to an
instruction *family* and a small flag word saying whether a ModRM byte and
which immediate follow.  Families are handled by one module each; a family
handler re-derives the operation from the opcode bits, as the hardware's
own encoding is regular (ALU op in bits 3-5, direction in bit 1, width in
bit 0, ...).

Note on Numba's cache: the table is frozen into the compiled decoder; after
editing it clear ``NUMBA_CACHE_DIR`` (compiled callers in other modules are
not invalidated automatically).
"""
import numpy as np
from .jit import kernel

from .memory import ACC_FETCH, exc, phys_read, translate, user_acc
from .state import (
    A_DB, CS, D_ASZ, D_BASE, D_CODE32, D_EAOFF, D_EASEG, D_EXC, D_FPAGE, D_FPHYS, D_IMM, D_IMM2,
    D_LEN, D_LOCK, D_MOD, D_MODRM, D_NEXT, D_OP, D_OSZ, D_REG, D_REP, D_RM, D_SEGOVR,
    DS, EBP, EIP, ESP, GP_, M32, SEG, SS, S_ATTR, S_BASE, S_LIMIT, UD_,
)

# Families.
F_UD, F_ALU, F_INCDEC, F_STACK, F_JUMP, F_GRP5, F_GRP3, F_SHIFT, F_MOV, F_STRING = range(10)
F_FLAGS, F_BCD, F_BITS, F_COND, F_ATOMIC, F_IO, F_INT, F_FAR, F_SYS, F_FPU = range(10, 20)
F_MULDIV = 20
FAMILY_NAMES = ("ud", "alu", "incdec", "stack", "jump", "grp5", "grp3", "shift", "mov",
                "string", "flags", "bcd", "bits", "cond", "atomic", "io", "int", "far",
                "sys", "fpu", "muldiv")

# Flag word.
O_MODRM = 1
O_LOCK = 2          # LOCK allowed (memory destination only)
I_NONE, I_B, I_W, I_Z, I_MOFFS, I_ENTER, I_FAR, I_GRP3 = range(8)
IMM_SHIFT = 4


def _build():
    fam = np.zeros(512, np.int64)
    flags = np.zeros(512, np.int64)

    def put(ops, f, modrm=False, imm=I_NONE, lock=False):
        for op in ops:
            fam[op] = f
            flags[op] = (O_MODRM if modrm else 0) | (O_LOCK if lock else 0) | (imm << IMM_SHIFT)

    for base in range(0, 0x40, 8):
        put([base, base + 1], F_ALU, True, lock=base != 0x38)
        put([base + 2, base + 3], F_ALU, True)
        put([base + 4], F_ALU, imm=I_B)
        put([base + 5], F_ALU, imm=I_Z)
    put([0x80, 0x82], F_ALU, True, I_B, lock=True)
    put([0x81], F_ALU, True, I_Z, lock=True)
    put([0x83], F_ALU, True, I_B, lock=True)
    put([0x84, 0x85], F_ALU, True)
    put([0xA8], F_ALU, imm=I_B)
    put([0xA9], F_ALU, imm=I_Z)
    put([0x06, 0x07, 0x0E, 0x16, 0x17, 0x1E, 0x1F], F_STACK)
    put([0x27, 0x2F, 0x37, 0x3F], F_BCD)
    put([0xD4, 0xD5], F_BCD, imm=I_B)
    put(range(0x40, 0x50), F_INCDEC)
    put(range(0x50, 0x62), F_STACK)
    put([0x62], F_INT, True)
    put([0x63], F_SYS, True)
    put([0x68], F_STACK, imm=I_Z)
    put([0x69], F_MULDIV, True, I_Z)
    put([0x6A], F_STACK, imm=I_B)
    put([0x6B], F_MULDIV, True, I_B)
    put(range(0x6C, 0x70), F_STRING)
    put(range(0x70, 0x80), F_JUMP, imm=I_B)
    put([0x86, 0x87], F_MOV, True, lock=True)
    put(range(0x88, 0x8F), F_MOV, True)
    put([0x8F], F_STACK, True)
    put(range(0x90, 0xA0), F_MOV)
    put([0x9A], F_FAR, imm=I_FAR)
    put([0x9B], F_FPU)
    put([0x9C, 0x9D], F_STACK)
    put(range(0xA0, 0xA4), F_MOV, imm=I_MOFFS)
    put([0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF], F_STRING)
    put(range(0xB0, 0xB8), F_MOV, imm=I_B)
    put(range(0xB8, 0xC0), F_MOV, imm=I_Z)
    put([0xC0, 0xC1], F_SHIFT, True, I_B)
    put([0xC2], F_JUMP, imm=I_W)
    put([0xC3], F_JUMP)
    put([0xC4, 0xC5], F_FAR, True)
    put([0xC6], F_MOV, True, I_B)
    put([0xC7], F_MOV, True, I_Z)
    put([0xC8], F_STACK, imm=I_ENTER)
    put([0xC9], F_STACK)
    put([0xCA], F_FAR, imm=I_W)
    put([0xCB], F_FAR)
    put([0xCC, 0xCE, 0xCF], F_INT)
    put([0xCD], F_INT, imm=I_B)
    put(range(0xD0, 0xD4), F_SHIFT, True)
    put([0xD7], F_MOV)
    put(range(0xD8, 0xE0), F_FPU, True)
    put(range(0xE0, 0xE4), F_JUMP, imm=I_B)
    put([0xE4, 0xE5, 0xE6, 0xE7], F_IO, imm=I_B)
    put([0xE8, 0xE9], F_JUMP, imm=I_Z)
    put([0xEA], F_FAR, imm=I_FAR)
    put([0xEB], F_JUMP, imm=I_B)
    put(range(0xEC, 0xF0), F_IO)
    put([0xF4], F_SYS)
    put([0xF5], F_FLAGS)
    put([0xF6], F_GRP3, True, I_GRP3, lock=True)
    put([0xF7], F_GRP3, True, I_GRP3, lock=True)
    put(range(0xF8, 0xFE), F_FLAGS)
    put([0xFE, 0xFF], F_GRP5, True, lock=True)
    # Two-byte opcodes.
    t = 0x100
    put([t + 0x00, t + 0x01, t + 0x02, t + 0x03], F_SYS, True)
    put([t + 0x06, t + 0x08, t + 0x09, t + 0x0B, t + 0x30, t + 0x31, t + 0x32, t + 0xA2],
        F_SYS)
    put(range(t + 0x18, t + 0x20), F_MOV, True)       # hint NOPs, NOP Ev
    put(range(t + 0x20, t + 0x24), F_SYS, True)       # MOV CRn/DRn (mod ignored)
    put(range(t + 0x40, t + 0x50), F_COND, True)
    put(range(t + 0x80, t + 0x90), F_JUMP, imm=I_Z)
    put(range(t + 0x90, t + 0xA0), F_COND, True)
    put([t + 0xA0, t + 0xA1, t + 0xA8, t + 0xA9], F_STACK)
    put([t + 0xA3], F_BITS, True)
    put([t + 0xAB, t + 0xB3, t + 0xBB], F_BITS, True, lock=True)
    put([t + 0xBA], F_BITS, True, I_B, lock=True)
    put([t + 0xBC, t + 0xBD], F_BITS, True)
    put(range(t + 0xC8, t + 0xD0), F_BITS)
    put([t + 0xA4, t + 0xAC], F_SHIFT, True, I_B)
    put([t + 0xA5, t + 0xAD], F_SHIFT, True)
    put([t + 0xAF], F_MULDIV, True)
    put([t + 0xB0, t + 0xB1, t + 0xC0, t + 0xC1, t + 0xC7], F_ATOMIC, True, lock=True)
    put([t + 0xB2, t + 0xB4, t + 0xB5], F_FAR, True)
    put([t + 0xB6, t + 0xB7, t + 0xBE, t + 0xBF], F_MOV, True)
    return fam, flags


OP_FAMILY, OP_FLAGS = _build()


@kernel("i", "sr")
def fetch_byte(s, ram):
    off = s[D_NEXT]
    if off > s[SEG + 4 * CS + S_LIMIT] or s[D_LEN] >= 15:
        exc(s, GP_, 0)
        return 0
    lin = (s[SEG + 4 * CS + S_BASE] + off) & M32
    if (lin >> 12) == s[D_FPAGE]:
        b = np.int64(ram[s[D_FPHYS] + (lin & 0xFFF)])
    else:
        p = translate(s, ram, lin, ACC_FETCH | user_acc(s))
        if p < 0:
            return 0
        pg = p & ~0xFFF
        if pg + 4096 <= ram.shape[0]:
            s[D_FPAGE] = lin >> 12
            s[D_FPHYS] = pg
        b = phys_read(s, ram, p, 1)
    s[D_NEXT] = (off + 1) & M32
    s[D_LEN] += 1
    return b


@kernel("i", "sri")
def fetch(s, ram, n):
    v = 0
    for i in range(n):
        v |= fetch_byte(s, ram) << (8 * i)
        if s[D_EXC] >= 0:
            return 0
    return v


@kernel("v", "sri")
def decode_ea(s, ram, modrm):
    mod = modrm >> 6
    rm = modrm & 7
    seg = DS
    s[D_BASE] = -1
    if s[D_ASZ] == 4:
        if rm == 4:
            sib = fetch_byte(s, ram)
            base = sib & 7
            idx = (sib >> 3) & 7
            if base == 5 and mod == 0:
                off = fetch(s, ram, 4)
            else:
                off = s[base]
                s[D_BASE] = base
                if base == ESP or base == EBP:
                    seg = SS
            if idx != 4:
                off += s[idx] << (sib >> 6)
        elif rm == 5 and mod == 0:
            off = fetch(s, ram, 4)
        else:
            off = s[rm]
            s[D_BASE] = rm
            if rm == EBP:
                seg = SS
        if mod == 1:
            d = fetch(s, ram, 1)
            off += d - 0x100 if d & 0x80 else d
        elif mod == 2:
            off += fetch(s, ram, 4)
        off &= M32
    else:
        # 16-bit addressing: BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP/disp16, BX.
        if rm == 0:
            off = s[3] + s[6]
        elif rm == 1:
            off = s[3] + s[7]
        elif rm == 2:
            off = s[5] + s[6]
            seg = SS
        elif rm == 3:
            off = s[5] + s[7]
            seg = SS
        elif rm == 4:
            off = s[6]
        elif rm == 5:
            off = s[7]
        elif rm == 6:
            if mod == 0:
                off = fetch(s, ram, 2)
            else:
                off = s[5]
                seg = SS
        else:
            off = s[3]
        if rm != 6 or mod != 0:
            off &= 0xFFFF
        if mod == 1:
            d = fetch(s, ram, 1)
            off += d - 0x100 if d & 0x80 else d
        elif mod == 2:
            off += fetch(s, ram, 2)
        off &= 0xFFFF
    if s[D_SEGOVR] >= 0:
        seg = s[D_SEGOVR]
    s[D_EASEG] = seg
    s[D_EAOFF] = off


@kernel("i", "sr")
def decode(s, ram):
    """Decode the instruction at CS:EIP into the D_* slots; family or -1."""
    s[D_LEN] = 0
    s[D_NEXT] = s[EIP]
    code32 = (s[SEG + 4 * CS + S_ATTR] & A_DB) != 0
    s[D_CODE32] = 1 if code32 else 0
    dflt = 4 if code32 else 2
    osz = dflt
    asz = dflt
    segovr = -1
    rep = 0
    lock = 0
    while True:
        b = fetch_byte(s, ram)
        if s[D_EXC] >= 0:
            return -1
        if b == 0x66:
            osz = 6 - dflt
        elif b == 0x67:
            asz = 6 - dflt
        elif b == 0x26 or b == 0x2E or b == 0x36 or b == 0x3E:
            segovr = (b >> 3) & 3
        elif b == 0x64 or b == 0x65:
            segovr = b - 0x60
        elif b == 0xF0:
            lock = 1
        elif b == 0xF2 or b == 0xF3:
            rep = b
        else:
            break
    op = b
    if op == 0x0F:
        op = 0x100 | fetch_byte(s, ram)
        if s[D_EXC] >= 0:
            return -1
    s[D_OP] = op
    s[D_OSZ] = osz
    s[D_ASZ] = asz
    s[D_SEGOVR] = segovr
    s[D_REP] = rep
    s[D_LOCK] = lock
    fl = OP_FLAGS[op]
    if fl & O_MODRM:
        modrm = fetch_byte(s, ram)
        if s[D_EXC] >= 0:
            return -1
        s[D_MODRM] = modrm
        s[D_MOD] = modrm >> 6
        s[D_REG] = (modrm >> 3) & 7
        s[D_RM] = modrm & 7
        if (modrm >> 6) != 3:
            decode_ea(s, ram, modrm)
            if s[D_EXC] >= 0:
                return -1
    else:
        s[D_MOD] = 3
    imm = (fl >> IMM_SHIFT) & 15
    if imm == I_B:
        s[D_IMM] = fetch(s, ram, 1)
    elif imm == I_W:
        s[D_IMM] = fetch(s, ram, 2)
    elif imm == I_Z:
        s[D_IMM] = fetch(s, ram, osz)
    elif imm == I_MOFFS:
        s[D_IMM] = fetch(s, ram, asz)
    elif imm == I_ENTER:
        s[D_IMM] = fetch(s, ram, 2)
        s[D_IMM2] = fetch(s, ram, 1)
    elif imm == I_FAR:
        s[D_IMM] = fetch(s, ram, osz)
        s[D_IMM2] = fetch(s, ram, 2)
    elif imm == I_GRP3:
        if s[D_REG] < 2:
            s[D_IMM] = fetch(s, ram, 1 if op == 0xF6 else osz)
    if s[D_EXC] >= 0:
        return -1
    if lock:
        # LOCK is legal only on read-modify-write forms with a memory
        # destination (SDM vol. 2, LOCK); anything else is #UD.
        ok = (fl & O_LOCK) != 0 and s[D_MOD] != 3
        if ok:
            r = s[D_REG]
            if op == 0xF6 or op == 0xF7:
                ok = r == 2 or r == 3
            elif op == 0xFE or op == 0xFF:
                ok = r < 2
            elif op == 0x1BA:
                ok = r >= 5
            elif op == 0x1C7:
                ok = r == 1
            elif op >= 0x80 and op <= 0x83:
                ok = r != 7
        if not ok:
            exc(s, UD_, -1)
            return -1
    return OP_FAMILY[op]
