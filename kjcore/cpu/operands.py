"""Register and ModRM operand access, flag arithmetic shared by the families."""
import numpy as np

from .jit import kernel
from .memory import check_write_mem, read_mem, write_mem
from .state import (
    A_DB,
    AF,
    CF,
    D_ASZ,
    D_EAOFF,
    D_EASEG,
    D_EXC,
    D_MOD,
    D_OSZ,
    D_REG,
    D_RM,
    EFLAGS,
    ESP,
    M32,
    OF,
    PF,
    S_ATTR,
    SEG,
    SF,
    SS,
    ZF,
)

PARITY = np.array([PF if bin(i).count("1") % 2 == 0 else 0 for i in range(256)], np.int64)
MASK = np.array([0, 0xFF, 0xFFFF, 0, M32], np.int64)
SIGN = np.array([0, 0x80, 0x8000, 0, 0x80000000], np.int64)


# ---------------------------------------------------------------- registers


@kernel("i", "sii")
def get_reg(s, r, size):
    if size == 4:
        return s[r]
    if size == 2:
        return s[r] & 0xFFFF
    if r < 4:
        return s[r] & 0xFF
    return (s[r - 4] >> 8) & 0xFF


@kernel("v", "siii")
def set_reg(s, r, size, v):
    if size == 4:
        s[r] = v & M32
    elif size == 2:
        s[r] = (s[r] & 0xFFFF0000) | (v & 0xFFFF)
    elif r < 4:
        s[r] = (s[r] & 0xFFFFFF00) | (v & 0xFF)
    else:
        s[r - 4] = (s[r - 4] & 0xFFFF00FF) | ((v & 0xFF) << 8)


@kernel("i", "ii")
def sext(v, size):
    """Sign-extend a ``size``-byte value to a Python-signed int."""
    if size == 1:
        return v - 0x100 if v & 0x80 else v
    if size == 2:
        return v - 0x10000 if v & 0x8000 else v
    return v - 0x100000000 if v & 0x80000000 else v


# ---------------------------------------------------------------- ModRM operands
@kernel("i", "sri")
def read_rm(s, ram, size):
    if s[D_MOD] == 3:
        return get_reg(s, s[D_RM], size)
    return read_mem(s, ram, s[D_EASEG], s[D_EAOFF], size)


@kernel("b", "srii")
def write_rm(s, ram, size, v):
    """Write the r/m operand; returns False if the memory write faulted."""
    if s[D_MOD] == 3:
        set_reg(s, s[D_RM], size, v)
        return True
    write_mem(s, ram, s[D_EASEG], s[D_EAOFF], size, v)
    return s[D_EXC] < 0


@kernel("b", "sri")
def check_rm_write(s, ram, size):
    if s[D_MOD] == 3:
        return True
    return check_write_mem(s, ram, s[D_EASEG], s[D_EAOFF], size)


@kernel("i", "si")
def ea_off(s, delta):
    """The effective address plus ``delta``, wrapped to the address size."""
    if s[D_ASZ] == 2:
        return (s[D_EAOFF] + delta) & 0xFFFF
    return (s[D_EAOFF] + delta) & M32


@kernel("i", "s")
def osz(s):
    return s[D_OSZ]


@kernel("i", "s")
def regop(s):
    return s[D_REG]


# ---------------------------------------------------------------- stack
@kernel("b", "s")
def stack32(s):
    return (s[SEG + 4 * SS + S_ATTR] & A_DB) != 0


@kernel("b", "srii")
def push(s, ram, size, v):
    """PUSH with the stack-address size of SS.B; False if it faulted."""
    if stack32(s):
        sp = (s[ESP] - size) & M32
        write_mem(s, ram, SS, sp, size, v)
        if s[D_EXC] >= 0:
            return False
        s[ESP] = sp
    else:
        sp = (s[ESP] - size) & 0xFFFF
        write_mem(s, ram, SS, sp, size, v)
        if s[D_EXC] >= 0:
            return False
        s[ESP] = (s[ESP] & 0xFFFF0000) | sp
    return True


@kernel("i", "srii")
def stack_read(s, ram, size, delta):
    """Read ``size`` bytes at SS:[ESP + delta] without moving ESP."""
    if stack32(s):
        return read_mem(s, ram, SS, (s[ESP] + delta) & M32, size)
    return read_mem(s, ram, SS, (s[ESP] + delta) & 0xFFFF, size)


@kernel("v", "si")
def sp_add(s, n):
    if stack32(s):
        s[ESP] = (s[ESP] + n) & M32
    else:
        s[ESP] = (s[ESP] & 0xFFFF0000) | ((s[ESP] + n) & 0xFFFF)


# ---------------------------------------------------------------- flags
@kernel("i", "ii")
def szp(r, size):
    f = PARITY[r & 0xFF]
    if r == 0:
        f |= ZF
    if r & SIGN[size]:
        f |= SF
    return f


@kernel("v", "si")
def set_arith(s, f):
    s[EFLAGS] = (s[EFLAGS] & ~(CF | PF | AF | ZF | SF | OF)) | f


@kernel("i", "iiii")
def flags_add(a, b, res, size):
    """Flags of a + b (+ carry) given the unmasked sum ``res``."""
    r = res & MASK[size]
    f = szp(r, size)
    if res > MASK[size]:
        f |= CF
    f |= (a ^ b ^ r) & AF
    if (a ^ r) & (b ^ r) & SIGN[size]:
        f |= OF
    return f


@kernel("i", "iiii")
def flags_sub(a, b, res, size):
    """Flags of a - b (- borrow) given the unmasked difference ``res``."""
    r = res & MASK[size]
    f = szp(r, size)
    if res < 0:
        f |= CF
    f |= (a ^ b ^ r) & AF
    if (a ^ b) & (a ^ r) & SIGN[size]:
        f |= OF
    return f


@kernel("b", "si")
def cond(s, cc):
    """Jcc/SETcc/CMOVcc condition ``cc`` (low nibble of the opcode)."""
    f = s[EFLAGS]
    c = cc >> 1
    if c == 0:
        r = (f & OF) != 0
    elif c == 1:
        r = (f & CF) != 0
    elif c == 2:
        r = (f & ZF) != 0
    elif c == 3:
        r = (f & (CF | ZF)) != 0
    elif c == 4:
        r = (f & SF) != 0
    elif c == 5:
        r = (f & PF) != 0
    elif c == 6:
        r = ((f & SF) != 0) != ((f & OF) != 0)
    else:
        r = (f & ZF) != 0 or (((f & SF) != 0) != ((f & OF) != 0))
    if cc & 1:
        return not r
    return r
