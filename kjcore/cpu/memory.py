"""Physical bus, page walk, software TLB and segment-checked memory access.

Address path (SDM vol. 3, ch. 3 and 4)::

    segment:offset --(limit/type check)--> linear --(TLB | page walk)--> physical --(bus)--> RAM

Physical accesses past the end of ``ram`` behave like an empty bus (SPEC
section 3): reads return all ones, writes are dropped; with ``strict_bus`` set they
record the address in ``s[BUS_ADDR]`` and the run stops with BUS_ERROR.
Guest writes into the read-only ROM range (``s[ROM_LO]``..``s[ROM_HI]``, a BIOS's ROM) are
dropped in :func:`phys_write`, and a TLB entry of a ROM page never allows writes, so the
bulk and fast write paths fall back to it.
Nothing here can index outside ``ram`` or ``s``.  The A20 gate is applied
where physical addresses are formed (``s[A20_CLEAR]``: bit 20 cleared from
the linear address with paging off, from every table-entry address and
frame of a walk, hence from every TLB entry).

Faults never raise: a routine that fails stores the vector and error code in
``s[D_EXC]``/``s[D_ERR]`` and returns -1 (addresses) or 0 (values); callers
test ``s[D_EXC] >= 0``.
"""
import numpy as np

from .jit import inline_kernel, kernel
from .memhook import mem_hook
from .state import (
    A20_CLEAR,
    A_CODE,
    A_DB,
    A_E,
    A_USABLE,
    A_W,
    BUS_ADDR,
    CPL,
    CR0,
    CR0_PG,
    CR0_WP,
    CR2,
    CR3,
    CR4,
    CR4_PAE,
    CR4_PGE,
    CR4_PSE,
    D_ERR,
    D_EXC,
    D_FPAGE,
    EFER,
    EFER_NXE,
    GP_,
    M32,
    MH_N,
    MH_READ,
    MH_WRITE,
    PF_,
    PFE_I,
    PFE_P,
    PFE_RSVD,
    PFE_U,
    PFE_W,
    ROM_HI,
    ROM_LO,
    SEG,
    SS,
    SS_,
    STRICT_BUS,
    TLB,
    TLB_N,
    TLB_SETS,
    TLB_WAYS,
)

# Access kinds for translate(); combine with ACC_USER.
ACC_READ = 0
ACC_WRITE = 1
ACC_USER = 2
ACC_FETCH = 4

# TLB entry permission bits (what the cached translation allows).
T_UREAD = 1
T_UWRITE = 2
T_SWRITE = 4
T_EXEC = 8
T_DIRTY = 16
T_GLOBAL = 32

SIZE_MASK = (0, 0xFF, 0xFFFF, 0, M32)


@kernel("v", "sii")
def exc(s, vec, err):
    """Record a pending exception (the first one wins)."""
    if s[D_EXC] < 0:
        s[D_EXC] = vec
        s[D_ERR] = err


# ---------------------------------------------------------------- physical bus
@kernel("v", "si")
def bus_miss(s, p):
    if s[STRICT_BUS] != 0 and s[BUS_ADDR] < 0:
        s[BUS_ADDR] = p


@kernel("i", "srii")
def phys_read(s, ram, p, size):
    n = ram.shape[0]
    if p >= 0 and p + size <= n:
        v = 0
        for i in range(size):
            v |= np.int64(ram[p + i]) << (8 * i)
        return v
    v = 0
    for i in range(size):
        q = p + i
        if 0 <= q < n:
            v |= np.int64(ram[q]) << (8 * i)
        else:
            bus_miss(s, q)
            v |= 0xFF << (8 * i)
    return v


@inline_kernel
def in_rom(s, p, size):
    """Whether physical ``[p, p + size)`` meets the read-only ROM range."""
    return p < s[ROM_HI] and p + size > s[ROM_LO]


@kernel("v", "sriii")
def phys_write(s, ram, p, size, v):
    """Every guest write to RAM ends here; bytes in the ROM range are dropped."""
    n = ram.shape[0]
    for i in range(size):
        q = p + i
        if 0 <= q < n:
            if q < s[ROM_LO] or q >= s[ROM_HI]:
                ram[q] = (v >> (8 * i)) & 0xFF
        else:
            bus_miss(s, q)


# ---------------------------------------------------------------- TLB
# Two-way set-associative: a page can sit in either entry of its set, so two pages whose
# sets collide (buffers a power of two apart) do not evict each other.  The set index mixes
# in higher page-number bits, so pages 1 MiB (or 2, 4 ... MiB) apart land in different sets.
@inline_kernel
def tlb_set(vpn):
    """First slot of the TLB set of linear page ``vpn``."""
    return TLB + 3 * TLB_WAYS * ((vpn ^ (vpn >> 7)) & (TLB_SETS - 1))


