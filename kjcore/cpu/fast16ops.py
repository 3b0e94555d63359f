"""The 16-bit fast path's operands and arithmetic (``fast16.py`` has the loop and the forms).

* ``ea16``: the 16-bit ModRM memory operand ([BX+SI], [BP+DI] in SS, disp8/disp16, ...);
* ``mem_at``: the plain-case access check of ``fastmem.phys_n`` for an operand that does not
  wrap at 64 KiB (a word at offset 0xFFFF goes to the interpreter);
* ``alu_lazy``: ADD/OR/AND/SUB/XOR/CMP on 16 or 32 bits recorded in ``lazyflags``' 32-bit
  record, ADC/SBB exact (``alu_exact``).

A 16-bit operation is recorded with its operands and result widened by ``wide``: the value in
the high half (so carry, overflow, sign and zero come out of bit 31 as they do of bit 15) and
its low byte again in the low half (so the parity and the auxiliary carry, bits 0-7, are the
16-bit operation's).  The low bytes never carry into the high half, and where the high halves
are equal so are the low bytes, so every comparison ``lazyflags`` makes on the record
(unsigned, signed, zero) is the 16-bit one.
"""
import numpy as np

from .fastmem import phys_n, rb
from .jit import inline_kernel
from .lazyflags import L_ADD, L_LOGIC, L_NONE, L_SUB, flags_of
from .operands import PARITY
from .state import AF, ARITH, CF, DS, EBP, EBX, EDI, ESI, M32, OF, SF, SS, ZF


@inline_kernel
def wide(v, w):
    """The lazy record's form of a ``w``-byte value (see the module docstring)."""
    if w == 4:
        return v
    return (v << 16) | (v & 0xFF)


@inline_kernel
def mask_of(w):
    return 0xFFFF if w == 2 else M32


@inline_kernel
def getw(s, r, w):
    return s[r] & mask_of(w)


@inline_kernel
def setw(s, r, v, w):
    if w == 4:
        s[r] = v
    else:
        s[r] = (s[r] & ~0xFFFF) | v


@inline_kernel
def rdw(ram, p, w):
    v = rb(ram, p) | (rb(ram, p + 1) << 8)
    if w == 4:
        v |= (rb(ram, p + 2) << 16) | (rb(ram, p + 3) << 24)
    return v


@inline_kernel
def wrw(ram, p, v, w):
    ram[np.uint64(p)] = v & 0xFF
    ram[np.uint64(p + 1)] = (v >> 8) & 0xFF
    if w == 4:
        ram[np.uint64(p + 2)] = (v >> 16) & 0xFF
        ram[np.uint64(p + 3)] = (v >> 24) & 0xFF


@inline_kernel
def sext8(d):
    return d - 256 if d & 0x80 else d


@inline_kernel
def ea16(s, ram, q, seg):
    """The 16-bit memory operand whose ModRM byte is at ram[q]: (offset, segment, bytes of
    ModRM and displacement).  ``seg``: a segment override, or -1."""
    m = rb(ram, q)
    mod = m >> 6
    rm = m & 7
    dseg = DS
    n = 1
    if rm < 4:
        off = s[EBX if rm < 2 else EBP] + s[ESI if (rm & 1) == 0 else EDI]
        if rm >= 2:
            dseg = SS
    elif rm == 4:
        off = s[ESI]
    elif rm == 5:
        off = s[EDI]
    elif rm == 6:
        if mod == 0:
            off = rb(ram, q + 1) | (rb(ram, q + 2) << 8)
            n = 3
        else:
            off = s[EBP]
            dseg = SS
    else:
        off = s[EBX]
    if mod == 1:
        off += sext8(rb(ram, q + 1))
        n = 2
    elif mod == 2:
        off += rb(ram, q + 1) | (rb(ram, q + 2) << 8)
        n = 3
    return off & 0xFFFF, dseg if seg < 0 else seg, n


@inline_kernel
def mem_at(s, ram, seg, off, write, w):
    """Physical address of a ``w``-byte access at seg:off (16-bit offset), or -1: the
    interpreter's case (``phys_n`` refuses it, or it wraps at 64 KiB)."""
    if off + w > 0x10000:
        return -1
    return phys_n(s, ram, seg, off, write, w)


@inline_kernel
def alu_exact(aop, a, b, f, w):
    """ADC (2) or SBB (3) on ``w`` bytes with incoming EFLAGS f: (result, EFLAGS)."""
    mask = mask_of(w)
    top = 0x8000 if w == 2 else 0x80000000
    c = f & CF
    if aop == 2:
        res = a + b + c
        r = res & mask
        nf = CF if res > mask else 0
        ov = (a ^ r) & (b ^ r) & top
    else:
        res = a - b - c
        r = res & mask
        nf = CF if res < 0 else 0
        ov = (a ^ b) & (a ^ r) & top
    nf |= ((a ^ b ^ r) & AF) | PARITY[r & 0xFF]
    if ov:
        nf |= OF
    if r == 0:
        nf |= ZF
    if r & top:
        nf |= SF
    return r, (f & ~ARITH) | nf


@inline_kernel
def alu_lazy(aop, a, b, w, f, lop, la, lb, lr):
    """ALU operation ``aop`` (the ModRM reg encoding) on ``w``-byte a, b: (result, f, lop,
    la, lb, lr), the flags recorded lazily except for ADC/SBB."""
    mask = mask_of(w)
    if aop == 0:
        r = (a + b) & mask
        return r, f, L_ADD, wide(a, w), wide(b, w), wide(r, w)
    if aop == 5 or aop == 7:
        r = (a - b) & mask
        return r, f, L_SUB, wide(a, w), wide(b, w), wide(r, w)
    if aop == 1:
        r = a | b
    elif aop == 4:
        r = a & b
    elif aop == 6:
        r = a ^ b
    else:
        r, nf = alu_exact(aop, a, b, flags_of(f, lop, la, lb, lr), w)
        return r, nf, L_NONE, la, lb, lr
    return r, f, L_LOGIC, wide(r, w), 0, wide(r, w)
