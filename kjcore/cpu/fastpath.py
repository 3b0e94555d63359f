"""Fast path for the commonest instructions of 32-bit code.

The step loop tries this before the general decoder, in an inner loop that
keeps EIP and EFLAGS in registers.  Which forms it runs is the opcode
table's ``fast`` column (``isa.FAST_CLASS``, ``isa.FAST_LENGTH``; the memory
forms: ``fast_mem``, ``isa.MEMFORM``), without prefixes: ALU, TEST, MOV,
INC/DEC on registers and immediates, Jcc, JMP, LOOP, NOP; MOV, ALU, CMP/TEST,
LEA with a memory operand, PUSH/POP r32, CALL rel32, RET, when the access is
the plain case (usable expand-up segment, inside the limit and one page, TLB
hit or paging off, RAM).  This module has their semantics; the 32-bit
memory operand (``ea32``) and the checks are ``fastmem.py``'s.  Everything else — and any
instruction whose bytes are not all in the cached code page or that could
cross the CS limit — is left unhandled (nothing changed) and goes through
the full decoder, so the fast path can never change architectural results;
the forms gcc emits beside these (eAX-immediate ALU, shifts, IMUL, NOT/NEG,
MOVZX/MOVSX, byte operations) are ``fastforms.py``'s, reached from here;
the Unicorn oracle runs every form of the fast column on both paths, and
tests/cpu/test_fastpath_lazy.py compares the two on random programs.

Arithmetic flags are lazy (``lazyflags.py``): the register forms record the
operation (L_*), its operands and result, and ``flags_of`` computes EFLAGS
when the step loop leaves the fast path; Jcc evaluates the common conditions
from the record.

The register forms (and their ALU/condition helpers) and ``fastforms.fast_forms``
are inlined into the step loop by LLVM (``jit.inline_kernel``); the memory forms
of this module (``fast_mem``) too, from one call site before the switch (``MEMK``), so the
plain-case load or store has no call in it.
"""
import numpy as np

from .fastforms import fast_forms
from .fastmem import alu32, ea32, phys_n, rb, rd4, wr4
from .isa import (
    FAST_CLASS,
    FAST_LENGTH,
    K_0F,
    K_ALU,
    K_ALUI,
    K_CALLRET,
    K_DEC,
    K_F7,
    K_GRP1,
    K_INC,
    K_JCC,
    K_JMP8,
    K_JMP32,
    K_LEA,
    K_LOOP,
    K_MOVI,
    K_MOVLD,
    K_MOVST,
    K_NOP,
    K_STACK,
    K_TEST,
    MEMFORM,
)
from .jit import inline_kernel
from .lazyflags import L_ADD, L_DEC, L_INC, L_LOGIC, L_NONE, L_SUB, carry_now, cond_lazy, flags_of
from .state import A_DB, CF, CS, ECX, ESP, M32, SEG, SS

# Lengths of the register forms, from the opcode table.  Module-level ints:
# Numba compiles them as constants, so the next EIP never waits for a load
# (a length read from a table per instruction cost the ALU loop 25%).
(N_ALU, N_INC, N_JCC, N_0F, N_MOVI, N_81, N_83, N_TEST, N_MOVST, N_MOVLD, N_MODRM, N_F7,
 N_NOP, N_JMP8, N_LOOP, N_JMP32, N_CALL, N_PUSH) = (
    FAST_LENGTH[b] for b in (0x01, 0x40, 0x70, 0x0F, 0xB8, 0x81, 0x83, 0x85, 0x89, 0x8B, 0x8D,
                             0xF7, 0x90, 0xEB, 0xE2, 0xE9, 0xE8, 0x50))

# First bytes whose forms ``fast_mem`` runs: M_OPERAND with a memory operand (ModRM below
# C0), M_ALWAYS for the stack forms.  One test before the switch gives ``fast_mem`` a single
# call site, so it is inlined once (not at every class that has a memory form).
M_OPERAND, M_ALWAYS = 1, 2
MEMK = np.zeros(256, np.int64)
for _b in range(256):
    if FAST_CLASS[_b] in (K_STACK, K_CALLRET):
        MEMK[_b] = M_ALWAYS
    elif FAST_CLASS[_b] == K_LEA or (
            MEMFORM[_b] and FAST_CLASS[_b] in (K_ALU, K_GRP1, K_MOVST, K_MOVLD, K_TEST)):
        MEMK[_b] = M_OPERAND
