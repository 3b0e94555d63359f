"""The fast path's second switch: the forms gcc -O2 emits beside the first switch's.

``fastpath.fast_exec_u`` hands the classes from ``isa.K_ALUI`` on (and the 0F xx forms of
``isa.FAST_0F``, NOT/NEG of F7) to :func:`fast_forms`, inlined into the step loop like the
first switch (measured: 30-50 % more MIPS on the CRC-32 programs than an out-of-line kernel,
for about 1 s more cold compile):

* ALU eAX, imm32 (05 0D 15 1D 25 2D 35 3D) and TEST eAX, imm32 (A9);
* shifts and rotates of a register by 1, imm8 or CL (D1, C1, D3: every reg field; all but
  RCL/RCR computed inline);
* IMUL r32, r/m32, imm (69, 6B) and IMUL r32, r/m32 (0F AF) with register operands;
* NOT and NEG of a register (F7 /2, /3);
* MOVZX/MOVSX r32 from a byte or word register or memory operand (0F B6 B7 BE BF);
* byte ALU and TEST on registers (00 02 08 0A 20 22 28 2A 30 32 38 3A 84), byte MOV
  register to register, to memory and from memory (88, 8A).

Same contract as the first switch: an unhandled instruction changes nothing, memory goes
through ``fastmem.phys_n`` (the plain case only), EFLAGS is lazy where the operation is one
of the lazy kinds (ADD/SUB/logic on 32 bits, NEG as a subtraction from 0, IMUL without
overflow as a logic result) and exact otherwise, computed by the interpreter's own helpers
where there is one (``shift.shift_op``) so the two paths cannot disagree.
"""
import numpy as np

from .fastmem import alu32, ea32, phys_n, rb, rd4
from .isa import FAST_0F, FAST_CLASS, FAST_LENGTH, K_ALUI, K_F7, K_IMUL, K_SHIFT, fast_length
from .jit import inline_kernel
from .lazyflags import L_ADD, L_LOGIC, L_NONE, L_SUB, flags_of
from .operands import PARITY
from .shift import shift_op
from .state import AF, ARITH, CF, EAX, ECX, EFLAGS, M32, OF, SF, ZF

# Register-form lengths from the opcode table (module constants: compiled in).
N_ALUI, N_BYTE, N_C1, N_D1, N_69, N_6B = (FAST_LENGTH[b] for b in (0x05, 0x88, 0xC1, 0xD1, 0x69,
                                                                   0x6B))
N_NEG = fast_length(0xF7, 3)
N_0FX = fast_length(0x1B6)


@inline_kernel
def getb(s, r):
    """Byte register ``r`` (AL CL DL BL AH CH DH BH)."""
    return (s[r & 3] >> ((r >> 2) << 3)) & 0xFF


@inline_kernel
def setb(s, r, v):
    sh = (r >> 2) << 3
    s[r & 3] = (s[r & 3] & ~(0xFF << sh)) | (v << sh)


@inline_kernel
def alu8(aop, a, b, f):
    """Byte ADD, OR, AND, SUB, XOR, CMP (``aop``: the ModRM reg encoding): (result, EFLAGS)."""
    nf = 0
    if aop == 0:
        res = a + b
        r = res & 0xFF
        if res > 0xFF:
            nf = CF
        nf |= (a ^ b ^ r) & AF
        if (a ^ r) & (b ^ r) & 0x80:
            nf |= OF
    elif aop == 5 or aop == 7:
        res = a - b
        r = res & 0xFF
        if res < 0:
            nf = CF
        nf |= (a ^ b ^ r) & AF
        if (a ^ b) & (a ^ r) & 0x80:
            nf |= OF
    elif aop == 1:
        r = a | b
    elif aop == 4:
        r = a & b
    else:
        r = a ^ b
    nf |= PARITY[r]
    if r == 0:
        nf |= ZF
    if r & 0x80:
        nf |= SF
    return r, (f & ~ARITH) | nf


@inline_kernel
def sext32(v):
    return v - ((v & 0x80000000) << 1)


@inline_kernel
def packed(ok, nxt, f, lop, la, lb, lr):
    return ok, nxt, f | (lop << 32), la, lb, lr


