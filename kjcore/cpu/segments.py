"""Descriptor tables and segment-register loads (SDM vol. 3, ch. 3 and 5).

A segment register is a visible selector plus a hidden cache (base, limit,
attributes) filled from the descriptor when the selector is loaded; the
cache keeps working when GDTR changes or the table is overwritten, as on
the hardware.

In real mode (CR0.PE = 0) a load sets the selector and base = selector << 4
and keeps the cached limit and the D/B and G flags, as a 386 does (so a
4 GiB limit loaded in protected mode survives: "unreal mode"); the access
byte becomes present, writable, accessed data (Bochs does the same).
"""
from .jit import kernel
from .memory import exc, sys_read, sys_write
from .state import (
    A_ACCESSED,
    A_CODE,
    A_DB,
    A_E,
    A_G,
    A_P,
    A_S,
    A_USABLE,
    A_W,
    CPL,
    CR0,
    CR0_PE,
    CS,
    D_EXC,
    D_FPAGE,
    DS,
    ES,
    FS,
    GDTR_BASE,
    GDTR_LIMIT,
    GP_,
    GS,
    LDTR,
    M32,
    NP_,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    S_SEL,
    SEG,
    SS,
    SS_,
)

#: access byte of a segment loaded in real mode: present, DPL 0, writable accessed data
REAL_ACCESS = 0x93


@kernel("i", "ii")
def desc_base(lo, hi):
    return ((lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)) & M32


@kernel("i", "ii")
def desc_limit(hi, lo):
    lim = (lo & 0xFFFF) | (hi & 0xF0000)
    if hi & 0x800000:
        lim = ((lim << 12) | 0xFFF) & M32
    return lim


@kernel("i", "i")
def desc_attr(hi):
    return ((hi >> 8) & 0xFF) | (((hi >> 20) & 0xF) << 8) | A_USABLE


@kernel("b", "s")
def real_mode(s):
    return (s[CR0] & CR0_PE) == 0


@kernel("v", "siiiii")
def set_cache(s, seg, sel, base, limit, attr):
    b = SEG + 4 * seg
    s[b + S_SEL] = sel & 0xFFFF
    s[b + S_BASE] = base & M32
    s[b + S_LIMIT] = limit & M32
    s[b + S_ATTR] = attr
    if seg == CS:
        s[CPL] = 0 if real_mode(s) else sel & 3
        s[D_FPAGE] = -1


@kernel("i", "si")
def real_attr(s, seg):
    """The attribute word a real-mode load of ``seg`` leaves: the cached D/B and G flags
    kept, present writable accessed data, usable."""
    return (s[SEG + 4 * seg + S_ATTR] & (A_DB | A_G)) | REAL_ACCESS | A_USABLE


@kernel("v", "sii")
def real_load(s, seg, sel):
    """A real-mode segment load: base = sel << 4, the cached limit kept."""
    sel &= 0xFFFF
    set_cache(s, seg, sel, sel << 4, s[SEG + 4 * seg + S_LIMIT], real_attr(s, seg))


@kernel("i", "si")
def desc_addr(s, sel):
    """Linear address of the descriptor for ``sel``; -1 if outside its table."""
    if sel & 4:
        a = s[SEG + 4 * LDTR + S_ATTR]
        if (a & A_USABLE) == 0:
            return -1
        base = s[SEG + 4 * LDTR + S_BASE]
        limit = s[SEG + 4 * LDTR + S_LIMIT]
    else:
        base = s[GDTR_BASE]
        limit = s[GDTR_LIMIT]
    idx = sel & 0xFFF8
    if idx + 7 > limit:
        return -1
    return (base + idx) & M32


@kernel("iii", "srii")
def read_desc(s, ram, sel, vec):
    """Fetch the descriptor of ``sel``: (addr, lo, hi); addr -1 and #vec(sel) if absent."""
    a = desc_addr(s, sel)
    if a < 0:
        exc(s, vec, sel & 0xFFFC)
        return -1, 0, 0
    lo = sys_read(s, ram, a, 4)
    hi = sys_read(s, ram, (a + 4) & M32, 4)
    if s[D_EXC] >= 0:
        return -1, 0, 0
    return a, lo, hi


@kernel("v", "srii")
def mark_accessed(s, ram, a, hi):
    if (hi & 0x100) == 0:
        sys_write(s, ram, (a + 4) & M32, 4, hi | 0x100)


