"""Lazy EFLAGS for the fast path: the arithmetic flags as a record of the
last flag-writing operation, computed only when something reads them.

The fast path (``fastpath.py``) records the operation kind (``L_*``), its
operands and its 32-bit result instead of computing EFLAGS; ``flags_of``
turns the record into EFLAGS when the step loop leaves the fast path (and
the translation tier's entry needs them exact), ``cond_lazy`` evaluates a Jcc
condition from the record, ``carry_now`` gives CF for INC/DEC (which keep
it).
"""
import numpy as np

from .jit import inline_kernel
from .operands import PARITY
from .state import AF, CF, OF, PF, SF, ZF


def _cond_table():
    t = np.zeros(16 * 32, np.bool_)
    for cc in range(16):
        for idx in range(32):
            cf, pf, zf, sf, of = (idx & 1, idx >> 1 & 1, idx >> 2 & 1, idx >> 3 & 1, idx >> 4 & 1)
            r = (of, cf, zf, cf or zf, sf, pf, sf != of, zf or (sf != of))[cc >> 1]
            t[cc * 32 + idx] = bool(r) != bool(cc & 1)
    return t


#: COND[cc * 32 + (CF | PF<<1 | ZF<<2 | SF<<3 | OF<<4)]: Jcc condition cc holds.
COND = _cond_table()

# Lazy flags: the step loop's fast path records the last flag-writing
# operation instead of computing EFLAGS (``flags_of`` does that on demand).
L_NONE, L_ADD, L_SUB, L_LOGIC, L_INC, L_DEC = range(6)


@inline_kernel
def cond_fast(f, cc):
    idx = (f & 1) | ((f >> 1) & 2) | ((f >> 4) & 4) | ((f >> 4) & 8) | ((f >> 7) & 16)
    return COND[cc * 32 + idx]


@inline_kernel
def flags_of(f, lop, la, lb, lr):
    """EFLAGS ``f`` with the arithmetic flags of the recorded operation.

    ``lop``: L_* kind; ``la``/``lb``: operands, ``lr``: 32-bit result (INC/DEC
    record lb = 1 and keep CF in ``f``).  L_NONE: ``f`` is exact.
    """
    if lop == L_NONE:
        return f
    if lop == L_LOGIC:
        nf = 0
    else:
        if lop == L_ADD or lop == L_INC:
            cf = (1 if lr < la else 0) if lop == L_ADD else (f & CF)
            ov = (la ^ lr) & (lb ^ lr) & 0x80000000
        else:
            cf = (1 if la < lb else 0) if lop == L_SUB else (f & CF)
            ov = (la ^ lb) & (la ^ lr) & 0x80000000
        nf = cf | ((la ^ lb ^ lr) & AF)
        if ov:
            nf |= OF
    nf |= PARITY[lr & 0xFF]
    if lr == 0:
        nf |= ZF
    if lr & 0x80000000:
        nf |= SF
    return (f & ~(CF | PF | AF | ZF | SF | OF)) | nf


@inline_kernel
def cond_lazy(f, lop, la, lb, lr, cc):
    """Jcc condition ``cc`` from the lazy flags: (holds, EFLAGS, lop).

    ZF, SF and the unsigned/signed comparisons after SUB/CMP come straight
    from the recorded operands; anything else materialises EFLAGS first.
    """
    k = cc >> 1
    if lop != L_NONE:
        if k == 2:
            return (lr == 0) != ((cc & 1) != 0), f, lop
        if k == 4:
            return (lr >= 0x80000000) != ((cc & 1) != 0), f, lop
        if lop == L_SUB:
            if k == 1:
                return (la < lb) != ((cc & 1) != 0), f, lop
            if k == 3:
                return (la <= lb) != ((cc & 1) != 0), f, lop
            sa = la - ((la & 0x80000000) << 1)
            sb = lb - ((lb & 0x80000000) << 1)
            if k == 6:
                return (sa < sb) != ((cc & 1) != 0), f, lop
            if k == 7:
                return (sa <= sb) != ((cc & 1) != 0), f, lop
        f = flags_of(f, lop, la, lb, lr)
    return cond_fast(f, cc), f, L_NONE


@inline_kernel
def carry_now(f, lop, la, lb, lr):
    """CF of the lazy flags (for INC/DEC, which keep it)."""
    if lop == L_ADD:
        return 1 if lr < la else 0
    if lop == L_SUB:
        return 1 if la < lb else 0
    if lop == L_LOGIC:
        return 0
    return f & CF