@inline_kernel
def fast_forms(s, ram, start, p, b0, m, fl, la, lb, lr):
    """Execute the instruction at offset ``start`` (physical ``p``, first byte ``b0``,
    second ``m``) if it is one of this module's forms.

    ``fl``: EFLAGS | lazy kind << 32, with the lazy record ``la``, ``lb``, ``lr`` (see
    ``fastpath.fast_exec``).  Returns (handled, next EIP, fl, la, lb, lr); unhandled: nothing
    changed.  Writes ``s[EFLAGS]`` only as scratch for ``shift_op`` (the step loop writes
    the final EFLAGS itself).
    """
    f = fl & M32
    lop = fl >> 32
    k = FAST_CLASS[b0]
    if k == K_ALUI:
        imm = rd4(ram, p + 1)
        nxt = start + N_ALUI
        a = s[EAX]
        if b0 == 0xA9:
            r = a & imm
            return packed(True, nxt, f, L_LOGIC, r, 0, r)
        aop = b0 >> 3
        if aop == 0:
            r = (a + imm) & M32
            s[EAX] = r
            return packed(True, nxt, f, L_ADD, a, imm, r)
        if aop == 5 or aop == 7:
            r = (a - imm) & M32
            if aop == 5:
                s[EAX] = r
            return packed(True, nxt, f, L_SUB, a, imm, r)
        if aop == 1 or aop == 4 or aop == 6:
            r = (a | imm) if aop == 1 else ((a & imm) if aop == 4 else (a ^ imm))
            s[EAX] = r
            return packed(True, nxt, f, L_LOGIC, r, 0, r)
        r, nf = alu32(aop, a, imm, flags_of(f, lop, la, lb, lr))      # ADC / SBB
        s[EAX] = r
        return packed(True, nxt, nf, L_NONE, la, lb, lr)
    if m < 0xC0 and k != K_SHIFT and k != K_F7 and k != K_IMUL and b0 != 0x0F:
        return _byte_memory(s, ram, start, p, b0, m, fl, la, lb, lr)
    if k == K_SHIFT:
        if m < 0xC0:
            return False, start, fl, la, lb, lr
        if b0 == 0xC1:
            count = rb(ram, p + 2) & 31
            nxt = start + N_C1
        else:
            count = 1 if b0 == 0xD1 else s[ECX] & 31
            nxt = start + N_D1
        if count == 0:                         # no change at all, not even to flags
            return True, nxt, fl, la, lb, lr
        rm = m & 7
        op = (m >> 3) & 7
        if op == 2 or op == 3:                 # RCL / RCR: the interpreter's helper
            s[EFLAGS] = flags_of(f, lop, la, lb, lr)
            s[rm] = shift_op(s, op, s[rm], count, 4)
            return packed(True, nxt, s[EFLAGS], L_NONE, la, lb, lr)
        if op <= 1:                            # ROL / ROR keep SF ZF AF PF
            f = flags_of(f, lop, la, lb, lr)
        r, nf = _shift32(op, s[rm], count, f)
        s[rm] = r
        return packed(True, nxt, nf, L_NONE, la, lb, lr)
    if k == K_F7:                              # NOT / NEG r32 (TEST is fastpath's)
        if m < 0xC0 or ((m >> 3) & 6) != 2:
            return False, start, fl, la, lb, lr
        rm = m & 7
        a = s[rm]
        if (m >> 3) & 7 == 2:
            s[rm] = a ^ M32
            return True, start + N_NEG, fl, la, lb, lr
        r = (0 - a) & M32
        s[rm] = r
        return packed(True, start + N_NEG, f, L_SUB, 0, a, r)
    if k == K_IMUL:
        if m < 0xC0:
            return False, start, fl, la, lb, lr
        if b0 == 0x69:
            b = rd4(ram, p + 2)
            nxt = start + N_69
        else:
            b = rb(ram, p + 2)
            b = (b | 0xFFFFFF00) if b & 0x80 else b
            nxt = start + N_6B
        return _imul(s, (m >> 3) & 7, s[m & 7], b, nxt, f, lop, la, lb, lr)
    if b0 == 0x0F:
        return _two_byte(s, ram, start, p, m, fl, la, lb, lr)
    return _byte_registers(s, start, b0, m, f, lop, la, lb, lr)


@inline_kernel
def _shift32(op, a, c, f):
    """ROL, ROR, SHL/SAL, SHR, SAR (``op``: the ModRM reg field, not 2 or 3) of the 32-bit
    ``a`` by ``c`` in 1..31 with EFLAGS ``f`` (exact for ROL/ROR): (result, EFLAGS).

    Inline for the step loop (rotates are a sixth of SHA-256); the flag rules are
    ``shift.shift_op``'s, which the Unicorn oracle holds both paths to.
    """
    if op == 0:
        r = ((a << c) | (a >> (32 - c))) & M32
        cf = r & 1
        return r, (f & ~(CF | OF)) | cf | (OF if (r >> 31) != cf else 0)
    if op == 1:
        r = ((a >> c) | (a << (32 - c))) & M32
        cf = r >> 31
        return r, (f & ~(CF | OF)) | cf | (OF if ((r >> 30) & 1) != cf else 0)
    if op == 5:
        r = a >> c
        src = a >> (c - 1)
        cf = src & 1
        of = OF if (src ^ r) & 0x80000000 else 0
    elif op == 7:
        sa = sext32(a)
        r = (sa >> c) & M32
        cf = (sa >> (c - 1)) & 1
        of = 0
    else:
        r = (a << c) & M32
        cf = (a >> (32 - c)) & 1
        of = OF if (r >> 31) != cf else 0
    nf = PARITY[r & 0xFF] | cf | of
    if r == 0:
        nf |= ZF
    if r & 0x80000000:
        nf |= SF
    return r, (f & ~ARITH) | nf


