"""The first kernel's machine state, built in simulated RAM (SPEC §3, §6, §8).

kjcore does not run a real Linux kernel; it builds in RAM what the 2.6.27 i386 kernel has in
place at the moment ``machine_kexec`` calls the relocation routine, at fixed physical
addresses inside the reserved low region ``[0, kernel_reserved)`` (at least 64 KiB: everything
below fits in the first 16 pages):

====================  ==========  ======================================================
physical address      name        content
====================  ==========  ======================================================
``0x0000``            --          unused (real-mode IVT / BIOS data area on a PC)
``0x1000``            text        kernel text: the return stub (``hlt; jmp .-1``) the
                                  relocation routine returns to, and the exception stub
``0x2000``            swapper     the kernel page directory (``swapper_pg_dir``); with
                                  ``pae=True`` the PDPT
``0x3000``            kernel_pmd  PAE only: the page directory behind PDPT entry 3
``0x4000``            low_pte     4 KiB page table of the lowest large page
``0x5000``            gdt page    GDT (+0x000, 32 descriptors), TSS (+0x100), per-CPU area
                                  (+0x200) holding CPU 0's crash notes (+0x400,
                                  :mod:`kjcore.kdump.notes`), IDT (+0x800, 256 gates)
``0x6000``            kexec_pgd   kexec page tables (zero at boot, written by the routine)
``0x7000``            kexec_pte0
``0x8000``            kexec_pte1
``0x9000``            kexec_pmd0  (PAE only, reserved in both modes)
``0xA000``            kexec_pmd1  (PAE only, reserved in both modes)
``0xB000-0xD000``     split pool  page tables for splitting a PAE 2 MiB page (NX edits)
``0xE000-0xFFFF``     stack       the 8 KiB kernel stack (THREAD_SIZE in 2.6.27)
====================  ==========  ======================================================

The direct map: virtual ``PAGE_OFFSET + p`` maps physical ``p`` for all of RAM.  kjcore limits
RAM to 1 GiB (``MAX_RAM_SIZE``) and direct-maps every byte of it -- there is no highmem and no
vmalloc area, unlike a real 32-bit kernel, which stops the direct map at 896 MiB.  Large pages
are used: 4 MiB PSE pages in 2-level mode (CR4.PSE), 2 MiB pages with PAE.  The lowest large
page (``[0, 4 MiB)`` resp. ``[0, 2 MiB)``) is mapped through a 4 KiB page table so that the
kernel text page alone is executable when ``nx=True``.  Large pages reach past the end of RAM
when ``ram_size`` is not a multiple of their size; those addresses read as an empty bus.
No entry is global and CR4.PGE stays clear, so every CR3 load flushes every translation: the
relocation routine cannot depend on stale TLB entries on any CPU model.  User space (below
``PAGE_OFFSET``) is not mapped.

With ``nx=True`` (PAE only) every kernel mapping carries NX except the kernel text page, and
EFER.NXE is set.  :func:`set_page_executable` is the page-attribute edit that
``machine_kexec_prepare`` / ``machine_kexec_cleanup`` make on the control page: it splits the
2 MiB page holding it into a 4 KiB table from the split pool, and merges it back once the
whole table is non-executable again.

>>> import numpy as np
>>> ram = np.zeros(16 << 20, dtype=np.uint8)
>>> layout = build_first_kernel(ram, ram_size=len(ram), kernel_reserved=4 << 20, pae=True,
...                             nx=True)
>>> hex(translate(ram, layout, PAGE_OFFSET + 0x123456)[0])
'0x123456'
>>> translate(ram, layout, layout.text_va)[1], translate(ram, layout, layout.stack_top_va - 4)[1]
(True, False)
"""
import struct
from dataclasses import dataclass

import numpy as np

from .constants import MAX_RAM_SIZE, PAGE_OFFSET, PAGE_SIZE
from .cpu.state import (
    CR0_AM,
    CR0_EM,
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR0_WP,
    CR4_PAE,
    CR4_PSE,
    EFER_NXE,
    SEG_KEYS,
    SEG_NAMES,
)

# ---------------------------------------------------------------------------------- bits
MSR_EFER = 0xC0000080
EFLAGS_RESERVED = 0x2            # bit 1 always reads as one

