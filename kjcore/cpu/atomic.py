"""Atomic read-modify-write family (486/Pentium): CMPXCHG, XADD, CMPXCHG8B.

The destination is always written (CMPXCHG writes the old value back on a
mismatch, as the locked bus cycle does), so a read-only destination faults
whatever the comparison says.
"""
from .alu import alu_op
from .jit import kernel
from .memory import check_write_mem, exc, read_mem, write_mem
from .operands import MASK, check_rm_write, get_reg, read_rm, set_reg, write_rm
from .state import (
    D_EAOFF,
    D_EASEG,
    D_EXC,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    EAX,
    EBX,
    ECX,
    EDX,
    EFLAGS,
    M32,
    UD_,
    ZF,
)


@kernel("i", "sr")
def op_atomic(s, ram):
    op = s[D_OP]
    if op == 0x1C7:                              # CMPXCHG8B m64
        if s[D_REG] != 1 or s[D_MOD] == 3:
            exc(s, UD_, -1)
            return 0
        seg = s[D_EASEG]
        off = s[D_EAOFF]
        lo = read_mem(s, ram, seg, off, 4)
        hi = read_mem(s, ram, seg, (off + 4) & M32, 4)
        if s[D_EXC] >= 0 or not check_write_mem(s, ram, seg, off, 8):
            return 0
        if lo == s[EAX] and hi == s[EDX]:
            write_mem(s, ram, seg, off, 4, s[EBX])
            write_mem(s, ram, seg, (off + 4) & M32, 4, s[ECX])
            s[EFLAGS] |= ZF
        else:
            write_mem(s, ram, seg, off, 4, lo)
            write_mem(s, ram, seg, (off + 4) & M32, 4, hi)
            s[EAX] = lo
            s[EDX] = hi
            s[EFLAGS] &= ~ZF
        return 0
    size = 1 if (op & 1) == 0 else s[D_OSZ]
    dst = read_rm(s, ram, size)
    if s[D_EXC] >= 0 or not check_rm_write(s, ram, size):
        return 0
    src = get_reg(s, s[D_REG], size)
    if op <= 0x1B1:                              # CMPXCHG
        acc = get_reg(s, EAX, size)
        alu_op(s, 7, acc, dst, size)
        if acc == dst:
            write_rm(s, ram, size, src)
        else:
            write_rm(s, ram, size, dst)
            set_reg(s, EAX, size, dst)
        return 0
    r = alu_op(s, 0, dst, src, size)             # XADD
    set_reg(s, s[D_REG], size, dst)
    write_rm(s, ram, size, r & MASK[size])
    return 0