@inline_kernel
def _imul(s, reg, a, b, nxt, f, lop, la, lb, lr):
    """IMUL r32 = a * b: CF = OF = the product does not fit, SF ZF PF of the low half,
    AF cleared (``muldiv``'s rule)."""
    prod = sext32(a) * sext32(b)
    lo = prod & M32
    s[reg] = lo
    if prod == sext32(lo):
        return packed(True, nxt, f, L_LOGIC, lo, 0, lo)
    nf = flags_of(f, L_LOGIC, lo, 0, lo) | CF | OF
    return packed(True, nxt, nf, L_NONE, la, lb, lr)


@inline_kernel
def _two_byte(s, ram, start, p, op, fl, la, lb, lr):
    """0F AF (IMUL r32, r32), 0F B6 B7 BE BF (MOVZX/MOVSX from a register or memory)."""
    if not FAST_0F[op]:
        return False, start, fl, la, lb, lr
    m = rb(ram, p + 2)
    reg = (m >> 3) & 7
    if op == 0xAF:
        if m < 0xC0:
            return False, start, fl, la, lb, lr
        return _imul(s, reg, s[reg], s[m & 7], start + N_0FX, fl & M32, fl >> 32, la, lb, lr)
    word = op & 1
    nxt = start + N_0FX
    if m >= 0xC0:
        v = (s[m & 7] & 0xFFFF) if word else getb(s, m & 7)
    else:
        off, seg, n = ea32(s, ram, p + 2)
        nxt += n - 1
        ph = phys_n(s, ram, seg, off, False, 2 if word else 1)
        if ph < 0:
            return False, start, fl, la, lb, lr
        v = rb(ram, ph)
        if word:
            v |= rb(ram, ph + 1) << 8
    if op >= 0xBE:                             # MOVSX
        if word:
            v = (v | 0xFFFF0000) if v & 0x8000 else v
        else:
            v = (v | 0xFFFFFF00) if v & 0x80 else v
    s[reg] = v
    return True, nxt, fl, la, lb, lr


@inline_kernel
def _byte_memory(s, ram, start, p, b0, m, fl, la, lb, lr):
    """MOV r/m8 with a memory operand (88 store, 8A load)."""
    if b0 != 0x88 and b0 != 0x8A:
        return False, start, fl, la, lb, lr
    off, seg, n = ea32(s, ram, p + 1)
    reg = (m >> 3) & 7
    ph = phys_n(s, ram, seg, off, b0 == 0x88, 1)
    if ph < 0:
        return False, start, fl, la, lb, lr
    if b0 == 0x88:
        ram[np.uint64(ph)] = getb(s, reg)
    else:
        setb(s, reg, rb(ram, ph))
    return True, start + N_BYTE + n - 1, fl, la, lb, lr


@inline_kernel
def _byte_registers(s, start, b0, m, f, lop, la, lb, lr):
    """Byte MOV, TEST and ADD/OR/AND/SUB/XOR/CMP with register operands."""
    reg = (m >> 3) & 7
    rm = m & 7
    nxt = start + N_BYTE
    if b0 == 0x88:
        setb(s, rm, getb(s, reg))
        return packed(True, nxt, f, lop, la, lb, lr)
    if b0 == 0x8A:
        setb(s, reg, getb(s, rm))
        return packed(True, nxt, f, lop, la, lb, lr)
    f = flags_of(f, lop, la, lb, lr)
    if b0 == 0x84:
        r, nf = alu8(4, getb(s, rm), getb(s, reg), f)
        return packed(True, nxt, nf, L_NONE, la, lb, lr)
    dst, src = (reg, rm) if b0 & 2 else (rm, reg)
    aop = b0 >> 3
    r, nf = alu8(aop, getb(s, dst), getb(s, src), f)
    if aop != 7:
        setb(s, dst, r)
    return packed(True, nxt, nf, L_NONE, la, lb, lr)