PTE_PRESENT = 0x001
PTE_RW = 0x002
PTE_ACCESSED = 0x020
PTE_DIRTY = 0x040
PTE_PSE = 0x080                  # in a page-directory entry: a large page
PTE_NX = 1 << 63                 # PAE entries only, with EFER.NXE
#: PAGE_KERNEL / _KERNPG_TABLE: what the kernel uses for its own mappings and tables
PTE_KERNEL = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY
PTE_ADDR_MASK = 0x000FFFFFFFFFF000

# ----------------------------------------------------------------------------- selectors
# The 2.6.27 i386 GDT layout (GDT_ENTRIES = 32).
GDT_ENTRIES = 32
GDT_ENTRY_KERNEL_CS = 12
GDT_ENTRY_KERNEL_DS = 13
GDT_ENTRY_DEFAULT_USER_CS = 14
GDT_ENTRY_DEFAULT_USER_DS = 15
GDT_ENTRY_TSS = 16
GDT_ENTRY_PERCPU = 27
KERNEL_CS = GDT_ENTRY_KERNEL_CS * 8                  # 0x60
KERNEL_DS = GDT_ENTRY_KERNEL_DS * 8                  # 0x68
USER_CS = GDT_ENTRY_DEFAULT_USER_CS * 8 + 3          # 0x73
USER_DS = GDT_ENTRY_DEFAULT_USER_DS * 8 + 3          # 0x7B
TSS_SELECTOR = GDT_ENTRY_TSS * 8                     # 0x80
KERNEL_PERCPU = GDT_ENTRY_PERCPU * 8                 # 0xD8

# Descriptor access bytes (SDM vol. 3, 3.4.5): P | DPL | S | type.
ACCESS_CODE0 = 0x9B              # present, ring 0, code, execute/read, accessed
ACCESS_DATA0 = 0x93              # present, ring 0, data, read/write, accessed
ACCESS_CODE3 = 0xFB
ACCESS_DATA3 = 0xF3
ACCESS_TSS_BUSY = 0x8B           # present, ring 0, system, 32-bit TSS (busy: TR holds it)
FLAGS_4K_32 = 0xC                # G = 1 (4 KiB granularity), D/B = 1 (32-bit)
FLAGS_BYTE = 0x0
TSS_LIMIT = 0x67                 # 104-byte TSS, no I/O permission bitmap

# ------------------------------------------------------------------ fixed physical layout
TEXT = 0x1000
SWAPPER_PG_DIR = 0x2000
KERNEL_PMD = 0x3000
LOW_PTE = 0x4000
GDT = 0x5000
TSS = GDT + 0x100
PERCPU = GDT + 0x200
IDT = GDT + 0x800
KEXEC_PGD = 0x6000
KEXEC_PTE0 = 0x7000
KEXEC_PTE1 = 0x8000
KEXEC_PMD0 = 0x9000
KEXEC_PMD1 = 0xA000
SPLIT_POOL = (0xB000, 0xC000, 0xD000)
STACK_BOTTOM = 0xE000
STACK_TOP = 0x10000
#: bytes the layout needs: the minimum ``kernel_reserved``
RESERVED_MIN = STACK_TOP

#: offsets in the text page
TEXT_RETURN = 0x0                # machine_kexec continues here when relocate_kernel returns
TEXT_FAULT = 0x10                # every IDT gate points here (a kernel oops, simplified)
_STUB = bytes([0xF4, 0xEB, 0xFD])    # hlt; jmp back to the hlt

#: ESP of the first kernel while it runs machine_kexec: the frames above it are callers'
STACK_IN_USE = 0x200