@kernel("b", "srii")
def load_seg(s, ram, seg, sel):
    """MOV/POP/LxS to a data or stack segment register in protected mode.

    Returns True on success; on failure the pending exception is #GP(sel),
    #SS(sel) or #NP(sel) as in SDM vol. 2, MOV (protected mode exceptions).
    """
    sel &= 0xFFFF
    if real_mode(s):
        real_load(s, seg, sel)
        return True
    cpl = s[CPL]
    rpl = sel & 3
    if (sel & 0xFFFC) == 0:
        if seg == SS:
            exc(s, GP_, 0)
            return False
        b = SEG + 4 * seg
        s[b + S_SEL] = sel
        s[b + S_ATTR] = 0          # unusable until a real selector is loaded
        return True
    a, lo, hi = read_desc(s, ram, sel, GP_)
    if a < 0:
        return False
    attr = desc_attr(hi)
    dpl = (attr >> 5) & 3
    if seg == SS:
        if rpl != cpl or dpl != cpl or (attr & A_S) == 0 or (attr & A_CODE) or (attr & A_W) == 0:
            exc(s, GP_, sel & 0xFFFC)
            return False
        if (attr & A_P) == 0:
            exc(s, SS_, sel & 0xFFFC)
            return False
    else:
        if (attr & A_S) == 0 or ((attr & A_CODE) and (attr & A_W) == 0):
            exc(s, GP_, sel & 0xFFFC)
            return False
        # Data and non-conforming code: max(CPL, RPL) <= DPL.
        if ((attr & A_CODE) == 0 or (attr & A_E) == 0) and (rpl > dpl or cpl > dpl):
            exc(s, GP_, sel & 0xFFFC)
            return False
        if (attr & A_P) == 0:
            exc(s, NP_, sel & 0xFFFC)
            return False
    mark_accessed(s, ram, a, hi)
    if s[D_EXC] >= 0:
        return False
    set_cache(s, seg, sel, desc_base(lo, hi), desc_limit(hi, lo), attr | A_ACCESSED)
    return True


@kernel("biii", "srii")
def check_code_target(s, ram, sel, cpl_new_max):
    """Checks a far JMP/CALL/RET/IRET target code segment (no gates).

    ``cpl_new_max``: -1 for JMP/CALL (target must keep CPL: non-conforming
    DPL == CPL with RPL <= CPL, conforming DPL <= CPL); otherwise the RPL of
    the return selector, for RET/IRET (may only go outward).  Returns
    (ok, base, limit, attr) and leaves #GP/#NP pending on failure.  In real mode any
    selector is a target: base ``sel << 4``, CS's cached limit kept (:func:`real_load`).
    """
    if real_mode(s):
        return True, (sel & 0xFFFF) << 4, s[SEG + 4 * CS + S_LIMIT], real_attr(s, CS)
    if (sel & 0xFFFC) == 0:
        exc(s, GP_, 0)
        return False, 0, 0, 0
    a, lo, hi = read_desc(s, ram, sel, GP_)
    if a < 0:
        return False, 0, 0, 0
    attr = desc_attr(hi)
    dpl = (attr >> 5) & 3
    rpl = sel & 3
    cpl = s[CPL]
    if (attr & A_S) == 0 or (attr & A_CODE) == 0:
        exc(s, GP_, sel & 0xFFFC)
        return False, 0, 0, 0
    conforming = (attr & A_E) != 0
    if cpl_new_max < 0:
        bad = dpl > cpl if conforming else (rpl > cpl or dpl != cpl)
    else:
        bad = rpl < cpl or (dpl > rpl if conforming else dpl != rpl)
    if bad:
        exc(s, GP_, sel & 0xFFFC)
        return False, 0, 0, 0
    if (attr & A_P) == 0:
        exc(s, NP_, sel & 0xFFFC)
        return False, 0, 0, 0
    mark_accessed(s, ram, a, hi)
    if s[D_EXC] >= 0:
        return False, 0, 0, 0
    return True, desc_base(lo, hi), desc_limit(hi, lo), attr | A_ACCESSED


@kernel("v", "s")
def null_outer_segments(s):
    """After a return to an outer ring, data segments the new CPL may not use
    become null (SDM vol. 3, 5.8.6 step 7)."""
    cpl = s[CPL]
    for seg in (ES, DS, FS, GS):
        b = SEG + 4 * seg
        attr = s[b + S_ATTR]
        dpl = (attr >> 5) & 3
        if (attr & A_USABLE) and dpl < cpl and (
                (attr & A_CODE) == 0 or (attr & A_E) == 0):
            s[b + S_SEL] = 0
            s[b + S_ATTR] = 0
