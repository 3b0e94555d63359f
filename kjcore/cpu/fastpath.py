"""Fast path for the commonest register-only instructions of 32-bit code.

The step loop tries this before the general decoder.  It handles, without
prefixes: INC/DEC r32, NOP, MOV r32,imm32, the eight ALU operations and
TEST/MOV between 32-bit registers (ModRM mod = 3, including 0x81/0x83
immediates), Jcc rel8/rel32, JMP rel8/rel32 and LOOP.  Everything else —
and any instruction whose bytes are not all in the cached code page or that
could cross the CS limit — returns False and goes through the full decoder,
so the fast path can never change architectural results; the Unicorn
oracle runs through both paths.

The helpers are inlined into the step loop at the Numba IR level
(``inline="always"``): a call per instruction costs more than the work.
"""
import numpy as np
from numba import njit

from .operands import PARITY
from .state import (
    A_DB, AF, CF, CS, D_FPAGE, D_FPHYS, ECX, EFLAGS, EIP, M32, OF, PF, SEG, SF, ZF,
)


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


@njit(inline="always", cache=True, _nrt=False)
def cond_fast(f, cc):
    idx = (f & 1) | ((f >> 1) & 2) | ((f >> 4) & 4) | ((f >> 4) & 8) | ((f >> 7) & 16)
    return COND[cc * 32 + idx]


@njit(inline="always", cache=True, _nrt=False)
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


@njit(inline="always", cache=True, _nrt=False)
def fast_exec(s, ram, start):
    """Execute the instruction at ``start`` if it is a fast-path form."""
    cb = SEG + 4 * CS
    lin = (s[cb + 1] + start) & M32
    if (lin >> 12) != s[D_FPAGE] or (lin & 0xFFF) > 4096 - 8:
        return False
    if start + 8 > s[cb + 2] or (s[cb + 3] & A_DB) == 0:
        return False
    p = s[D_FPHYS] + (lin & 0xFFF)
    b0 = np.int64(ram[p])
    f = s[EFLAGS]
    if b0 < 0x40:
        if (b0 & 5) != 1 or (b0 & 7) > 3:
            return False                       # only 01/03 (+8n) forms: Ev,Gv / Gv,Ev
        m = np.int64(ram[p + 1])
        if m < 0xC0:
            return False
        aop = b0 >> 3
        reg = (m >> 3) & 7
        rm = m & 7
        if b0 & 2:
            dst, src = reg, rm
        else:
            dst, src = rm, reg
        r, nf = alu32(aop, s[dst], s[src], f)
        if aop != 7:
            s[dst] = r
        s[EFLAGS] = nf
        s[EIP] = start + 2
        return True
    if b0 < 0x50:                              # INC/DEC r32: CF unchanged
        r = b0 & 7
        a = s[r]
        if b0 < 0x48:
            res = (a + 1) & M32
            of = OF if res == 0x80000000 else 0
        else:
            res = (a - 1) & M32
            of = OF if a == 0x80000000 else 0
        nf = of | ((a ^ 1 ^ res) & AF) | PARITY[res & 0xFF]
        if res == 0:
            nf |= ZF
        if res & 0x80000000:
            nf |= SF
        s[EFLAGS] = (f & ~(PF | AF | ZF | SF | OF)) | nf
        s[r] = res
        s[EIP] = start + 1
        return True
    if b0 >= 0x70 and b0 < 0x80:               # Jcc rel8
        nxt = start + 2
        if cond_fast(f, b0 & 15):
            d = np.int64(ram[p + 1])
            t = (nxt + (d - 256 if d & 0x80 else d)) & M32
            if t > s[cb + 2]:
                return False
            s[EIP] = t
        else:
            s[EIP] = nxt
        return True
    if b0 == 0x0F:
        b1 = np.int64(ram[p + 1])
        if b1 < 0x80 or b1 >= 0x90:
            return False
        nxt = start + 6
        if cond_fast(f, b1 & 15):
            d = (np.int64(ram[p + 2]) | (np.int64(ram[p + 3]) << 8) | (np.int64(ram[p + 4]) << 16)
                 | (np.int64(ram[p + 5]) << 24))
            t = (nxt + d) & M32
            if t > s[cb + 2]:
                return False
            s[EIP] = t
        else:
            s[EIP] = nxt
        return True
    if b0 >= 0xB8 and b0 < 0xC0:               # MOV r32, imm32
        s[b0 & 7] = (np.int64(ram[p + 1]) | (np.int64(ram[p + 2]) << 8) | (np.int64(ram[p + 3]) << 16)
                     | (np.int64(ram[p + 4]) << 24))
        s[EIP] = start + 5
        return True
    if b0 == 0x83 or b0 == 0x81 or b0 == 0x85 or b0 == 0x89 or b0 == 0x8B:
        m = np.int64(ram[p + 1])
        if m < 0xC0:
            return False
        reg = (m >> 3) & 7
        rm = m & 7
        if b0 == 0x89:
            s[rm] = s[reg]
            s[EIP] = start + 2
            return True
        if b0 == 0x8B:
            s[reg] = s[rm]
            s[EIP] = start + 2
            return True
        if b0 == 0x85:
            r, nf = alu32(4, s[rm], s[reg], f)
            s[EFLAGS] = nf
            s[EIP] = start + 2
            return True
        if b0 == 0x83:
            d = np.int64(ram[p + 2])
            imm = (d | 0xFFFFFF00) if d & 0x80 else d
            ln = 3
        else:
            imm = (np.int64(ram[p + 2]) | (np.int64(ram[p + 3]) << 8) | (np.int64(ram[p + 4]) << 16)
                   | (np.int64(ram[p + 5]) << 24))
            ln = 6
        r, nf = alu32(reg, s[rm], imm, f)
        if reg != 7:
            s[rm] = r
        s[EFLAGS] = nf
        s[EIP] = start + ln
        return True
    if b0 == 0x90:
        s[EIP] = start + 1
        return True
    if b0 == 0xEB or b0 == 0xE2:               # JMP rel8 / LOOP rel8
        d = np.int64(ram[p + 1])
        t = (start + 2 + (d - 256 if d & 0x80 else d)) & M32
        if b0 == 0xE2:
            c = (s[ECX] - 1) & M32
            if c == 0:
                s[ECX] = c
                s[EIP] = start + 2
                return True
            if t > s[cb + 2]:
                return False
            s[ECX] = c
        elif t > s[cb + 2]:
            return False
        s[EIP] = t
        return True
    if b0 == 0xE9:
        d = (np.int64(ram[p + 1]) | (np.int64(ram[p + 2]) << 8) | (np.int64(ram[p + 3]) << 16)
             | (np.int64(ram[p + 4]) << 24))
        t = (start + 5 + d) & M32
        if t > s[cb + 2]:
            return False
        s[EIP] = t
        return True
    return False