del _b


@inline_kernel
def fast_mem(s, ram, start, p, b0, f):
    """Memory-operand and stack forms: MOV r/m32, ALU r32,m32, CMP/TEST m32,r32,
    CMP m32,imm8, LEA, PUSH/POP r32, CALL rel32, RET (32-bit stack).

    ``f``: EFLAGS on entry (its arithmetic flags may be stale, see ``fast_exec``,
    except CF for the ADC/SBB forms).  Returns (handled, next EIP, new EFLAGS,
    1 if the instruction wrote the arithmetic flags else 0); the caller keeps
    EIP and EFLAGS in registers and writes them back itself.
    """
    if b0 >= 0x50 and b0 < 0x60:
        sb = SEG + 4 * SS
        if (s[sb + 3] & A_DB) == 0:
            return False, start, f, 0
        if b0 < 0x58:
            sp = (s[ESP] - 4) & M32
            ph = phys_n(s, ram, SS, sp, True, 4)
            if ph < 0:
                return False, start, f, 0
            wr4(ram, ph, s[b0 & 7])
            s[ESP] = sp
        else:
            ph = phys_n(s, ram, SS, s[ESP], False, 4)
            if ph < 0:
                return False, start, f, 0
            v = rd4(ram, ph)
            s[ESP] = (s[ESP] + 4) & M32
            s[b0 & 7] = v
        return True, start + N_PUSH, f, 0
    if b0 == 0xE8 or b0 == 0xC3:
        sb = SEG + 4 * SS
        if (s[sb + 3] & A_DB) == 0:
            return False, start, f, 0
        if b0 == 0xE8:
            t = (start + N_CALL + rd4(ram, p + 1)) & M32
            if t > s[SEG + 4 * CS + 2]:
                return False, start, f, 0
            sp = (s[ESP] - 4) & M32
            ph = phys_n(s, ram, SS, sp, True, 4)
            if ph < 0:
                return False, start, f, 0
            wr4(ram, ph, start + N_CALL)
            s[ESP] = sp
        else:
            ph = phys_n(s, ram, SS, s[ESP], False, 4)
            if ph < 0:
                return False, start, f, 0
            t = rd4(ram, ph)
            if t > s[SEG + 4 * CS + 2]:
                return False, start, f, 0
            s[ESP] = (s[ESP] + 4) & M32
        return True, t, f, 0
    m = rb(ram, p + 1)
    if m >= 0xC0:
        return False, start, f, 0
    off, seg, n = ea32(s, ram, p + 1)
    # n bytes of ModRM, SIB and displacement instead of the register form's ModRM.
    end = start + n - 1 + (N_83 if b0 == 0x83 else N_MODRM)
    reg = (m >> 3) & 7
    if b0 == 0x8D:
        s[reg] = off
        return True, end, f, 0
    if b0 == 0x89:
        ph = phys_n(s, ram, seg, off, True, 4)
        if ph < 0:
            return False, start, f, 0
        wr4(ram, ph, s[reg])
        return True, end, f, 0
    ph = phys_n(s, ram, seg, off, False, 4)
    if ph < 0:
        return False, start, f, 0
    v = rd4(ram, ph)
    if b0 == 0x8B:
        s[reg] = v
        return True, end, f, 0
    if b0 == 0x83:
        if reg != 7:
            return False, start, f, 0
        d = rb(ram, p + 1 + n)
        _, nf = alu32(7, v, (d | 0xFFFFFF00) if d & 0x80 else d, f)
        f = nf
    elif b0 == 0x85:
        _, nf = alu32(4, v, s[reg], f)
        f = nf
    elif b0 == 0x39:
        _, nf = alu32(7, v, s[reg], f)
        f = nf
    else:                                      # 03 0B 13 1B 23 2B 33 3B: r32 op= m32
        r, nf = alu32(b0 >> 3, s[reg], v, f)
        if b0 != 0x3B:
            s[reg] = r
        f = nf
    return True, end, f, 1