@dataclass(frozen=True)
class FirstKernelLayout:
    """Where the first kernel's structures live (physical addresses) and how it is configured.

    Virtual addresses are ``PAGE_OFFSET + physical`` (the ``*_va`` properties).
    """

    ram_size: int
    kernel_reserved: int
    pae: bool
    nx: bool
    text: int = TEXT
    pgd: int = SWAPPER_PG_DIR            # CR3: page directory, or PDPT with PAE
    kernel_pmd: int = KERNEL_PMD         # PAE: page directory behind PDPT[3]
    low_pte: int = LOW_PTE
    gdt: int = GDT
    tss: int = TSS
    percpu: int = PERCPU
    idt: int = IDT
    kexec_pgd: int = KEXEC_PGD
    kexec_pte0: int = KEXEC_PTE0
    kexec_pte1: int = KEXEC_PTE1
    kexec_pmd0: int = KEXEC_PMD0
    kexec_pmd1: int = KEXEC_PMD1
    split_pool: tuple = SPLIT_POOL
    stack_bottom: int = STACK_BOTTOM
    stack_top: int = STACK_TOP

    @property
    def large_page(self):
        """Size of a direct-map large page: 2 MiB with PAE, 4 MiB (PSE) without."""
        return (2 << 20) if self.pae else (4 << 20)

    @property
    def text_va(self):
        return PAGE_OFFSET + self.text

    @property
    def return_address(self):
        """Kernel VA the relocation routine returns to (a ``hlt``: the machine stops there)."""
        return PAGE_OFFSET + self.text + TEXT_RETURN

    @property
    def stack_top_va(self):
        return PAGE_OFFSET + self.stack_top

    @property
    def kernel_esp(self):
        """ESP of the first kernel inside machine_kexec, before it pushes the call."""
        return PAGE_OFFSET + self.stack_top - STACK_IN_USE

    def va(self, phys):
        """Kernel virtual address of a physical address of the direct map."""
        return (PAGE_OFFSET + phys) & 0xFFFFFFFF

    def kexec_tables(self):
        """Physical addresses of the kexec page tables the routine rewrites at each exec."""
        base = (self.kexec_pgd, self.kexec_pte0, self.kexec_pte1)
        return base + ((self.kexec_pmd0, self.kexec_pmd1) if self.pae else ())


# ------------------------------------------------------------------------ RAM helpers
def _put32(ram, addr, value):
    ram[addr:addr + 4] = np.frombuffer(struct.pack("<I", value & 0xFFFFFFFF), dtype=np.uint8)


def _put64(ram, addr, value):
    ram[addr:addr + 8] = np.frombuffer(struct.pack("<Q", value), dtype=np.uint8)


def _get32(ram, addr):
    return int(ram[addr:addr + 4].view("<u4")[0])


def _get64(ram, addr):
    return int(ram[addr:addr + 8].view("<u8")[0])


def descriptor(base, limit, access, flags):
    """An 8-byte segment descriptor (SDM vol. 3, figure 3-8) as an integer."""
    return ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40)
            | (((limit >> 16) & 0xF) << 48) | ((flags & 0xF) << 52) | (((base >> 24) & 0xFF) << 56))


def _gate(offset, selector):
    """A 32-bit interrupt gate, ring 0, present (SDM vol. 3, figure 6-2)."""
    return (offset & 0xFFFF) | (selector << 16) | (0x8E << 40) | ((offset >> 16) << 48)


# ------------------------------------------------------------------------------- builder
def build_first_kernel(ram, *, ram_size, kernel_reserved, pae, nx):
    """Write the first kernel's page tables, GDT, IDT, TSS, text stubs and stack into ``ram``.

    Only ``[0, RESERVED_MIN)`` is written (the rest of ``kernel_reserved`` is the kernel's own
    business and stays as it is).  Returns the :class:`FirstKernelLayout`.
    """
    ram_size = int(ram_size)
    kernel_reserved = int(kernel_reserved)
    if not isinstance(ram, np.ndarray) or ram.dtype != np.uint8 or ram.ndim != 1:
        raise TypeError("ram must be a 1-D numpy uint8 array")
    if len(ram) != ram_size:
        raise ValueError(f"len(ram)={len(ram):#x} differs from ram_size={ram_size:#x}")
    if ram_size % PAGE_SIZE or ram_size > MAX_RAM_SIZE:
        raise ValueError(f"ram_size={ram_size:#x} must be page-aligned and at most "
                         f"{MAX_RAM_SIZE:#x} (the first kernel direct-maps all of RAM)")
    if kernel_reserved < RESERVED_MIN or kernel_reserved > ram_size:
        raise ValueError(f"kernel_reserved={kernel_reserved:#x} must hold the first kernel's "
                         f"{RESERVED_MIN:#x} bytes and fit in RAM")
    if nx and not pae:
        raise ValueError("nx=True needs pae=True (NX lives in PAE page-table entries)")
    layout = FirstKernelLayout(ram_size=ram_size, kernel_reserved=kernel_reserved,
                               pae=bool(pae), nx=bool(nx))
    ram[:RESERVED_MIN] = 0
    _build_text(ram, layout)
    if layout.pae:
        _build_pae_tables(ram, layout)
    else:
        _build_2level_tables(ram, layout)
    _build_descriptors(ram, layout)
    return layout