@inline_kernel
def tlb_lookup(s, vpn):
    """Slot of the TLB entry caching linear page ``vpn``, or -1."""
    k = tlb_set(vpn)
    if s[k] == vpn:
        return k
    if s[k + 3] == vpn:
        return k + 3
    return -1


@kernel("v", "siii")
def tlb_fill(s, vpn, phys, perms):
    """Cache a translation: in place if the page is cached, else in way 0 of its set, the
    entry there moving to way 1 (the older one leaves)."""
    k = tlb_lookup(s, vpn)
    if k < 0:
        k = tlb_set(vpn)
        s[k + 3] = s[k]
        s[k + 4] = s[k + 1]
        s[k + 5] = s[k + 2]
    s[k] = vpn
    s[k + 1] = phys
    s[k + 2] = perms


@kernel("v", "sb")
def tlb_flush(s, keep_global):
    """Drop cached translations (CR3 load keeps global pages when CR4.PGE)."""
    for i in range(TLB_N):
        k = TLB + 3 * i
        if keep_global and (s[k + 2] & T_GLOBAL):
            continue
        s[k] = -1
    s[D_FPAGE] = -1


@kernel("v", "si")
def tlb_flush_page(s, lin):
    k = tlb_lookup(s, lin >> 12)
    if k >= 0:
        s[k] = -1
    s[D_FPAGE] = -1


@kernel("i", "si")
def need_bits(s, acc):
    """TLB permission bits an access of kind ``acc`` requires."""
    need = 0
    if acc & ACC_USER:
        need |= T_UREAD
        if acc & ACC_WRITE:
            need |= T_UWRITE | T_DIRTY
    elif acc & ACC_WRITE:
        need |= T_SWRITE | T_DIRTY
    if acc & ACC_FETCH:
        need |= T_EXEC
    return need


@kernel("i", "siiib")
def _pf(s, lin, acc, err, commit):
    if commit:
        if acc & ACC_WRITE:
            err |= PFE_W
        if acc & ACC_USER:
            err |= PFE_U
        # The I/D bit is reported only when NX is in use (PAE with EFER.NXE).
        if (acc & ACC_FETCH) and (s[EFER] & EFER_NXE) and (s[CR4] & CR4_PAE):
            err |= PFE_I
        if s[D_EXC] < 0:
            s[CR2] = lin & M32
        exc(s, PF_, err)
    return -1


