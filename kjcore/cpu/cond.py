"""Conditional family: SETcc and CMOVcc (P6).  CMOVcc reads its source even
when the condition is false, so a bad address faults either way."""
from .jit import kernel
from .operands import cond, read_rm, set_reg, write_rm
from .state import D_EXC, D_OP, D_OSZ, D_REG


@kernel("i", "sr")
def op_cond(s, ram):
    op = s[D_OP]
    c = cond(s, op & 15)
    if op >= 0x190:
        write_rm(s, ram, 1, 1 if c else 0)
        return 0
    size = s[D_OSZ]
    v = read_rm(s, ram, size)
    if s[D_EXC] < 0 and c:
        set_reg(s, s[D_REG], size, v)
    return 0
