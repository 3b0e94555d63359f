"""Fast path for 16-bit code: real mode and 16-bit protected-mode code segments.

The step loop calls :func:`run16` before decoding an instruction of a CS without the D bit
(``fastpath.py`` takes 32-bit code only).  It runs instructions in an inner loop with IP and
EFLAGS in registers, EFLAGS lazily (``fast16ops.wide`` puts a 16-bit operation in
``lazyflags``' record), as long as they are these forms, with a 0x66 operand-size prefix
(32-bit operands) and a segment override allowed:

* ALU r/m,r and r,r/m (01 03 09 0B 11 13 19 1B 21 23 29 2B 31 33 39 3B), ALU eAX,imm
  (05 ... 3D), ALU r/m,imm (81, 83), TEST r/m,r (85), INC/DEC r (40-4F);
* MOV r/m,r and r,r/m (89 8B, and 88 8A bytes), MOV r,imm (B0-BF), LEA (8D), NOP;
* PUSH/POP r (50-5F) on a 16-bit stack; and without 0x66: Jcc rel8 and rel16 (70-7F,
  0F 80-8F), JMP rel8/rel16 (EB E9), LOOP (E2, CX), CALL rel16 (E8), RET (C3).

Memory operands use 16-bit ModRM addressing (``fast16ops.ea16``) and only the plain case
(``fastmem.phys_n``: usable segment, inside the limit and one page, TLB, A20, RAM that is not
ROM) without a 64 KiB wrap.  Anything else - another form, a fault to raise, a branch target
past the CS limit, an instruction within 16 bytes of IP's 64 KiB wrap or of the code page's
end - is left to the interpreter with nothing changed, so faults stay precise.  Code bytes
are read from RAM for every instruction: a store into the code is seen by the next fetch.
A taken backward branch asks the translation tier (``hotloop.loop_head``) as ``loop16`` does.
"""
from .codestop import bp_hit
from .fast16ops import (
    alu_lazy,
    ea16,
    getw,
    mask_of,
    mem_at,
    rdw,
    setw,
    sext8,
    wide,
    wrw,
)
from .fastforms import getb, setb
from .fastmem import rb
from .hotloop import LOOP16, REQUEST, enter_loop, loop_head
from .jit import inline_kernel, kernel
from .lazyflags import L_DEC, L_INC, L_LOGIC, L_NONE, carry_now, cond_lazy, flags_of
from .state import (
    A_DB,
    CF,
    CS,
    D_FPAGE,
    D_FPHYS,
    EAX,
    ECX,
    EFLAGS,
    EIP,
    ESP,
    M32,
    NBP,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    SEG,
    SS,
    ST_BREAK,
    ST_JIT_REQUEST,
    ST_OK,
    TRACE,
    TRACE_N,
)

#: bytes of code an instruction may fetch here (prefixes, 0F xx, ModRM, disp16, imm32: 11)
WINDOW = 16


@kernel("ii", "sriib")
def run16(s, ram, budget, tslot, stop_first):
    """Run up to ``budget`` fast-path instructions of 16-bit code from CS:IP; trace slot
    ``tslot`` gets the first one's linear address.  Returns (instructions run, ST_OK,
    ST_JIT_REQUEST or ST_BREAK); ``s[EIP]`` and ``s[EFLAGS]`` are exact afterwards.  A code
    stop (``codestop.bp_hit``) ends the run before its instruction, the first instruction's
    only with ``stop_first`` (a run resumed at a breakpoint executes it), as in ``core.run``."""
    cs = SEG + 4 * CS
    fpage = s[D_FPAGE]
    if s[cs + S_ATTR] & A_DB or fpage < 0:
        return 0, ST_OK
    cbase = s[cs + S_BASE]
    climit = s[cs + S_LIMIT]
    last = min(climit, 0xFFFF) - WINDOW      # the last IP whose window fits
    fphys = s[D_FPHYS]
    ip = s[EIP]
    f = s[EFLAGS]
    lop = L_NONE
    la = 0
    lb = 0
    lr = 0
    n = 0
    st = ST_OK
    while n < budget:
        lin = (cbase + ip) & M32
        if ip > last or (lin >> 12) != fpage or (lin & 0xFFF) > 4096 - WINDOW:
            break
        if s[NBP] > 0 and (n > 0 or stop_first) and bp_hit(s, lin):
            st = ST_BREAK
            break
        ok, nxt, f, lop, la, lb, lr = step16(s, ram, ip, fphys + (lin & 0xFFF), climit, f,
                                             lop, la, lb, lr)
        if not ok:
            break
        s[TRACE + ((tslot + n) & (TRACE_N - 1))] = lin
        n += 1
        if nxt < ip:                          # a taken backward branch: a hot loop?
            tlin = (cbase + nxt) & M32
            if (tlin >> 12) == fpage:
                p = fphys + (tlin & 0xFFF)
                k = loop_head(s, p | LOOP16)
                if k == REQUEST:
                    ip = nxt
                    st = ST_JIT_REQUEST
                    break
                if k > 0 and n < budget:
                    room = min(climit + 1 - nxt, 0xFFFF - nxt)
                    j = enter_loop(s, ram, k, p, nxt, tlin, f | (lop << 32), la, lb, lr,
                                   budget - n, (tslot + n) & (TRACE_N - 1), room, 0)
                    if j > 0:
                        n += j
                        nxt = s[EIP]
                        f = s[EFLAGS]
                        lop = L_NONE
        ip = nxt
    s[EIP] = ip
    s[EFLAGS] = flags_of(f, lop, la, lb, lr)
    return n, st