@inline_kernel
def mem_form(s, ram, start, p, b0, f, lop, la, lb, lr):
    """A memory-operand form through ``fast_mem`` (exact CF first for ADC/SBB)."""
    if (b0 == 0x13 or b0 == 0x1B) and lop != L_NONE:
        f = flags_of(f, lop, la, lb, lr)
        lop = L_NONE
    ok, nxt, nf, wrote = fast_mem(s, ram, start, p, b0, f)
    if wrote:
        return ok, nxt, nf, L_NONE, la, lb, lr
    return ok, nxt, nf, lop, la, lb, lr


@inline_kernel
def alu_op(s, aop, dst, a, b, nxt, f, lop, la, lb, lr):
    """ALU operation ``aop`` on a (register ``dst``) and b, flags recorded lazily."""
    if aop == 0:
        r = (a + b) & M32
        s[dst] = r
        return True, nxt, f, L_ADD, a, b, r
    if aop == 5:
        r = (a - b) & M32
        s[dst] = r
        return True, nxt, f, L_SUB, a, b, r
    if aop == 7:
        return True, nxt, f, L_SUB, a, b, (a - b) & M32
    if aop == 1:
        r = a | b
    elif aop == 4:
        r = a & b
    elif aop == 6:
        r = a ^ b
    else:                                      # ADC / SBB: need the incoming CF
        r, nf = alu32(aop, a, b, flags_of(f, lop, la, lb, lr))
        s[dst] = r
        return True, nxt, nf, L_NONE, la, lb, lr
    s[dst] = r
    return True, nxt, f, L_LOGIC, r, 0, r


@inline_kernel
def more_forms(s, ram, start, p, b0, m, f, lop, la, lb, lr):
    """The forms of ``fastforms.fast_forms`` (which takes EFLAGS and the lazy kind packed)."""
    ok, nxt, fl, la, lb, lr = fast_forms(s, ram, start, p, b0, m, f | (lop << 32), la, lb, lr)
    return ok, nxt, fl & M32, fl >> 32, la, lb, lr


@inline_kernel
def fast_exec(s, ram, start, fl, la, lb, lr, p, climit):
    """``fast_exec_u`` with EFLAGS and the lazy-flags kind packed in one value
    (``fl = f | lop << 32``): one register less in the step loop."""
    ok, nxt, f, lop, la, lb, lr = fast_exec_u(s, ram, start, fl & M32, fl >> 32, la, lb, lr,
                                              p, climit)
    return ok, nxt, f | (lop << 32), la, lb, lr


