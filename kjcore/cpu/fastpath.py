"""Fast path for the commonest instructions of 32-bit code.

The step loop tries this before the general decoder, in an inner loop that
keeps EIP and EFLAGS in registers.  Which forms it runs is the opcode
table's ``fast`` column (``isa.FAST_CLASS``, ``isa.FAST_LENGTH``; the memory
forms: ``fast_mem``, ``isa.MEMFORM``), without prefixes: ALU, TEST, MOV,
INC/DEC on registers and immediates, Jcc, JMP, LOOP, NOP; MOV, ALU, CMP/TEST,
LEA with a memory operand, PUSH/POP r32, CALL rel32, RET, when the access is
the plain case (usable expand-up segment, inside the limit and one page, TLB
hit or paging off, RAM).  This module has their semantics, the 32-bit
memory operand (``ea32``) and the checks.  Everything else — and any
instruction whose bytes are not all in the cached code page or that could
cross the CS limit — is left unhandled (nothing changed) and goes through
the full decoder, so the fast path can never change architectural results;
the Unicorn oracle runs through both paths, and
tests/cpu/test_fastpath_lazy.py compares the two on random programs.

Arithmetic flags are lazy (``lazyflags.py``): the register forms record the
operation (L_*), its operands and result, and ``flags_of`` computes EFLAGS
when the step loop leaves the fast path; Jcc evaluates the common conditions
from the record.

The register forms (and their ALU/condition helpers) are inlined into the
step loop by LLVM (``jit.inline_kernel``); the memory forms are an ordinary
kernel call (``fast_mem``), which keeps the inlined loop small.
"""
import numpy as np

from .isa import (
    FAST_CLASS,
    FAST_LENGTH,
    K_0F,
    K_ALU,
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
from .jit import inline_kernel, kernel
from .lazyflags import L_ADD, L_DEC, L_INC, L_LOGIC, L_NONE, L_SUB, carry_now, cond_lazy, flags_of
from .memory import T_DIRTY, T_SWRITE, T_UREAD, T_UWRITE, in_rom
from .operands import PARITY
from .state import (
    A20_CLEAR,
    A_CODE,
    A_DB,
    A_E,
    A_USABLE,
    A_W,
    AF,
    CF,
    CPL,
    CR0,
    CR0_PG,
    CS,
    DS,
    EBP,
    ECX,
    ESP,
    M32,
    OF,
    PF,
    SEG,
    SF,
    SS,
    TLB,
    TLB_N,
    ZF,
)

# Lengths of the register forms, from the opcode table.  Module-level ints:
# Numba compiles them as constants, so the next EIP never waits for a load
# (a length read from a table per instruction cost the ALU loop 25%).
(N_ALU, N_INC, N_JCC, N_0F, N_MOVI, N_81, N_83, N_TEST, N_MOVST, N_MOVLD, N_MODRM, N_F7,
 N_NOP, N_JMP8, N_LOOP, N_JMP32, N_CALL, N_PUSH) = (
    FAST_LENGTH[b] for b in (0x01, 0x40, 0x70, 0x0F, 0xB8, 0x81, 0x83, 0x85, 0x89, 0x8B, 0x8D,
                             0xF7, 0x90, 0xEB, 0xE2, 0xE9, 0xE8, 0x50))


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
        ph = lin & ~s[A20_CLEAR]
    if ph + 4 > ram.shape[0] or write and in_rom(s, ph, 4):     # ROM: phys_write drops it
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


@kernel("biii", "sriiii")
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
            ph = phys4(s, ram, SS, sp, True)
            if ph < 0:
                return False, start, f, 0
            wr4(ram, ph, s[b0 & 7])
            s[ESP] = sp
        else:
            ph = phys4(s, ram, SS, s[ESP], False)
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
            ph = phys4(s, ram, SS, sp, True)
            if ph < 0:
                return False, start, f, 0
            wr4(ram, ph, start + N_CALL)
            s[ESP] = sp
        else:
            ph = phys4(s, ram, SS, s[ESP], False)
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
        ph = phys4(s, ram, seg, off, True)
        if ph < 0:
            return False, start, f, 0
        wr4(ram, ph, s[reg])
        return True, end, f, 0
    ph = phys4(s, ram, seg, off, False)
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
    if not MEMFORM[b0]:
        return False, start, f, lop, la, lb, lr
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
    k = FAST_CLASS[b0]
    if k == K_ALU:                             # 01 03 09 0B ... 39 3B
        nxt = start + N_ALU
        if m < 0xC0:
            return mem_form(s, ram, start, p, b0, f, lop, la, lb, lr)
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
        if m < 0xC0:
            return mem_form(s, ram, start, p, b0, f, lop, la, lb, lr)
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
        if m < 0xC0:
            return mem_form(s, ram, start, p, b0, f, lop, la, lb, lr)
        s[m & 7] = s[(m >> 3) & 7]
        return True, start + N_MOVST, f, lop, la, lb, lr
    if k == K_MOVLD:
        if m < 0xC0:
            return mem_form(s, ram, start, p, b0, f, lop, la, lb, lr)
        s[(m >> 3) & 7] = s[m & 7]
        return True, start + N_MOVLD, f, lop, la, lb, lr
    if k == K_TEST:
        if m < 0xC0:
            return mem_form(s, ram, start, p, b0, f, lop, la, lb, lr)
        r = s[m & 7] & s[(m >> 3) & 7]
        return True, start + N_TEST, f, L_LOGIC, r, 0, r
    if k == K_F7:                              # TEST r32, imm32 (F7 /0 and its alias /1)
        if m < 0xC0 or ((m >> 3) & 7) > 1:
            return False, start, f, lop, la, lb, lr
        r = s[m & 7] & rd4(ram, p + 2)
        return True, start + N_F7, f, L_LOGIC, r, 0, r
    if k == K_STACK or k == K_CALLRET:
        ok, nxt, nf, wrote = fast_mem(s, ram, start, p, b0, f)
        return ok, nxt, nf, lop, la, lb, lr
    if k == K_LEA:
        if m >= 0xC0:
            return False, start, f, lop, la, lb, lr
        ok, nxt, nf, wrote = fast_mem(s, ram, start, p, b0, f)
        return ok, nxt, nf, lop, la, lb, lr
    if k == K_0F:
        if m < 0x80 or m >= 0x90:
            return False, start, f, lop, la, lb, lr
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
    return False, start, f, lop, la, lb, lr
