"""The fast path's primitives: RAM access without checks, the 32-bit memory operand
(``ea32``), the plain-case address check (``phys_n``) and the exact 32-bit ALU (``alu32``).

Shared by ``fastpath.py`` (the first-byte switch and its memory forms) and
``fastforms.py`` (the forms gcc emits beside them).  ``phys_n`` is the one place the fast
path decides that an access needs no fault, check or device: anything it refuses goes
through the full decoder and ``memory.py``.
"""
import numpy as np

from .jit import inline_kernel
from .memory import T_DIRTY, T_SWRITE, T_UREAD, T_UWRITE, in_rom, tlb_lookup
from .operands import PARITY
from .state import (
    A20_CLEAR,
    A_CODE,
    A_E,
    A_USABLE,
    A_W,
    AF,
    CF,
    CPL,
    CR0,
    CR0_PG,
    DS,
    EBP,
    ESP,
    M32,
    OF,
    PF,
    SEG,
    SF,
    SS,
    ZF,
)


@inline_kernel
def alu32(aop, a, b, f):
    """32-bit ALU op ``aop`` on a, b with incoming EFLAGS f: (result, new EFLAGS)."""
    if aop == 0 or aop == 2:
        res = a + b + ((f & CF) if aop == 2 else 0)
        r = res & M32
        nf = CF if res > M32 else 0
        nf |= (a ^ b ^ r) & AF
        if (a ^ r) & (b ^ r) & 0x80000000:
            nf |= OF
    elif aop == 3 or aop == 5 or aop == 7:
        res = a - b - ((f & CF) if aop == 3 else 0)
        r = res & M32
        nf = CF if res < 0 else 0
        nf |= (a ^ b ^ r) & AF
        if (a ^ b) & (a ^ r) & 0x80000000:
            nf |= OF
    else:
        if aop == 1:
            r = a | b
        elif aop == 4:
            r = a & b
        else:
            r = a ^ b
        nf = 0
    nf |= PARITY[r & 0xFF]
    if r == 0:
        nf |= ZF
    if r & 0x80000000:
        nf |= SF
    return r, (f & ~(CF | PF | AF | ZF | SF | OF)) | nf


@inline_kernel
def ea32(s, ram, p):
    """Decode a 32-bit ModRM memory operand at ram[p] (the ModRM byte).

    Returns (offset, default segment, bytes after ModRM) or length -1 if the
    form is not handled here.
    """
    m = rb(ram, p)
    mod = m >> 6
    rm = m & 7
    seg = DS
    n = 1
    if rm == 4:
        sib = rb(ram, p + 1)
        n = 2
        base = sib & 7
        idx = (sib >> 3) & 7
        if base == 5 and mod == 0:
            off = rd4(ram, p + 2)
            n = 6
        else:
            off = s[base]
            if base == ESP or base == EBP:
                seg = SS
        if idx != 4:
            off += s[idx] << (sib >> 6)
    elif rm == 5 and mod == 0:
        off = rd4(ram, p + 1)
        n = 5
    else:
        off = s[rm]
        if rm == EBP:
            seg = SS
    if mod == 1:
        d = rb(ram, p + n)
        off += d - 256 if d & 0x80 else d
        n += 1
    elif mod == 2:
        off += rd4(ram, p + n)
        n += 4
    return off & M32, seg, n


@inline_kernel
def phys_n(s, ram, seg, off, write, n):
    """Physical address of an ``n``-byte access (1, 2 or 4) at seg:off, or -1 to take the
    slow path.

    Only the plain case: usable expand-up data segment (or readable code for
    reads) with the access inside the limit, inside one page, a TLB hit
    granting the access (or paging off), and RAM behind it.
    """
    b = SEG + 4 * seg
    attr = s[b + 3]
    if write:
        if (attr & (A_USABLE | A_CODE | A_E | A_W)) != (A_USABLE | A_W):
            return -1
    elif (attr & A_USABLE) == 0 or (attr & (A_CODE | A_E)) == A_E or (
            (attr & A_CODE) and (attr & A_W) == 0):
        return -1
    if off + n - 1 > s[b + 2]:
        return -1
    lin = (s[b + 1] + off) & M32
    if (lin & 0xFFF) > 4096 - n:
        return -1
    if s[CR0] & CR0_PG:
        k = tlb_lookup(s, lin >> 12)
        if k < 0:
            return -1
        if s[CPL] == 3:
            need = T_UREAD | ((T_UWRITE | T_DIRTY) if write else 0)
        else:
            need = (T_SWRITE | T_DIRTY) if write else 0
        if (s[k + 2] & need) != need:
            return -1
        ph = s[k + 1] | (lin & 0xFFF)
    else:
        ph = lin & ~s[A20_CLEAR]
    if ph + n > ram.shape[0] or write and in_rom(s, ph, n):     # ROM: phys_write drops it
        return -1
    return ph


@inline_kernel
def rb(ram, p):
    """``ram[p]`` for a ``p`` known to be a valid index (unsigned: no negative-index
    wraparound code)."""
    return np.int64(ram[np.uint64(p)])


@inline_kernel
def rd4(ram, p):
    return (rb(ram, p) | (rb(ram, p + 1) << 8) | (rb(ram, p + 2) << 16)
            | (rb(ram, p + 3) << 24))


@inline_kernel
def wr4(ram, p, v):
    ram[np.uint64(p)] = v & 0xFF
    ram[np.uint64(p + 1)] = (v >> 8) & 0xFF
    ram[np.uint64(p + 2)] = (v >> 16) & 0xFF
    ram[np.uint64(p + 3)] = (v >> 24) & 0xFF
