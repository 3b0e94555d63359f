"""The instruction decoder (compiled): prefixes, opcode, ModRM/SIB, immediates.

What follows an opcode (a ModRM byte, which immediate) and which reg fields
LOCK is legal with come from the opcode table, ``isa.py``, through the
arrays it derives at import time (``OP_FAMILY``, ``OP_FLAGS``); the decoder
leaves the decoded fields in the state vector's D_* slots and returns the
family, on which ``core.py`` dispatches.

Note on Numba's cache: the arrays are frozen into the compiled decoder; after
editing the table clear ``NUMBA_CACHE_DIR`` (compiled callers in other
modules are not invalidated automatically).
"""
import numpy as np

from .isa import (
    I_B,
    I_ENTER,
    I_FAR,
    I_GRP3,
    I_MOFFS,
    I_W,
    I_Z,
    IMM_SHIFT,
    LOCK_SHIFT,
    O_MODREG,
    O_MODRM,
    OP_FAMILY,
    OP_FLAGS,
)
from .jit import kernel
from .memory import ACC_FETCH, exc, phys_read, translate, user_acc
from .state import (
    A_DB,
    CS,
    D_ASZ,
    D_BASE,
    D_CODE32,
    D_EAOFF,
    D_EASEG,
    D_EXC,
    D_FPAGE,
    D_FPHYS,
    D_IMM,
    D_IMM2,
    D_LEN,
    D_LOCK,
    D_MOD,
    D_MODRM,
    D_NEXT,
    D_OP,
    D_OSZ,
    D_REG,
    D_REP,
    D_RM,
    D_SEGOVR,
    DS,
    EBP,
    EIP,
    ESP,
    GP_,
    M32,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    SEG,
    SS,
    UD_,
)


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
        s[D_MOD] = 3 if fl & O_MODREG else modrm >> 6
        s[D_REG] = (modrm >> 3) & 7
        s[D_RM] = modrm & 7
        if s[D_MOD] != 3:
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
        # destination (SDM vol. 2, LOCK), the table's lock column; anything
        # else is #UD.
        if s[D_MOD] == 3 or ((fl >> LOCK_SHIFT) >> s[D_REG]) & 1 == 0:
            exc(s, UD_, -1)
            return -1
    return OP_FAMILY[op]