# ---------------------------------------------------------------- page walk
@kernel("i", "sriib")
def walk(s, ram, lin, acc, commit):
    """Walk the page tables for ``lin`` (SDM vol. 3, 4.3 and 4.4).

    2-level (CR4.PAE = 0)::

        31      22 21      12 11        0
        | dir idx | tbl idx  |  offset   |    CR3 -> PDE -> PTE (or 4 MiB PDE with CR4.PSE)

    PAE::

        31 30 29   21 20   12 11      0
        |pdpt| dir  | tbl   | offset  |   CR3 -> PDPTE -> PDE (2 MiB if PS) -> PTE

    With ``commit`` the walk sets Accessed bits on the way down and, once the
    access is known to be allowed, Accessed/Dirty on the leaf, fills the TLB,
    and on failure records #PF (CR2 and error code).  Without ``commit`` it
    has no side effect at all (the debugger view).  Returns the physical
    address, or -1.
    """
    write = (acc & ACC_WRITE) != 0
    user = (acc & ACC_USER) != 0
    fetch = (acc & ACC_FETCH) != 0
    cr4 = s[CR4]
    nxe = (s[EFER] & EFER_NXE) != 0
    err = 0
    allow_u = True
    allow_w = True
    nx = False
    glob = False
    a20 = ~s[A20_CLEAR]         # the A20 gate: every physical address below is masked
    leaf_addr = -1
    leaf = 0
    large = False
    if cr4 & CR4_PAE:
        pdpte_addr = ((s[CR3] & 0xFFFFFFE0) + ((lin >> 30) & 3) * 8) & a20
        pdpte = phys_read(s, ram, pdpte_addr, 8)
        if (pdpte & 1) == 0:
            return _pf(s, lin, acc, 0, commit)
        if (pdpte >> 52) != 0:    # NX and high bits are reserved in a PDPTE
            return _pf(s, lin, acc, PFE_P | PFE_RSVD, commit)
        pde_addr = ((pdpte & 0xFFFFFF000) + ((lin >> 21) & 0x1FF) * 8) & a20
        pde = phys_read(s, ram, pde_addr, 8)
        if (pde & 1) == 0:
            return _pf(s, lin, acc, 0, commit)
        if (pde >> 63) & 1:
            if not nxe:
                return _pf(s, lin, acc, PFE_P | PFE_RSVD, commit)
            nx = True
        if (pde >> 52) & 0x7FF:
            return _pf(s, lin, acc, PFE_P | PFE_RSVD, commit)
        allow_u = (pde & 4) != 0
        allow_w = (pde & 2) != 0
        if pde & 0x80:
            large = True
            leaf_addr = pde_addr
            leaf = pde
            phys = (pde & 0xFFFE00000) | (lin & 0x1FF000)
        else:
            if commit and (pde & 0x20) == 0:
                phys_write(s, ram, pde_addr, 4, (pde | 0x20) & M32)
            pte_addr = ((pde & 0xFFFFFF000) + ((lin >> 12) & 0x1FF) * 8) & a20
            pte = phys_read(s, ram, pte_addr, 8)
            if (pte & 1) == 0:
                return _pf(s, lin, acc, 0, commit)
            if (pte >> 63) & 1:
                if not nxe:
                    return _pf(s, lin, acc, PFE_P | PFE_RSVD, commit)
                nx = True
            if (pte >> 52) & 0x7FF:
                return _pf(s, lin, acc, PFE_P | PFE_RSVD, commit)
            allow_u = allow_u and (pte & 4) != 0
            allow_w = allow_w and (pte & 2) != 0
            leaf_addr = pte_addr
            leaf = pte
            phys = pte & 0xFFFFFF000
    else:
        pde_addr = ((s[CR3] & 0xFFFFF000) + ((lin >> 22) << 2)) & a20
        pde = phys_read(s, ram, pde_addr, 4)
        if (pde & 1) == 0:
            return _pf(s, lin, acc, 0, commit)
        allow_u = (pde & 4) != 0
        allow_w = (pde & 2) != 0
        if (pde & 0x80) and (cr4 & CR4_PSE):
            large = True
            leaf_addr = pde_addr
            leaf = pde
            # PSE-36: PDE bits 13-20 are physical address bits 32-39.
            phys = (pde & 0xFFC00000) | (((pde >> 13) & 0xFF) << 32) | (lin & 0x3FF000)
        else:
            if commit and (pde & 0x20) == 0:
                phys_write(s, ram, pde_addr, 4, (pde | 0x20) & M32)
            pte_addr = ((pde & 0xFFFFF000) + (((lin >> 12) & 0x3FF) << 2)) & a20
            pte = phys_read(s, ram, pte_addr, 4)
            if (pte & 1) == 0:
                return _pf(s, lin, acc, 0, commit)
            allow_u = allow_u and (pte & 4) != 0
            allow_w = allow_w and (pte & 2) != 0
            leaf_addr = pte_addr
            leaf = pte
            phys = pte & 0xFFFFF000
    phys &= a20
    glob = (leaf & 0x100) != 0 and (cr4 & CR4_PGE) != 0
    wp = (s[CR0] & CR0_WP) != 0
    # Permission check (SDM vol. 3, 4.6).
    if user and not allow_u:
        err = PFE_P
    elif write and not allow_w and (user or wp):
        err = PFE_P
    elif fetch and nx:
        err = PFE_P
    if err:
        return _pf(s, lin, acc, err, commit)
    if commit:
        new = leaf | 0x20
        if write:
            new |= 0x40
        if new != leaf:
            phys_write(s, ram, leaf_addr, 4, new & M32)
        perms = T_EXEC if not nx else 0
        if allow_u:
            perms |= T_UREAD
            if allow_w:
                perms |= T_UWRITE
        if allow_w or not wp:
            perms |= T_SWRITE
        if new & 0x40:
            perms |= T_DIRTY
        if glob:
            perms |= T_GLOBAL
        if in_rom(s, phys, 4096):
            perms &= ~(T_UWRITE | T_SWRITE)     # ROM: every write walks to phys_write
        tlb_fill(s, lin >> 12, phys, perms)
    _ = large
    return phys | (lin & 0xFFF)


@kernel("i", "srii")
def translate(s, ram, lin, acc):
    """Linear to physical for an access of kind ``acc``; -1 and #PF on failure."""
    if (s[CR0] & CR0_PG) == 0:
        return lin & ~s[A20_CLEAR]
    k = tlb_lookup(s, lin >> 12)
    if k >= 0:
        need = need_bits(s, acc)
        if (s[k + 2] & need) == need:
            return s[k + 1] | (lin & 0xFFF)
    return walk(s, ram, lin, acc, True)


