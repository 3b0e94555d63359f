"""Data movement family: MOV (all forms), MOVZX/MOVSX, LEA, XCHG, CBW/CWD
family, SAHF/LAHF, XLAT, and the multi-byte NOPs."""
from .jit import kernel
from .memory import exc, read_mem, write_mem
from .operands import MASK, check_rm_write, get_reg, read_rm, set_reg, sext, write_rm
from .segments import load_seg
from .state import (
    AF,
    CF,
    CS,
    D_ASZ,
    D_EAOFF,
    D_EXC,
    D_IMM,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    D_RM,
    D_SEGOVR,
    DS,
    EAX,
    EBX,
    EDX,
    EFLAGS,
    PF,
    SEG,
    SF,
    UD_,
    ZF,
)


@kernel("i", "sr")
def op_mov(s, ram):
    op = s[D_OP]
    osz = s[D_OSZ]
    if op <= 0x8B and op >= 0x88:
        size = 1 if (op & 1) == 0 else osz
        if op & 2:
            v = read_rm(s, ram, size)
            if s[D_EXC] < 0:
                set_reg(s, s[D_REG], size, v)
        else:
            write_rm(s, ram, size, get_reg(s, s[D_REG], size))
        return 0
    if op >= 0xB0 and op <= 0xBF:
        if op < 0xB8:
            set_reg(s, op & 7, 1, s[D_IMM])
        else:
            set_reg(s, op & 7, osz, s[D_IMM])
        return 0
    if op == 0x8D:                               # LEA
        if s[D_MOD] == 3:
            exc(s, UD_, -1)
            return 0
        set_reg(s, s[D_REG], osz, s[D_EAOFF])
        return 0
    if op == 0xC6 or op == 0xC7:
        if s[D_REG] != 0:
            exc(s, UD_, -1)
            return 0
        write_rm(s, ram, 1 if op == 0xC6 else osz, s[D_IMM])
        return 0
    if op >= 0xA0 and op <= 0xA3:                # MOV acc <-> moffs
        size = 1 if (op & 1) == 0 else osz
        seg = s[D_SEGOVR] if s[D_SEGOVR] >= 0 else DS
        if op < 0xA2:
            v = read_mem(s, ram, seg, s[D_IMM], size)
            if s[D_EXC] < 0:
                set_reg(s, EAX, size, v)
        else:
            write_mem(s, ram, seg, s[D_IMM], size, get_reg(s, EAX, size))
        return 0
    if op == 0x8C:                               # MOV r/m, Sreg
        r = s[D_REG]
        if r > 5:
            exc(s, UD_, -1)
            return 0
        sel = s[SEG + 4 * r]
        if s[D_MOD] == 3:
            set_reg(s, s[D_RM], osz, sel)        # zero-extended in a 32-bit register
        else:
            write_rm(s, ram, 2, sel)
        return 0
    if op == 0x8E:                               # MOV Sreg, r/m
        r = s[D_REG]
        if r > 5 or r == CS:
            exc(s, UD_, -1)
            return 0
        v = read_rm(s, ram, 2)
        if s[D_EXC] < 0:
            load_seg(s, ram, r, v)
        return 0
    if op == 0x86 or op == 0x87:                 # XCHG r/m, r (always locked)
        size = 1 if op == 0x86 else osz
        a = read_rm(s, ram, size)
        if s[D_EXC] >= 0 or not check_rm_write(s, ram, size):
            return 0
        b = get_reg(s, s[D_REG], size)
        write_rm(s, ram, size, b)
        set_reg(s, s[D_REG], size, a)
        return 0
    if op >= 0x91 and op <= 0x97:
        r = op & 7
        a = get_reg(s, EAX, osz)
        set_reg(s, EAX, osz, get_reg(s, r, osz))
        set_reg(s, r, osz, a)
        return 0
    if op == 0x90:
        return 0                                 # NOP / PAUSE
    if op == 0x98:                               # CBW / CWDE
        if osz == 2:
            set_reg(s, EAX, 2, sext(s[EAX] & 0xFF, 1))
        else:
            set_reg(s, EAX, 4, sext(s[EAX] & 0xFFFF, 2))
        return 0
    if op == 0x99:                               # CWD / CDQ
        sign = get_reg(s, EAX, osz) >> (8 * osz - 1)
        set_reg(s, EDX, osz, MASK[osz] if sign else 0)
        return 0
    if op == 0x9E:                               # SAHF
        m = SF | ZF | AF | PF | CF
        s[EFLAGS] = (s[EFLAGS] & ~m) | ((s[EAX] >> 8) & m)
        return 0
    if op == 0x9F:                               # LAHF
        set_reg(s, 4, 1, (s[EFLAGS] & 0xD7) | 2)
        return 0
    if op == 0xD7:                               # XLAT
        seg = s[D_SEGOVR] if s[D_SEGOVR] >= 0 else DS
        if s[D_ASZ] == 4:
            off = (s[EBX] + (s[EAX] & 0xFF)) & 0xFFFFFFFF
        else:
            off = ((s[EBX] & 0xFFFF) + (s[EAX] & 0xFF)) & 0xFFFF
        v = read_mem(s, ram, seg, off, 1)
        if s[D_EXC] < 0:
            set_reg(s, EAX, 1, v)
        return 0
    if op >= 0x1B6:                              # MOVZX / MOVSX
        size = 1 if (op & 1) == 0 else 2
        v = read_rm(s, ram, size)
        if s[D_EXC] >= 0:
            return 0
        if op >= 0x1BE:
            v = sext(v, size) & MASK[osz]
        set_reg(s, s[D_REG], osz, v)
        return 0
    # 0F 18..1F: prefetch hints and NOP Ev; no memory access.
    return 0