@inline_kernel
def fast_exec_u(s, ram, start, f, lop, la, lb, lr, p, climit):
    """Execute the instruction at offset ``start`` in CS if it is a fast-path form.

    ``p``: physical address of its first byte (the step loop has checked that
    8 bytes from there are in the cached code page and inside the CS limit
    ``climit``).  EIP and EFLAGS live in the step loop's registers, EFLAGS
    lazily: ``f`` holds the exact non-arithmetic flags, and the arithmetic
    ones are ``flags_of(f, lop, la, lb, lr)``.  Returns (handled, next EIP,
    f, lop, la, lb, lr) and writes neither ``s[EIP]`` nor ``s[EFLAGS]``;
    an unhandled instruction changes nothing.  One switch on the class of
    the first byte (``isa.FAST_CLASS``).
    """
    b0 = rb(ram, p)
    m = rb(ram, p + 1)                         # ModRM or first immediate byte
    mk = MEMK[b0]
    if mk == M_ALWAYS or (mk == M_OPERAND and m < 0xC0):
        return mem_form(s, ram, start, p, b0, f, lop, la, lb, lr)
    k = FAST_CLASS[b0]
    if k == K_ALU:                             # 01 03 09 0B ... 39 3B
        nxt = start + N_ALU
        if m < 0xC0:                           # memory forms fast_mem does not run
            return False, start, f, lop, la, lb, lr
        reg = (m >> 3) & 7
        rm = m & 7
        if b0 & 2:
            return alu_op(s, b0 >> 3, reg, s[reg], s[rm], nxt, f, lop, la, lb, lr)
        return alu_op(s, b0 >> 3, rm, s[rm], s[reg], nxt, f, lop, la, lb, lr)
    if k == K_INC:                             # CF unchanged: keep it in f
        nxt = start + N_INC
        f = (f & ~CF) | carry_now(f, lop, la, lb, lr)
        r = b0 & 7
        a = s[r]
        res = (a + 1) & M32
        s[r] = res
        return True, nxt, f, L_INC, a, 1, res
    if k == K_DEC:
        nxt = start + N_INC
        f = (f & ~CF) | carry_now(f, lop, la, lb, lr)
        r = b0 & 7
        a = s[r]
        res = (a - 1) & M32
        s[r] = res
        return True, nxt, f, L_DEC, a, 1, res
    if k == K_JCC:
        nxt = start + N_JCC
        c, f, lop = cond_lazy(f, lop, la, lb, lr, b0 & 15)
        if c:
            t = (nxt + (m - 256 if m & 0x80 else m)) & M32
            if t > climit:
                return False, start, f, lop, la, lb, lr
            return True, t, f, lop, la, lb, lr
        return True, nxt, f, lop, la, lb, lr
    if k == K_GRP1:                            # 81 / 83: ALU r/m32, imm
        if m < 0xC0:                           # memory forms fast_mem does not run
            return False, start, f, lop, la, lb, lr
        rm = m & 7
        if b0 == 0x83:
            d = rb(ram, p + 2)
            return alu_op(s, (m >> 3) & 7, rm, s[rm], (d | 0xFFFFFF00) if d & 0x80 else d,
                          start + N_83, f, lop, la, lb, lr)
        return alu_op(s, (m >> 3) & 7, rm, s[rm], rd4(ram, p + 2), start + N_81, f, lop, la, lb,
                      lr)
    if k == K_MOVI:
        s[b0 & 7] = rd4(ram, p + 1)
        return True, start + N_MOVI, f, lop, la, lb, lr
    if k == K_MOVST:
        if m < 0xC0:                           # memory forms fast_mem does not run
            return False, start, f, lop, la, lb, lr
        s[m & 7] = s[(m >> 3) & 7]
        return True, start + N_MOVST, f, lop, la, lb, lr
    if k == K_MOVLD:
        if m < 0xC0:                           # memory forms fast_mem does not run
            return False, start, f, lop, la, lb, lr
        s[(m >> 3) & 7] = s[m & 7]
        return True, start + N_MOVLD, f, lop, la, lb, lr
    if k == K_TEST:
        if m < 0xC0:                           # memory forms fast_mem does not run
            return False, start, f, lop, la, lb, lr
        r = s[m & 7] & s[(m >> 3) & 7]
        return True, start + N_TEST, f, L_LOGIC, r, 0, r
    if k == K_F7:                              # TEST r32, imm32 (F7 /0 and its alias /1)
        if m < 0xC0 or ((m >> 3) & 7) > 1:
            return more_forms(s, ram, start, p, b0, m, f, lop, la, lb, lr)
        r = s[m & 7] & rd4(ram, p + 2)
        return True, start + N_F7, f, L_LOGIC, r, 0, r
    if k == K_0F:
        if m < 0x80 or m >= 0x90:
            return more_forms(s, ram, start, p, b0, m, f, lop, la, lb, lr)
        nxt = start + N_0F
        c, f, lop = cond_lazy(f, lop, la, lb, lr, m & 15)
        if c:
            t = (nxt + rd4(ram, p + 2)) & M32
            if t > climit:
                return False, start, f, lop, la, lb, lr
            return True, t, f, lop, la, lb, lr
        return True, nxt, f, lop, la, lb, lr
    if k == K_NOP:
        return True, start + N_NOP, f, lop, la, lb, lr
    if k == K_JMP8:
        t = (start + N_JMP8 + (m - 256 if m & 0x80 else m)) & M32
        if t > climit:
            return False, start, f, lop, la, lb, lr
        return True, t, f, lop, la, lb, lr
    if k == K_LOOP:
        nxt = start + N_LOOP
        c = (s[ECX] - 1) & M32
        if c == 0:
            s[ECX] = c
            return True, nxt, f, lop, la, lb, lr
        t = (nxt + (m - 256 if m & 0x80 else m)) & M32
        if t > climit:
            return False, start, f, lop, la, lb, lr
        s[ECX] = c
        return True, t, f, lop, la, lb, lr
    if k == K_JMP32:
        t = (start + N_JMP32 + rd4(ram, p + 1)) & M32
        if t > climit:
            return False, start, f, lop, la, lb, lr
        return True, t, f, lop, la, lb, lr
    if k >= K_ALUI:
        return more_forms(s, ram, start, p, b0, m, f, lop, la, lb, lr)
    return False, start, f, lop, la, lb, lr
