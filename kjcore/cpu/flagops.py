"""Flag-control family: CMC, CLC, STC, CLI, STI, CLD, STD.
CLI/STI need CPL <= IOPL (#GP(0) otherwise; no VME/PVI)."""
from .jit import kernel
from .memory import exc
from .state import CF, CPL, D_OP, DF, EFLAGS, GP_, IF


@kernel("i", "sr")
def op_flags(s, ram):
    op = s[D_OP]
    if op == 0xF5:
        s[EFLAGS] ^= CF
    elif op == 0xF8:
        s[EFLAGS] &= ~CF
    elif op == 0xF9:
        s[EFLAGS] |= CF
    elif op == 0xFC:
        s[EFLAGS] &= ~DF
    elif op == 0xFD:
        s[EFLAGS] |= DF
    else:
        if s[CPL] > ((s[EFLAGS] >> 12) & 3):
            exc(s, GP_, 0)
        elif op == 0xFA:
            s[EFLAGS] &= ~IF
        else:
            s[EFLAGS] |= IF
    return 0