# ---------------------------------------------------------------- linear access
@kernel("i", "sriii")
def lin_read(s, ram, lin, size, acc):
    lin &= M32
    if (lin & 0xFFF) + size <= 4096:
        p = translate(s, ram, lin, acc)
        if p < 0:
            return 0
        v = phys_read(s, ram, p, size)
        if s[MH_N] > 0:
            mem_hook(s, MH_READ, lin, p, size, 0, size, v)
        return v
    # Crosses a page: translate both pages before reading anything.
    first = 4096 - (lin & 0xFFF)
    p1 = translate(s, ram, lin, acc)
    if p1 < 0:
        return 0
    p2 = translate(s, ram, (lin + first) & M32, acc)
    if p2 < 0:
        return 0
    v = phys_read(s, ram, p1, first) | (phys_read(s, ram, p2, size - first) << (8 * first))
    if s[MH_N] > 0:
        mem_hook(s, MH_READ, lin, p1, first, p2, size, v)
    return v


@kernel("v", "sriiii")
def lin_write(s, ram, lin, size, v, acc):
    lin &= M32
    acc |= ACC_WRITE
    if (lin & 0xFFF) + size <= 4096:
        p = translate(s, ram, lin, acc)
        if p < 0:
            return
        phys_write(s, ram, p, size, v)
        if s[MH_N] > 0:
            mem_hook(s, MH_WRITE, lin, p, size, 0, size, v)
        return
    first = 4096 - (lin & 0xFFF)
    p1 = translate(s, ram, lin, acc)
    if p1 < 0:
        return
    p2 = translate(s, ram, (lin + first) & M32, acc)
    if p2 < 0:
        return
    phys_write(s, ram, p1, first, v)
    phys_write(s, ram, p2, size - first, v >> (8 * first))
    if s[MH_N] > 0:
        mem_hook(s, MH_WRITE, lin, p1, first, p2, size, v)


@kernel("b", "sriii")
def lin_check_write(s, ram, lin, size, acc):
    """Translate for a later write (both pages); False and #PF on failure."""
    lin &= M32
    acc |= ACC_WRITE
    if translate(s, ram, lin, acc) < 0:
        return False
    end = (lin + size - 1) & M32
    if (end >> 12) != (lin >> 12):
        if translate(s, ram, end, acc) < 0:
            return False
    return True


# ---------------------------------------------------------------- segmentation
@kernel("i", "si")
def seg_fault(s, seg):
    exc(s, SS_ if seg == SS else GP_, 0)
    return -1


@kernel("i", "siiib")
def seg_lin(s, seg, off, size, write):
    """Segment-check ``size`` bytes at ``seg:off``; linear address or -1.

    Checks the usable bit (null selector), type (writes need a writable data
    segment, reads of code need the readable bit) and the limit, including
    expand-down segments (SDM vol. 3, 5.3).  #SS for SS, #GP(0) otherwise.
    """
    b = SEG + 4 * seg
    attr = s[b + 3]
    if (attr & A_USABLE) == 0:
        return seg_fault(s, seg)
    if attr & A_CODE:
        if write or (attr & A_W) == 0:
            # Reading execute-only code or writing any code segment.
            return seg_fault(s, seg)
    elif write and (attr & A_W) == 0:
        return seg_fault(s, seg)
    lim = s[b + 2]
    last = off + size - 1
    if (attr & (A_CODE | A_E)) == A_E:
        upper = M32 if (attr & A_DB) else 0xFFFF
        if off <= lim or last > upper:
            return seg_fault(s, seg)
    elif last > lim:
        return seg_fault(s, seg)
    return (s[b + 1] + off) & M32


@kernel("i", "s")
def user_acc(s):
    return ACC_USER if s[CPL] == 3 else 0


@kernel("i", "sriii")
def read_mem(s, ram, seg, off, size):
    lin = seg_lin(s, seg, off, size, False)
    if lin < 0:
        return 0
    return lin_read(s, ram, lin, size, user_acc(s))


@kernel("v", "sriiii")
def write_mem(s, ram, seg, off, size, v):
    lin = seg_lin(s, seg, off, size, True)
    if lin < 0:
        return
    lin_write(s, ram, lin, size, v & SIZE_MASK[size], user_acc(s))


@kernel("b", "sriii")
def check_write_mem(s, ram, seg, off, size):
    """Would a write of ``size`` bytes at seg:off succeed?  (Faults if not.)"""
    lin = seg_lin(s, seg, off, size, True)
    if lin < 0:
        return False
    return lin_check_write(s, ram, lin, size, user_acc(s))


@kernel("i", "srii")
def sys_read(s, ram, lin, size):
    """Implicit supervisor read (descriptor tables, TSS): CPL is not used."""
    return lin_read(s, ram, lin, size, ACC_READ)


@kernel("v", "sriii")
def sys_write(s, ram, lin, size, v):
    lin_write(s, ram, lin, size, v, ACC_READ)
