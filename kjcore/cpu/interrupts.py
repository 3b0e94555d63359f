"""Exception and interrupt delivery through the IDT (SDM vol. 3, ch. 6).

Precise EIP: the step loop points EIP at the faulting instruction for
faults and past it for traps (INT n, INT3, INTO, single-step) before
calling :func:`raise_exception`.  A fault while delivering is combined
per SDM vol. 3, table 6-5 (contributory / page-fault classes) into #DF; a
fault while delivering #DF is a triple fault (shutdown), returned as a
status with the first exception of the chain kept in FAULT_VEC/ERR/EIP.

Interrupt and trap gates (16 and 32 bit) are supported, with the stack
switch from the TSS on entry to an inner ring.  Task gates stop the run
with ST_UNSUPPORTED.  The EFLAGS image pushed is the current one (RF is
not set in fault images).

In real mode the table at IDTR.base is the interrupt vector table of 4-byte
far pointers (offset, segment): FLAGS, CS and IP are pushed as words (no
error code), IF, TF, AC and RF are cleared.  A vector whose entry lies past
IDTR.limit raises #GP, which escalates through #DF to a triple fault, as on
a 386.
"""
from .far import far_return
from .jit import kernel
from .memory import exc, lin_write, read_mem, sys_read, write_mem
from .operands import get_reg, sext, stack32
from .segments import (
    desc_attr,
    desc_base,
    desc_limit,
    read_desc,
    real_attr,
    real_mode,
    set_cache,
)
from .state import (
    A_CODE,
    A_DB,
    A_E,
    A_P,
    A_S,
    A_USABLE,
    A_W,
    AC,
    BR_,
    CPL,
    CS,
    D_EAOFF,
    D_EASEG,
    D_ERR,
    D_EXC,
    D_IMM,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    D_SOFT,
    DF_,
    EFLAGS,
    EIP,
    ESP,
    FAULT_EIP,
    FAULT_ERR,
    FAULT_VEC,
    GP_,
    IDTR_BASE,
    IDTR_LIMIT,
    IF,
    LAST_ERR,
    LAST_VEC,
    M32,
    NP_,
    NT,
    OF,
    PF_,
    RF,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    S_SEL,
    SEG,
    SS,
    ST_TRIPLE_FAULT,
    ST_UNSUPPORTED,
    TF,
    TR,
    TS_,
    UD_,
    VM,
)


@kernel("b", "i")
def _contributory(v):
    return v == 0 or (v >= 10 and v <= 13)


@kernel("i", "sri")
def deliver_real(s, ram, vec):
    """Real-mode delivery of ``vec`` through the interrupt vector table."""
    idx = vec * 4
    if idx + 3 > s[IDTR_LIMIT]:
        exc(s, GP_, 0)
        return 0
    ptr = sys_read(s, ram, (s[IDTR_BASE] + idx) & M32, 4)
    if s[D_EXC] >= 0:
        return 0
    off = ptr & 0xFFFF
    if off > s[SEG + 4 * CS + S_LIMIT]:
        exc(s, GP_, 0)
        return 0
    am = M32 if stack32(s) else 0xFFFF
    sp = s[ESP] & am
    fl = s[EFLAGS]
    vals = (fl, s[SEG + 4 * CS + S_SEL], s[EIP])
    for i in range(3):
        sp = (sp - 2) & am
        write_mem(s, ram, SS, sp, 2, vals[i] & 0xFFFF)
        if s[D_EXC] >= 0:
            return 0
    s[ESP] = (s[ESP] & ~am & M32) | sp
    set_cache(s, CS, ptr >> 16, (ptr >> 16) << 4, s[SEG + 4 * CS + S_LIMIT], real_attr(s, CS))
    s[EIP] = off
    s[EFLAGS] = fl & ~(IF | TF | AC | RF)
    return 0