@inline_kernel
def step16(s, ram, ip, p, climit, f, lop, la, lb, lr):
    """One instruction at IP ``ip`` (physical ``p``): (handled, next IP, f, lop, la, lb, lr);
    unhandled: nothing changed."""
    w = 2
    seg = -1
    b0 = rb(ram, p)
    i = 0
    while i < 2:
        if b0 == 0x66 and w == 2:
            w = 4
        elif seg < 0 and (b0 == 0x26 or b0 == 0x2E or b0 == 0x36 or b0 == 0x3E or b0 == 0x64
                          or b0 == 0x65):
            seg = (b0 >> 3) & 3 if b0 < 0x40 else b0 - 0x60
        else:
            break
        i += 1
        b0 = rb(ram, p + i)
    if b0 == 0x66 or b0 == 0x67 or b0 == 0xF0 or b0 == 0xF2 or b0 == 0xF3:
        return False, ip, f, lop, la, lb, lr
    q = p + i + 1                              # the byte after the opcode
    nx = ip + i + 1
    if b0 < 0x40 and b0 != 0x0F:
        if (b0 & 7) == 5:                      # ALU eAX, imm
            imm = rdw(ram, q, w)
            aop = b0 >> 3
            r, f, lop, la, lb, lr = alu_lazy(aop, getw(s, EAX, w), imm, w, f, lop, la, lb, lr)
            if aop != 7:
                setw(s, EAX, r, w)
            return True, nx + w, f, lop, la, lb, lr
        if (b0 & 5) != 1:
            return False, ip, f, lop, la, lb, lr
        return alu_form(s, ram, ip, q, nx, b0 >> 3, (b0 & 2) != 0, w, seg, f, lop, la, lb, lr)
    if 0x40 <= b0 < 0x50:                              # INC / DEC r: CF kept
        r = b0 & 7
        a = getw(s, r, w)
        f = (f & ~CF) | carry_now(f, lop, la, lb, lr)
        res = (a + (1 if b0 < 0x48 else mask_of(w))) & mask_of(w)
        setw(s, r, res, w)
        return True, nx, f, L_INC if b0 < 0x48 else L_DEC, wide(a, w), 1, wide(res, w)
    if 0x50 <= b0 < 0x60:
        if stack16(s, ram, b0, w):
            return True, nx, f, lop, la, lb, lr
        return False, ip, f, lop, la, lb, lr
    if b0 >= 0x70 and b0 < 0x80 or b0 == 0xEB or b0 == 0xE2:
        if w == 4:
            return False, ip, f, lop, la, lb, lr
        nx += 1
        t = (nx + sext8(rb(ram, q))) & 0xFFFF
        if b0 == 0xE2:                         # LOOP: CX (16-bit address size)
            c = (s[ECX] - 1) & 0xFFFF
            if c != 0 and t > climit:
                return False, ip, f, lop, la, lb, lr
            setw(s, ECX, c, 2)
            return True, t if c != 0 else nx, f, lop, la, lb, lr
        c = True
        if b0 != 0xEB:
            c, f, lop = cond_lazy(f, lop, la, lb, lr, b0 & 15)
        if not c:
            return True, nx, f, lop, la, lb, lr
        if t > climit:
            return False, ip, f, lop, la, lb, lr
        return True, t, f, lop, la, lb, lr
    if b0 == 0x81 or b0 == 0x83:
        return alu_form(s, ram, ip, q, nx, -1 if b0 == 0x81 else -2, False, w, seg, f, lop,
                        la, lb, lr)
    if b0 == 0x85:
        return alu_form(s, ram, ip, q, nx, 8, False, w, seg, f, lop, la, lb, lr)
    if b0 >= 0x88 and b0 <= 0x8B:
        if mov16(s, ram, q, b0, w, seg):
            return True, nx + modrm_len(ram, q), f, lop, la, lb, lr
        return False, ip, f, lop, la, lb, lr
    if b0 == 0x8D:
        m = rb(ram, q)
        if m >= 0xC0:
            return False, ip, f, lop, la, lb, lr
        off, _, k = ea16(s, ram, q, seg)
        setw(s, (m >> 3) & 7, off, w)
        return True, nx + k, f, lop, la, lb, lr
    if b0 == 0x90:
        return True, nx, f, lop, la, lb, lr
    if b0 >= 0xB0 and b0 < 0xB8:
        setb(s, b0 & 7, rb(ram, q))
        return True, nx + 1, f, lop, la, lb, lr
    if b0 >= 0xB8 and b0 < 0xC0:
        setw(s, b0 & 7, rdw(ram, q, w), w)
        return True, nx + w, f, lop, la, lb, lr
    if w == 4:
        return False, ip, f, lop, la, lb, lr
    if b0 == 0xE9 or b0 == 0xE8 or b0 == 0x0F:
        if b0 == 0x0F:
            op = rb(ram, q)
            if op < 0x80 or op >= 0x90:
                return False, ip, f, lop, la, lb, lr
            q += 1
            nx += 1
        nx += 2
        t = (nx + rdw(ram, q, 2)) & 0xFFFF
        if b0 == 0x0F:
            c, f, lop = cond_lazy(f, lop, la, lb, lr, op & 15)
            if not c:
                return True, nx, f, lop, la, lb, lr
        if t > climit or b0 == 0xE8 and not push16(s, ram, nx):
            return False, ip, f, lop, la, lb, lr
        return True, t, f, lop, la, lb, lr
    if b0 == 0xC3:
        t = pop16(s, ram, climit)
        if t < 0:
            return False, ip, f, lop, la, lb, lr
        return True, t, f, lop, la, lb, lr
    return False, ip, f, lop, la, lb, lr


