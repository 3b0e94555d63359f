"""Multiply and divide family: MUL, IMUL (1, 2 and 3 operands), DIV, IDIV.

Undefined flags (documented rule, same as QEMU/Unicorn): after MUL/IMUL,
SF, ZF and PF describe the low half of the product and AF is cleared; DIV
and IDIV leave all flags unchanged.  #DE for a zero divisor or a quotient
that does not fit, with nothing modified.
"""
import numpy as np

from .jit import kernel
from .memory import exc
from .operands import MASK, get_reg, read_rm, set_arith, set_reg, sext, szp
from .state import CF, D_EXC, D_IMM, D_OP, D_OSZ, D_REG, DE_, EAX, EDX, M32, OF


@kernel("v", "siib")
def _mul_flags(s, lo, size, overflow):
    f = szp(lo & MASK[size], size)
    if overflow:
        f |= CF | OF
    set_arith(s, f)


@kernel("ii", "ii")
def umul32(a, b):
    p = np.uint64(a) * np.uint64(b)
    return np.int64(p >> np.uint64(32)), np.int64(p & np.uint64(M32))


@kernel("v", "siii")
def _store_wide(s, size, hi, lo):
    if size == 1:
        s[EAX] = (s[EAX] & 0xFFFF0000) | (hi << 8) | lo
    else:
        set_reg(s, EAX, size, lo)
        set_reg(s, EDX, size, hi)


@kernel("i", "srii")
def grp3_muldiv(s, ram, sub, size):
    src = read_rm(s, ram, size)
    if s[D_EXC] >= 0:
        return 0
    bits = 8 * size
    if sub == 4:                       # MUL
        if size == 4:
            hi, lo = umul32(s[EAX], src)
        else:
            p = get_reg(s, EAX, size) * src
            lo = p & MASK[size]
            hi = p >> bits
        _store_wide(s, size, hi, lo)
        _mul_flags(s, lo, size, hi != 0)
        return 0
    if sub == 5:                       # IMUL
        p = sext(get_reg(s, EAX, size), size) * sext(src, size)
        lo = p & MASK[size]
        hi = (p >> bits) & MASK[size]
        _store_wide(s, size, hi, lo)
        _mul_flags(s, lo, size, p != sext(lo, size))
        return 0
    if src == 0:
        exc(s, DE_, -1)
        return 0
    if size == 1:
        n = s[EAX] & 0xFFFF
    elif size == 2:
        n = ((s[EDX] & 0xFFFF) << 16) | (s[EAX] & 0xFFFF)
    else:
        n = -1
    if sub == 6:                       # DIV
        if size == 4:
            if s[EDX] >= src:
                exc(s, DE_, -1)
                return 0
            w = (np.uint64(s[EDX]) << np.uint64(32)) | np.uint64(s[EAX])
            q = np.int64(w // np.uint64(src))
            r = np.int64(w % np.uint64(src))
        else:
            q = n // src
            r = n % src
            if q > MASK[size]:
                exc(s, DE_, -1)
                return 0
    else:                              # IDIV: truncate toward zero
        d = sext(src, size)
        if size == 4:
            if s[EDX] == 0x80000000 and s[EAX] == 0:
                exc(s, DE_, -1)        # -2**63 cannot be negated in int64; |q| >= 2**32
                return 0
            sn = sext(s[EDX], 4) * 0x100000000 + s[EAX]
        else:
            sn = n - (1 << (2 * bits)) if n >> (2 * bits - 1) else n
        q = abs(sn) // abs(d)
        r = abs(sn) % abs(d)
        if (sn < 0) != (d < 0):
            q = -q
        if sn < 0:
            r = -r
        lim = 1 << (bits - 1)
        if q >= lim or q < -lim:
            exc(s, DE_, -1)
            return 0
        q &= MASK[size]
        r &= MASK[size]
    if size == 1:
        s[EAX] = (s[EAX] & 0xFFFF0000) | (r << 8) | q
    else:
        set_reg(s, EAX, size, q)
        set_reg(s, EDX, size, r)
    return 0


@kernel("i", "sr")
def op_muldiv(s, ram):
    """IMUL r, r/m (0F AF) and IMUL r, r/m, imm (69, 6B)."""
    size = s[D_OSZ]
    op = s[D_OP]
    b = read_rm(s, ram, size)
    if s[D_EXC] >= 0:
        return 0
    if op == 0x1AF:
        a = get_reg(s, s[D_REG], size)
    else:
        a = b
        b = s[D_IMM]
        b = sext(b, 1) if op == 0x6B else sext(b, size)
        b &= MASK[size]
    p = sext(a, size) * sext(b, size)
    lo = p & MASK[size]
    set_reg(s, s[D_REG], size, lo)
    _mul_flags(s, lo, size, p != sext(lo, size))
    return 0