@kernel("i", "sriii")
def deliver(s, ram, vec, err, ext):
    """Push the frame and enter the handler for ``vec``; 0, or a status.

    On a nested fault the new exception is left pending in D_EXC and no
    register has changed.
    """
    if real_mode(s):
        return deliver_real(s, ram, vec)
    idx = vec * 8
    if idx + 7 > s[IDTR_LIMIT]:
        exc(s, GP_, idx + 2 + ext)
        return 0
    lin = (s[IDTR_BASE] + idx) & M32
    lo = sys_read(s, ram, lin, 4)
    hi = sys_read(s, ram, (lin + 4) & M32, 4)
    if s[D_EXC] >= 0:
        return 0
    typ = (hi >> 8) & 0x1F
    if typ == 5:
        return ST_UNSUPPORTED                      # task gate
    if typ != 6 and typ != 7 and typ != 0xE and typ != 0xF:
        exc(s, GP_, idx + 2 + ext)
        return 0
    if ext == 0 and ((hi >> 13) & 3) < s[CPL]:
        exc(s, GP_, idx + 2)                       # INT n through a DPL < CPL gate
        return 0
    if (hi & 0x8000) == 0:
        exc(s, NP_, idx + 2 + ext)
        return 0
    gsize = 4 if typ & 8 else 2
    sel = lo >> 16
    off = (lo & 0xFFFF) | (hi & 0xFFFF0000)
    if gsize == 2:
        off &= 0xFFFF
    if (sel & 0xFFFC) == 0:
        exc(s, GP_, ext)
        return 0
    a, dlo, dhi = read_desc(s, ram, sel, GP_)
    if a < 0:
        s[D_ERR] |= ext
        return 0
    attr = desc_attr(dhi)
    dpl = (attr >> 5) & 3
    cpl = s[CPL]
    if (attr & A_S) == 0 or (attr & A_CODE) == 0 or dpl > cpl:
        exc(s, GP_, (sel & 0xFFFC) + ext)
        return 0
    if (attr & A_P) == 0:
        exc(s, NP_, (sel & 0xFFFC) + ext)
        return 0
    base = desc_base(dlo, dhi)
    limit = desc_limit(dhi, dlo)
    if off > limit:
        exc(s, GP_, ext)
        return 0
    fl = s[EFLAGS]
    ret_cs = s[SEG + 4 * CS + S_SEL]
    ret_eip = s[EIP]
    if (attr & A_E) == 0 and dpl < cpl:
        # Inner ring: new SS:ESP from the 32-bit TSS (SDM vol. 3, 6.12.1).
        tra = s[SEG + 4 * TR + S_ATTR]
        if (tra & A_USABLE) == 0:
            exc(s, TS_, (s[SEG + 4 * TR + S_SEL] & 0xFFFC) + ext)
            return 0
        tss = s[SEG + 4 * TR + S_BASE]
        if 8 * dpl + 11 > s[SEG + 4 * TR + S_LIMIT]:
            exc(s, TS_, (s[SEG + 4 * TR + S_SEL] & 0xFFFC) + ext)
            return 0
        nsp = sys_read(s, ram, (tss + 4 + 8 * dpl) & M32, 4)
        nss = sys_read(s, ram, (tss + 8 + 8 * dpl) & M32, 2)
        if s[D_EXC] >= 0:
            return 0
        if (nss & 0xFFFC) == 0:
            exc(s, TS_, ext)
            return 0
        sa, slo, shi = read_desc(s, ram, nss, TS_)
        if sa < 0:
            s[D_ERR] |= ext
            return 0
        sattr = desc_attr(shi)
        if ((nss & 3) != dpl or ((sattr >> 5) & 3) != dpl or (sattr & A_S) == 0
                or (sattr & A_CODE) or (sattr & A_W) == 0):
            exc(s, TS_, (nss & 0xFFFC) + ext)
            return 0
        if (sattr & A_P) == 0:
            exc(s, 12, (nss & 0xFFFC) + ext)
            return 0
        sbase = desc_base(slo, shi)
        am = M32 if (sattr & A_DB) else 0xFFFF
        sp = nsp & am
        n = 6 if err >= 0 else 5
        vals = (s[SEG + 4 * SS + S_SEL], s[ESP], fl, ret_cs, ret_eip, err)
        for i in range(n):
            sp = (sp - gsize) & am
            lin_write(s, ram, (sbase + sp) & M32, gsize, vals[i] & ((1 << (8 * gsize)) - 1), 0)
            if s[D_EXC] >= 0:
                return 0
        set_cache(s, SS, nss, sbase, desc_limit(shi, slo), sattr)
        if am == M32:
            s[ESP] = sp
        else:
            s[ESP] = (nsp & 0xFFFF0000) | sp
        newcpl = dpl
    else:
        am = M32 if stack32(s) else 0xFFFF
        sp = s[ESP] & am
        n = 4 if err >= 0 else 3
        vals = (fl, ret_cs, ret_eip, err, 0, 0)
        for i in range(n):
            sp = (sp - gsize) & am
            # Same stack: limit and page checks through the normal SS path.
            write_mem(s, ram, SS, sp, gsize, vals[i])
            if s[D_EXC] >= 0:
                return 0
        s[ESP] = (s[ESP] & ~am & M32) | sp
        newcpl = cpl
    set_cache(s, CS, (sel & 0xFFFC) | newcpl, base, limit, attr)
    s[EIP] = off
    clear = TF | NT | RF | VM
    if (typ & 1) == 0:
        clear |= IF
    s[EFLAGS] = fl & ~clear
    return 0