@inline_kernel
def modrm_len(ram, q):
    """Bytes of a 16-bit ModRM operand (ModRM and displacement) at ram[q]."""
    m = rb(ram, q)
    mod = m >> 6
    if mod == 3:
        return 1
    if mod == 1:
        return 2
    if mod == 2 or (m & 7) == 6:
        return 3
    return 1


@kernel("b", "sriiii")
def mov16(s, ram, q, b0, w, seg):
    """MOV r/m,r and r,r/m (88 89 8A 8B); False: the interpreter's case, nothing changed."""
    m = rb(ram, q)
    reg = (m >> 3) & 7
    byte = (b0 & 1) == 0
    store = (b0 & 2) == 0
    if m >= 0xC0:
        src, dst = (reg, m & 7) if store else (m & 7, reg)
        if byte:
            setb(s, dst, getb(s, src))
        else:
            setw(s, dst, getw(s, src, w), w)
        return True
    off, sg, _ = ea16(s, ram, q, seg)
    n = 1 if byte else w
    ph = mem_at(s, ram, sg, off, store, n)
    if ph < 0:
        return False
    if byte:
        if store:
            ram[ph] = getb(s, reg)
        else:
            setb(s, reg, rb(ram, ph))
    elif store:
        wrw(ram, ph, getw(s, reg, w), w)
    else:
        setw(s, reg, rdw(ram, ph, w), w)
    return True


