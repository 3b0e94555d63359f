"""Fast path for the commonest register-only instructions of 32-bit code.

The step loop tries this before the general decoder.  It handles, without
prefixes: INC/DEC r32, NOP, MOV r32,imm32, the eight ALU operations and
TEST/MOV between 32-bit registers (ModRM mod = 3, including 0x81/0x83
immediates, TEST r32,imm32), Jcc rel8/rel32, JMP rel8/rel32 and LOOP; and with a memory
operand: MOV r/m32, ALU r32,m32, CMP/TEST m32, LEA, PUSH/POP r32,
CALL rel32 and RET, when the access is the plain case (usable expand-up
segment, inside the limit and one page, TLB hit or paging off, RAM).  Everything else —
and any instruction whose bytes are not all in the cached code page or that
could cross the CS limit — returns False and goes through the full decoder,
so the fast path can never change architectural results; the Unicorn
oracle runs through both paths.

The register forms (and their ALU/condition helpers) are inlined into the
step loop by LLVM (``jit.inline_kernel``); the memory forms are an ordinary kernel
call: inlining those too (at the Numba IR level) saved ~1 ns per instruction but cost 15 s of cold
compile.
"""
import numpy as np
from .jit import inline_kernel, kernel

from .operands import PARITY
from .memory import T_DIRTY, T_SWRITE, T_UREAD, T_UWRITE
from .state import (
    A_CODE, A_DB, A_E, A_USABLE, A_W, AF, CF, CPL, CR0, CR0_PG, CS, D_FPAGE, D_FPHYS, DS,
    EBP, ECX, EFLAGS, EIP, ESP, M32, OF, PF, SEG, SF, SS, TLB, TLB_N, ZF,
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

#: First bytes handled by fast_mem (memory ModRM forms, PUSH/POP r32, CALL, RET).
MEMFORM = np.zeros(256, np.bool_)
for _op in (0x03, 0x0B, 0x13, 0x1B, 0x23, 0x2B, 0x33, 0x3B, 0x39, 0x85, 0x89, 0x8B, 0x8D,
            0x83, 0xE8, 0xC3, *range(0x50, 0x60)):
    MEMFORM[_op] = True
del _op


@inline_kernel
def cond_fast(f, cc):
    idx = (f & 1) | ((f >> 1) & 2) | ((f >> 4) & 4) | ((f >> 4) & 8) | ((f >> 7) & 16)
    return COND[cc * 32 + idx]


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


@kernel("iii", "sri")
def ea32(s, ram, p):
    """Decode a 32-bit ModRM memory operand at ram[p] (the ModRM byte).

    Returns (offset, default segment, bytes after ModRM) or length -1 if the
    form is not handled here.
    """
    m = np.int64(ram[p])
    mod = m >> 6
    rm = m & 7
    seg = DS
    n = 1
    if rm == 4:
        sib = np.int64(ram[p + 1])
        n = 2
        base = sib & 7
        idx = (sib >> 3) & 7
        if base == 5 and mod == 0:
            off = (np.int64(ram[p + 2]) | (np.int64(ram[p + 3]) << 8)
                   | (np.int64(ram[p + 4]) << 16) | (np.int64(ram[p + 5]) << 24))
            n = 6
        else:
            off = s[base]
            if base == ESP or base == EBP:
                seg = SS
        if idx != 4:
            off += s[idx] << (sib >> 6)
    elif rm == 5 and mod == 0:
        off = (np.int64(ram[p + 1]) | (np.int64(ram[p + 2]) << 8)
               | (np.int64(ram[p + 3]) << 16) | (np.int64(ram[p + 4]) << 24))
        n = 5
    else:
        off = s[rm]
        if rm == EBP:
            seg = SS
    if mod == 1:
        d = np.int64(ram[p + n])
        off += d - 256 if d & 0x80 else d
        n += 1
    elif mod == 2:
        off += (np.int64(ram[p + n]) | (np.int64(ram[p + n + 1]) << 8)
                | (np.int64(ram[p + n + 2]) << 16) | (np.int64(ram[p + n + 3]) << 24))
        n += 4
    return off & M32, seg, n


@kernel("i", "sriib")
def phys4(s, ram, seg, off, write):
    """Physical address of a 4-byte access at seg:off, or -1 to take the slow path.

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
    if off + 3 > s[b + 2]:
        return -1
    lin = (s[b + 1] + off) & M32
    if (lin & 0xFFF) > 4092:
        return -1
    if s[CR0] & CR0_PG:
        k = TLB + 3 * ((lin >> 12) & (TLB_N - 1))
        if s[k] != (lin >> 12):
            return -1
        if s[CPL] == 3:
            need = T_UREAD | ((T_UWRITE | T_DIRTY) if write else 0)
        else:
            need = (T_SWRITE | T_DIRTY) if write else 0
        if (s[k + 2] & need) != need:
            return -1
        ph = s[k + 1] | (lin & 0xFFF)
    else:
        ph = lin
    if ph + 4 > ram.shape[0]:
        return -1
    return ph


@kernel("i", "ri")
def rd4(ram, p):
    return (np.int64(ram[p]) | (np.int64(ram[p + 1]) << 8) | (np.int64(ram[p + 2]) << 16)
            | (np.int64(ram[p + 3]) << 24))


@kernel("v", "rii")
def wr4(ram, p, v):
    ram[p] = v & 0xFF
    ram[p + 1] = (v >> 8) & 0xFF
    ram[p + 2] = (v >> 16) & 0xFF
    ram[p + 3] = (v >> 24) & 0xFF


@kernel("b", "sriii")
def fast_mem(s, ram, start, p, b0):
    """Memory-operand and stack forms: MOV r/m32, ALU r32,m32, CMP/TEST m32,r32,
    CMP m32,imm8, LEA, PUSH/POP r32, CALL rel32, RET (32-bit stack)."""
    f = s[EFLAGS]
    if b0 >= 0x50 and b0 < 0x60:
        sb = SEG + 4 * SS
        if (s[sb + 3] & A_DB) == 0:
            return False
        if b0 < 0x58:
            sp = (s[ESP] - 4) & M32
            ph = phys4(s, ram, SS, sp, True)
            if ph < 0:
                return False
            wr4(ram, ph, s[b0 & 7])
            s[ESP] = sp
        else:
            ph = phys4(s, ram, SS, s[ESP], False)
            if ph < 0:
                return False
            v = rd4(ram, ph)
            s[ESP] = (s[ESP] + 4) & M32
            s[b0 & 7] = v
        s[EIP] = start + 1
        return True
    if b0 == 0xE8 or b0 == 0xC3:
        sb = SEG + 4 * SS
        if (s[sb + 3] & A_DB) == 0:
            return False
        if b0 == 0xE8:
            t = (start + 5 + rd4(ram, p + 1)) & M32
            if t > s[SEG + 4 * CS + 2]:
                return False
            sp = (s[ESP] - 4) & M32
            ph = phys4(s, ram, SS, sp, True)
            if ph < 0:
                return False
            wr4(ram, ph, start + 5)
            s[ESP] = sp
        else:
            ph = phys4(s, ram, SS, s[ESP], False)
            if ph < 0:
                return False
            t = rd4(ram, ph)
            if t > s[SEG + 4 * CS + 2]:
                return False
            s[ESP] = (s[ESP] + 4) & M32
        s[EIP] = t
        return True
    m = np.int64(ram[p + 1])
    if m >= 0xC0:
        return False
    off, seg, n = ea32(s, ram, p + 1)
    reg = (m >> 3) & 7
    if b0 == 0x8D:
        s[reg] = off
        s[EIP] = start + 1 + n
        return True
    if b0 == 0x89:
        ph = phys4(s, ram, seg, off, True)
        if ph < 0:
            return False
        wr4(ram, ph, s[reg])
        s[EIP] = start + 1 + n
        return True
    ph = phys4(s, ram, seg, off, False)
    if ph < 0:
        return False
    v = rd4(ram, ph)
    if b0 == 0x8B:
        s[reg] = v
    elif b0 == 0x83:
        if reg != 7:
            return False
        d = np.int64(ram[p + 1 + n])
        _, nf = alu32(7, v, (d | 0xFFFFFF00) if d & 0x80 else d, f)
        s[EFLAGS] = nf
        n += 1
    elif b0 == 0x85:
        _, nf = alu32(4, v, s[reg], f)
        s[EFLAGS] = nf
    elif b0 == 0x39:
        _, nf = alu32(7, v, s[reg], f)
        s[EFLAGS] = nf
    else:                                      # 03 0B 13 1B 23 2B 33 3B: r32 op= m32
        r, nf = alu32(b0 >> 3, s[reg], v, f)
        if b0 != 0x3B:
            s[reg] = r
        s[EFLAGS] = nf
    s[EIP] = start + 1 + n
    return True


@inline_kernel
def fast_exec(s, ram, start, cbase, climit, fpage, fphys):
    """Execute the instruction at ``start`` if it is a fast-path form.

    ``cbase``/``climit``: CS base and limit, ``fpage``/``fphys``: the cached
    code page (linear page number, physical base), held in registers by the
    step loop (-1 page when CS is not 32-bit code: no fast path).
    """
    cb = SEG + 4 * CS
    lin = (cbase + start) & M32
    if (lin >> 12) != fpage or (lin & 0xFFF) > 4096 - 8 or start + 8 > climit:
        return False
    p = fphys + (lin & 0xFFF)
    b0 = np.int64(ram[p])
    f = s[EFLAGS]
    if MEMFORM[b0]:
        if b0 >= 0x50 and b0 < 0x60 or b0 == 0xE8 or b0 == 0xC3 or np.int64(ram[p + 1]) < 0xC0:
            return fast_mem(s, ram, start, p, b0)
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
    if b0 == 0x83 or b0 == 0x81 or b0 == 0x85 or b0 == 0x89 or b0 == 0x8B or b0 == 0xF7:
        m = np.int64(ram[p + 1])
        if m < 0xC0:
            return False
        reg = (m >> 3) & 7
        rm = m & 7
        if b0 == 0xF7:                         # TEST r32, imm32 (F7 /0 and its alias /1)
            if reg > 1:
                return False
            imm = (np.int64(ram[p + 2]) | (np.int64(ram[p + 3]) << 8) | (np.int64(ram[p + 4]) << 16)
                   | (np.int64(ram[p + 5]) << 24))
            r, nf = alu32(4, s[rm], imm, f)
            s[EFLAGS] = nf
            s[EIP] = start + 6
            return True
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