@kernel("i", "sriib")
def raise_exception(s, ram, vec, err, soft):
    """Deliver ``vec`` with escalation to #DF and triple fault; returns a status."""
    ret = s[EIP]
    cur = vec
    cur_err = err
    ext = 0 if soft else 1
    s[FAULT_VEC] = vec
    s[FAULT_ERR] = err
    s[FAULT_EIP] = ret
    for _ in range(8):
        s[D_EXC] = -1
        st = deliver(s, ram, cur, cur_err, ext)
        s[LAST_VEC] = cur
        s[LAST_ERR] = cur_err
        if st != 0:
            return st
        if s[D_EXC] < 0:
            return 0
        nv = s[D_EXC]
        ne = s[D_ERR]
        s[D_EXC] = -1
        if cur == DF_:
            s[LAST_VEC] = nv
            s[LAST_ERR] = ne
            return ST_TRIPLE_FAULT
        if (_contributory(cur) and _contributory(nv)) or (
                cur == PF_ and (nv == PF_ or _contributory(nv))):
            cur = DF_
            cur_err = 0
        else:
            cur = nv
            cur_err = ne
        ext = 1
    return ST_TRIPLE_FAULT


@kernel("v", "si")
def soft_int(s, vec):
    s[D_EXC] = vec
    s[D_ERR] = -1
    s[D_SOFT] = 1


@kernel("i", "sr")
def op_int(s, ram):
    op = s[D_OP]
    if op == 0xCC:
        soft_int(s, 3)
    elif op == 0xCD:
        soft_int(s, s[D_IMM])
    elif op == 0xCE:
        if s[EFLAGS] & OF:
            soft_int(s, 4)
    elif op == 0xCF:
        return far_return(s, ram, s[D_OSZ], 0, True)
    else:                                          # BOUND r, m
        if s[D_MOD] == 3:
            exc(s, UD_, -1)
            return 0
        size = s[D_OSZ]
        lo = read_mem(s, ram, s[D_EASEG], s[D_EAOFF], size)
        hi = read_mem(s, ram, s[D_EASEG], (s[D_EAOFF] + size) & M32, size)
        if s[D_EXC] >= 0:
            return 0
        v = sext(get_reg(s, s[D_REG], size), size)
        if v < sext(lo, size) or v > sext(hi, size):
            exc(s, BR_, -1)
    return 0


_unused = (A_DB, RF, S_LIMIT, SS)