@inline_kernel
def alu_form(s, ram, ip, q, nx, aop, to_reg, w, seg, f, lop, la, lb, lr):
    """``modrm_alu`` with the lazy kind unpacked (step16's tuple)."""
    ok, nxt, fl, la, lb, lr = modrm_alu(s, ram, ip, q, nx, aop, to_reg, w, seg, f | (lop << 32),
                                        la, lb, lr)
    return ok, nxt, fl & M32, fl >> 32, la, lb, lr


@kernel("biiiii", "sriiiibiiiiii")
def modrm_alu(s, ram, ip, q, nx, aop, to_reg, w, seg, fl, la, lb, lr):
    """ALU with a ModRM operand: ``aop`` 0-7 with the register (``to_reg``: the register is
    the destination), -1/-2 for 81/83 (the operation in the reg field, imm16/32 or imm8),
    8 for TEST r/m,r.  ``fl``: EFLAGS | lazy kind << 32.  Returns (handled, next IP, fl, la,
    lb, lr); unhandled: nothing changed."""
    f = fl & M32
    lop = fl >> 32
    m = rb(ram, q)
    reg = (m >> 3) & 7
    k = 1
    mem = m < 0xC0
    sg = 0
    off = 0
    ph = 0
    if mem:
        off, sg, k = ea16(s, ram, q, seg)
    nx += k
    if aop < 0:                                # 81 / 83: the immediate is the source
        if aop == -1:
            b = rdw(ram, q + k, w)
            nx += w
        else:
            b = sext8(rb(ram, q + k)) & mask_of(w)
            nx += 1
        aop = reg
    else:
        b = getw(s, reg, w)
    writes = aop < 7 and not to_reg
    if mem:
        ph = mem_at(s, ram, sg, off, writes, w)
        if ph < 0:
            return False, ip, fl, la, lb, lr
        a = rdw(ram, ph, w)
    else:
        a = getw(s, m & 7, w)
    if aop == 8:
        r = a & b
        return True, nx, f | (L_LOGIC << 32), wide(r, w), 0, wide(r, w)
    if to_reg:
        a, b = b, a
    r, f, lop, la, lb, lr = alu_lazy(aop, a, b, w, f, lop, la, lb, lr)
    if aop != 7:
        if to_reg:
            setw(s, reg, r, w)
        elif mem:
            wrw(ram, ph, r, w)
        else:
            setw(s, m & 7, r, w)
    return True, nx, f | (lop << 32), la, lb, lr


@inline_kernel
def stack16(s, ram, b0, w):
    """PUSH r (50-57) / POP r (58-5F) on a 16-bit stack; False: nothing changed."""
    if s[SEG + 4 * SS + S_ATTR] & A_DB:
        return False
    sp = s[ESP] & 0xFFFF
    if b0 < 0x58:
        nsp = (sp - w) & 0xFFFF
        ph = mem_at(s, ram, SS, nsp, True, w)
        if ph < 0:
            return False
        wrw(ram, ph, getw(s, b0 & 7, w), w)
        setw(s, ESP, nsp, 2)
        return True
    ph = mem_at(s, ram, SS, sp, False, w)
    if ph < 0:
        return False
    v = rdw(ram, ph, w)
    setw(s, ESP, (sp + w) & 0xFFFF, 2)
    setw(s, b0 & 7, v, w)
    return True


@inline_kernel
def push16(s, ram, v):
    """Push the 16-bit ``v`` (CALL's return IP) on a 16-bit stack; False: nothing changed."""
    if s[SEG + 4 * SS + S_ATTR] & A_DB:
        return False
    nsp = (s[ESP] - 2) & 0xFFFF
    ph = mem_at(s, ram, SS, nsp, True, 2)
    if ph < 0:
        return False
    wrw(ram, ph, v, 2)
    setw(s, ESP, nsp, 2)
    return True


@inline_kernel
def pop16(s, ram, climit):
    """RET's pop from a 16-bit stack: the new IP, or -1 (nothing changed) for the
    interpreter (a fault to raise, a 32-bit stack, a target past the CS limit)."""
    if s[SEG + 4 * SS + S_ATTR] & A_DB:
        return -1
    sp = s[ESP] & 0xFFFF
    ph = mem_at(s, ram, SS, sp, False, 2)
    if ph < 0:
        return -1
    t = rdw(ram, ph, 2)
    if t > climit:
        return -1
    setw(s, ESP, (sp + 2) & 0xFFFF, 2)
    return t