def _build_text(ram, layout):
    ram[layout.text + TEXT_RETURN:layout.text + TEXT_RETURN + len(_STUB)] = list(_STUB)
    ram[layout.text + TEXT_FAULT:layout.text + TEXT_FAULT + len(_STUB)] = list(_STUB)


def _pte(layout, phys, *, large=False):
    """The direct-map entry for ``phys`` (NX unless it is the kernel text page)."""
    entry = phys | PTE_KERNEL | (PTE_PSE if large else 0)
    if layout.nx and not _is_text(layout, phys, layout.large_page if large else PAGE_SIZE):
        entry |= PTE_NX
    return entry


def _is_text(layout, phys, size):
    return phys < layout.text + PAGE_SIZE and layout.text < phys + size


def _build_2level_tables(ram, layout):
    large = layout.large_page
    # PGD entries 768.. cover PAGE_OFFSET..; entry 768 goes through the low 4 KiB table.
    for i in range(large // PAGE_SIZE):
        phys = i * PAGE_SIZE
        if phys < layout.ram_size:
            _put32(ram, layout.low_pte + 4 * i, _pte(layout, phys))
    first = PAGE_OFFSET >> 22
    _put32(ram, layout.pgd + 4 * first, layout.low_pte | PTE_KERNEL)
    for phys in range(large, layout.ram_size, large):
        _put32(ram, layout.pgd + 4 * (first + (phys >> 22)), _pte(layout, phys, large=True))


def _build_pae_tables(ram, layout):
    large = layout.large_page
    # PDPT entries: PRESENT only (RW/US are reserved in a PAE PDPTE); only entry 3 is used.
    _put64(ram, layout.pgd + 8 * (PAGE_OFFSET >> 30), layout.kernel_pmd | PTE_PRESENT)
    for i in range(large // PAGE_SIZE):
        phys = i * PAGE_SIZE
        if phys < layout.ram_size:
            _put64(ram, layout.low_pte + 8 * i, _pte(layout, phys))
    _put64(ram, layout.kernel_pmd, layout.low_pte | PTE_KERNEL)
    for phys in range(large, layout.ram_size, large):
        _put64(ram, layout.kernel_pmd + 8 * (phys >> 21), _pte(layout, phys, large=True))


def _build_descriptors(ram, layout):
    gdt = [0] * GDT_ENTRIES
    gdt[GDT_ENTRY_KERNEL_CS] = descriptor(0, 0xFFFFF, ACCESS_CODE0, FLAGS_4K_32)
    gdt[GDT_ENTRY_KERNEL_DS] = descriptor(0, 0xFFFFF, ACCESS_DATA0, FLAGS_4K_32)
    gdt[GDT_ENTRY_DEFAULT_USER_CS] = descriptor(0, 0xFFFFF, ACCESS_CODE3, FLAGS_4K_32)
    gdt[GDT_ENTRY_DEFAULT_USER_DS] = descriptor(0, 0xFFFFF, ACCESS_DATA3, FLAGS_4K_32)
    gdt[GDT_ENTRY_TSS] = descriptor(layout.va(layout.tss), TSS_LIMIT, ACCESS_TSS_BUSY, FLAGS_BYTE)
    gdt[GDT_ENTRY_PERCPU] = descriptor(layout.va(layout.percpu), 0xFFFFF, ACCESS_DATA0,
                                       FLAGS_4K_32)
    for i, d in enumerate(gdt):
        _put64(ram, layout.gdt + 8 * i, d)
    # TSS: ESP0 / SS0 for a ring 3 -> ring 0 transition (offsets 4 and 8); I/O map base past
    # the limit (offset 102) = no I/O bitmap.
    _put32(ram, layout.tss + 4, layout.stack_top_va)
    _put32(ram, layout.tss + 8, KERNEL_DS)
    ram[layout.tss + 102:layout.tss + 104] = [TSS_LIMIT + 1, 0]
    fault = layout.text_va + TEXT_FAULT
    for v in range(256):
        _put64(ram, layout.idt + 8 * v, _gate(fault, KERNEL_CS))


# ---------------------------------------------------------------------------- CPU state
#: the data and code segment registers (all but LDTR and TR)
_SEGMENTS = SEG_NAMES[:6]


def _segment(selector, base, limit, access, flags):
    return dict(zip(SEG_KEYS, (selector, base, limit, access, flags)))


def initial_cpu_state(layout):
    """Register values of the first kernel when it is about to call the relocation routine.

    A plain dict of ints.  Segment registers appear as ``<seg>_selector``, ``<seg>_base``,
    ``<seg>_limit`` (byte-granular effective limit), ``<seg>_access`` (descriptor byte 5:
    P | DPL | S | type) and ``<seg>_flags`` (the G, D/B, L, AVL nibble) for cs, ds, es, fs,
    gs, ss, plus ``tr_*`` and ``ldtr_*``.  The descriptor caches agree with the GDT in RAM.
    ``ds``/``es`` hold ``__USER_DS`` and ``fs`` the per-CPU segment, as in a 2.6.27 kernel
    entered by a system call; :func:`kjcore.relocate.prepare_call` reloads the flat kernel
    segments as machine_kexec does.
    """
    cr4 = CR4_PAE | CR4_PSE if layout.pae else CR4_PSE
    state = {
        "eax": 0, "ebx": 0, "ecx": 0, "edx": 0, "esi": 0, "edi": 0, "ebp": 0,
        "esp": layout.kernel_esp,
        "eip": layout.return_address,
        # interrupts off (local_irq_disable in kernel_kexec) and ZF/PF from the last test
        "eflags": EFLAGS_RESERVED | 0x44,
        # no FPU on kjcore's CPU: EM set, TS as left by lazy FPU switching
        "cr0": CR0_PE | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG,
        "cr2": 0,
        "cr3": layout.pgd,
        "cr4": cr4,
        "efer": EFER_NXE if layout.nx else 0,
        "gdtr_base": layout.va(layout.gdt), "gdtr_limit": GDT_ENTRIES * 8 - 1,
        "idtr_base": layout.va(layout.idt), "idtr_limit": 256 * 8 - 1,
    }
    flat0_code = (0, 0xFFFFFFFF, ACCESS_CODE0, FLAGS_4K_32)
    flat0_data = (0, 0xFFFFFFFF, ACCESS_DATA0, FLAGS_4K_32)
    flat3_data = (0, 0xFFFFFFFF, ACCESS_DATA3, FLAGS_4K_32)
    percpu = (layout.va(layout.percpu), 0xFFFFFFFF, ACCESS_DATA0, FLAGS_4K_32)
    segs = {"cs": _segment(KERNEL_CS, *flat0_code), "ss": _segment(KERNEL_DS, *flat0_data),
            "ds": _segment(USER_DS, *flat3_data), "es": _segment(USER_DS, *flat3_data),
            "fs": _segment(KERNEL_PERCPU, *percpu), "gs": _segment(0, 0, 0, 0, 0),
            "tr": _segment(TSS_SELECTOR, layout.va(layout.tss), TSS_LIMIT, ACCESS_TSS_BUSY,
                           FLAGS_BYTE),
            "ldtr": _segment(0, 0, 0, 0, 0)}
    for name, fields in segs.items():
        for key, value in fields.items():
            state[f"{name}_{key}"] = value
    return state


def flat_kernel_segments():
    """Selector/base/limit/access/flags of the flat kernel segments machine_kexec reloads."""
    state = {}
    for name in _SEGMENTS:
        sel, access = (KERNEL_CS, ACCESS_CODE0) if name == "cs" else (KERNEL_DS, ACCESS_DATA0)
        for key, value in _segment(sel, 0, 0xFFFFFFFF, access, FLAGS_4K_32).items():
            state[f"{name}_{key}"] = value
    return state


# --------------------------------------------------------------------------- page walks
def translate(ram, layout, va):
    """Walk the first kernel's page tables: ``(phys, executable)`` or None when not mapped.

    A side-effect-free reference walk (no A/D updates), used by the tests and debuggers.
    """
    va &= 0xFFFFFFFF
    if layout.pae:
        pdpte = _get64(ram, layout.pgd + 8 * (va >> 30))
        if not pdpte & PTE_PRESENT:
            return None
        pde = _get64(ram, (pdpte & PTE_ADDR_MASK) + 8 * ((va >> 21) & 511))
        if not pde & PTE_PRESENT:
            return None
        nx = bool(pde & PTE_NX)
        if pde & PTE_PSE:
            return (pde & PTE_ADDR_MASK & ~0x1FFFFF) | (va & 0x1FFFFF), not nx
        pte = _get64(ram, (pde & PTE_ADDR_MASK) + 8 * ((va >> 12) & 511))
        if not pte & PTE_PRESENT:
            return None
        return (pte & PTE_ADDR_MASK) | (va & 0xFFF), not (nx or pte & PTE_NX)
    pde = _get32(ram, layout.pgd + 4 * (va >> 22))
    if not pde & PTE_PRESENT:
        return None
    if pde & PTE_PSE:
        return (pde & 0xFFC00000) | (va & 0x3FFFFF), True
    pte = _get32(ram, (pde & 0xFFFFF000) + 4 * ((va >> 12) & 1023))
    if not pte & PTE_PRESENT:
        return None
    return (pte & 0xFFFFF000) | (va & 0xFFF), True


def set_page_executable(ram, layout, phys, executable):
    """Make the direct-map page of ``phys`` executable or not (set_pages_x / set_pages_nx).

    A no-op unless ``layout.nx`` (the kernel runs with NX enabled), as in machine_kexec_prepare
    and machine_kexec_cleanup.  A 2 MiB page whose attribute must change is split into a 4 KiB
    table from the split pool; a split table that is uniformly non-executable again is merged
    back into its 2 MiB page and returned to the pool.  The caller flushes the TLB (the kernel
    does a global flush after a page-attribute change).  Raises ``RuntimeError`` when the pool
    is exhausted (more than three 2 MiB regions hold an executable data page at once).
    """
    if not layout.nx:
        return
    phys = int(phys) & ~(PAGE_SIZE - 1)
    if not 0 <= phys < layout.ram_size:
        raise ValueError(f"phys={phys:#x} is outside the direct map (RAM)")
    if _is_text(layout, phys, PAGE_SIZE):
        return                      # the kernel text never changes attributes
    pmd_slot = layout.kernel_pmd + 8 * (phys >> 21)
    pde = _get64(ram, pmd_slot)
    if pde & PTE_PSE:
        if bool(pde & PTE_NX) != bool(executable):
            return                  # already as requested
        table = _free_split_table(ram, layout)
        base = pde & PTE_ADDR_MASK & ~0x1FFFFF
        attrs = pde & ~PTE_ADDR_MASK & ~PTE_PSE
        words = np.zeros(512, dtype=np.uint64)
        words[:] = attrs
        words += np.uint64(base) + np.arange(512, dtype=np.uint64) * np.uint64(PAGE_SIZE)
        ram[table:table + PAGE_SIZE] = words.view(np.uint8)
        _put64(ram, pmd_slot, table | PTE_KERNEL)
        pde = _get64(ram, pmd_slot)
    table = pde & PTE_ADDR_MASK
    slot = table + 8 * ((phys >> 12) & 511)
    pte = _get64(ram, slot)
    _put64(ram, slot, pte & ~PTE_NX if executable else pte | PTE_NX)
    if not executable and table in layout.split_pool:
        _try_merge(ram, layout, pmd_slot, table)


def _free_split_table(ram, layout):
    in_use = set()
    pmd = ram[layout.kernel_pmd:layout.kernel_pmd + PAGE_SIZE].view("<u8")
    for e in pmd.tolist():
        if e & PTE_PRESENT and not e & PTE_PSE:
            in_use.add(e & PTE_ADDR_MASK)
    for table in layout.split_pool:
        if table not in in_use:
            return table
    raise RuntimeError("no free page table left in the first kernel's split pool "
                       f"({len(layout.split_pool)} pages) to change a page's NX attribute")


def _try_merge(ram, layout, pmd_slot, table):
    words = ram[table:table + PAGE_SIZE].view("<u8")
    first = int(words[0])
    base = first & PTE_ADDR_MASK
    attrs = first & ~PTE_ADDR_MASK
    expect = (np.arange(512, dtype=np.uint64) * np.uint64(PAGE_SIZE) + np.uint64(base)) \
        | np.uint64(attrs)
    if base & 0x1FFFFF or not np.array_equal(words, expect):
        return
    _put64(ram, pmd_slot, base | attrs | PTE_PSE)
    ram[table:table + PAGE_SIZE] = 0
