"""The first kernel's state in RAM (SPEC §3): page tables, descriptors, NX edits."""
import struct

import numpy as np
import pytest

from kjcore import PAGE_OFFSET, PAGE_SIZE
from kjcore import first_kernel as fk
from kjcore.cpu import state as cpu_state
from kjcore.first_kernel import (
    build_first_kernel,
    initial_cpu_state,
    set_page_executable,
    translate,
)

MiB = 1 << 20


def build(ram_size=16 * MiB, reserved=4 * MiB, pae=False, nx=False, fill=None):
    ram = np.zeros(ram_size, dtype=np.uint8) if fill is None else np.full(ram_size, fill, np.uint8)
    return ram, build_first_kernel(ram, ram_size=ram_size, kernel_reserved=reserved, pae=pae,
                                   nx=nx)


def decode_descriptor(d):
    base = ((d >> 16) & 0xFFFFFF) | (((d >> 56) & 0xFF) << 24)
    limit = (d & 0xFFFF) | (((d >> 48) & 0xF) << 16)
    flags = (d >> 52) & 0xF
    if flags & 0x8:
        limit = (limit << 12) | 0xFFF
    return base, limit, (d >> 40) & 0xFF, flags


@pytest.mark.parametrize("pae,nx", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("ram_size", [16 * MiB, 6 * MiB + 3 * PAGE_SIZE])
def test_direct_map_covers_all_ram(pae, nx, ram_size):
    ram, layout = build(ram_size, 64 << 10, pae, nx)
    for phys in range(0, ram_size, PAGE_SIZE):
        pa, x = translate(ram, layout, PAGE_OFFSET + phys + 0x7C)
        assert pa == phys + 0x7C
        assert x == (not nx or phys == layout.text)
    assert translate(ram, layout, 0x1000) is None              # no user / identity mapping
    assert translate(ram, layout, PAGE_OFFSET - 1) is None


def test_full_gigabyte_is_direct_mapped():
    for pae in (False, True):
        ram, layout = build(1 << 30, 64 << 10, pae, pae)
        for phys in (0, 0x3FFFF000, 0x12345000, 0x3FE00000, 0x20000000):
            assert translate(ram, layout, PAGE_OFFSET + phys)[0] == phys
        assert translate(ram, layout, 0xFFFFFFFF)[0] == 0x3FFFFFFF


def test_only_the_first_kernel_pages_are_written():
    ram, layout = build(fill=0xA5, pae=True, nx=True)
    assert np.all(ram[fk.RESERVED_MIN:] == 0xA5)
    # The kexec page tables are zero at boot (the routine fills them at each exec).
    for table in layout.kexec_tables():
        assert not ram[table:table + PAGE_SIZE].any()


def test_page_table_entry_format():
    ram, layout = build(pae=False)
    pgd = ram[layout.pgd:layout.pgd + PAGE_SIZE].view("<u4")
    assert pgd[768] == layout.low_pte | fk.PTE_KERNEL
    assert pgd[769] == (4 * MiB) | fk.PTE_KERNEL | fk.PTE_PSE
    assert not pgd[:768].any() and not pgd[772:].any()
    ram, layout = build(pae=True, nx=True)
    pdpt = ram[layout.pgd:layout.pgd + 32].view("<u8")
    assert pdpt.tolist() == [0, 0, 0, layout.kernel_pmd | fk.PTE_PRESENT]
    pmd = ram[layout.kernel_pmd:layout.kernel_pmd + PAGE_SIZE].view("<u8")
    assert int(pmd[0]) == layout.low_pte | fk.PTE_KERNEL                # no NX on a table
    assert int(pmd[1]) == (2 * MiB) | fk.PTE_KERNEL | fk.PTE_PSE | fk.PTE_NX
    low = ram[layout.low_pte:layout.low_pte + PAGE_SIZE].view("<u8")
    assert int(low[1]) == layout.text | fk.PTE_KERNEL                   # text: executable
    assert int(low[2]) == 0x2000 | fk.PTE_KERNEL | fk.PTE_NX


def test_layout_rules():
    ram = np.zeros(16 * MiB, dtype=np.uint8)
    with pytest.raises(ValueError, match="kernel_reserved"):
        build_first_kernel(ram, ram_size=16 * MiB, kernel_reserved=32 << 10, pae=False, nx=False)
    with pytest.raises(ValueError, match="nx"):
        build_first_kernel(ram, ram_size=16 * MiB, kernel_reserved=4 * MiB, pae=False, nx=True)
    with pytest.raises(ValueError, match="ram_size"):
        build_first_kernel(ram, ram_size=8 * MiB, kernel_reserved=4 * MiB, pae=False, nx=False)
    layout = build_first_kernel(ram, ram_size=16 * MiB, kernel_reserved=64 << 10, pae=True,
                                nx=False)
    fixed = [layout.text, layout.pgd, layout.kernel_pmd, layout.low_pte, layout.gdt,
             *layout.kexec_tables(), *layout.split_pool, layout.stack_bottom]
    assert len(set(fixed)) == len(fixed)
    assert all(a % PAGE_SIZE == 0 and 0 < a < 64 << 10 for a in fixed)
    assert layout.stack_top == 64 << 10 and layout.stack_top - layout.stack_bottom == 8192


@pytest.mark.parametrize("pae", [False, True])
def test_descriptors_and_cpu_state(pae):
    ram, layout = build(pae=pae, nx=pae)
    state = initial_cpu_state(layout)
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in state.items())
    gdt = ram[layout.gdt:layout.gdt + 8 * fk.GDT_ENTRIES].view("<u8")
    for seg in ("cs", "ds", "es", "fs", "ss", "tr"):
        sel = state[f"{seg}_selector"]
        base, limit, access, flags = decode_descriptor(int(gdt[sel >> 3]))
        assert (base, limit, access, flags) == (state[f"{seg}_base"], state[f"{seg}_limit"],
                                               state[f"{seg}_access"], state[f"{seg}_flags"])
    assert state["cs_selector"] == 0x60 and state["ss_selector"] == 0x68
    assert state["gdtr_base"] == PAGE_OFFSET + layout.gdt and state["gdtr_limit"] == 255
    assert state["idtr_base"] == PAGE_OFFSET + layout.idt and state["idtr_limit"] == 2047
    assert state["cr3"] == layout.pgd
    assert state["cr0"] & (fk.CR0_PE | fk.CR0_PG | fk.CR0_WP) == fk.CR0_PE | fk.CR0_PG | fk.CR0_WP
    assert bool(state["cr4"] & fk.CR4_PAE) == pae and state["cr4"] & cpu_state.CR4_PGE == 0
    assert state["efer"] == (fk.EFER_NXE if pae else 0)
    assert state["eflags"] & cpu_state.IF == 0
    assert layout.stack_bottom + PAGE_OFFSET < state["esp"] < layout.stack_top_va
    # Every IDT gate leads to the kernel's fault stub.
    gate = int(ram[layout.idt + 8 * 14:layout.idt + 8 * 15].view("<u8")[0])
    assert (gate & 0xFFFF) | ((gate >> 48) << 16) == layout.text_va + fk.TEXT_FAULT
    assert (gate >> 16) & 0xFFFF == fk.KERNEL_CS
    # The return stub is a hlt loop.
    assert bytes(ram[layout.text:layout.text + 3]) == b"\xf4\xeb\xfd"


def test_set_page_executable_split_and_merge():
    ram, layout = build(pae=True, nx=True)
    pmd = ram[layout.kernel_pmd:layout.kernel_pmd + PAGE_SIZE].view("<u8")
    original = ram.copy()
    page = 0x9A3000
    set_page_executable(ram, layout, page, True)
    assert translate(ram, layout, PAGE_OFFSET + page) == (page, True)
    assert int(pmd[page >> 21]) == layout.split_pool[0] | fk.PTE_KERNEL
    for other in (page - PAGE_SIZE, page + PAGE_SIZE, 0x800000, 0x9FF000):
        assert translate(ram, layout, PAGE_OFFSET + other) == (other, False)
    set_page_executable(ram, layout, page, True)                  # idempotent
    second = 0xC01000
    set_page_executable(ram, layout, second, True)
    assert int(pmd[second >> 21]) & fk.PTE_ADDR_MASK == layout.split_pool[1]
    set_page_executable(ram, layout, page, False)                 # merged back, pool freed
    assert translate(ram, layout, PAGE_OFFSET + page) == (page, False)
    assert int(pmd[page >> 21]) == int(original[layout.kernel_pmd + 8 * (page >> 21):][:8]
                                       .view("<u8")[0])
    set_page_executable(ram, layout, second, False)
    assert np.array_equal(ram, original)


def test_set_page_executable_in_the_low_table_and_limits():
    ram, layout = build(reserved=64 << 10, pae=True, nx=True)
    page = 0x10000                                  # first free frame: in the 4 KiB low table
    set_page_executable(ram, layout, page, True)
    assert translate(ram, layout, PAGE_OFFSET + page) == (page, True)
    set_page_executable(ram, layout, page, False)
    assert translate(ram, layout, PAGE_OFFSET + page) == (page, False)
    set_page_executable(ram, layout, layout.text, False)           # the text never changes
    assert translate(ram, layout, layout.text_va)[1]
    with pytest.raises(ValueError):
        set_page_executable(ram, layout, 16 * MiB, True)
    for i in range(len(layout.split_pool)):
        set_page_executable(ram, layout, (4 + 2 * i) * MiB, True)
    with pytest.raises(RuntimeError, match="split pool"):
        set_page_executable(ram, layout, 12 * MiB, True)


def test_set_page_executable_is_a_noop_without_nx():
    for pae in (False, True):
        ram, layout = build(pae=pae, nx=False)
        before = ram.copy()
        set_page_executable(ram, layout, 0x900000, True)
        set_page_executable(ram, layout, 0x900000, False)
        assert np.array_equal(ram, before)


# ------------------------------------------------------------------ Unicorn as the oracle
unicorn = pytest.importorskip("unicorn")
from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc  # noqa: E402
from unicorn import x86_const as X  # noqa: E402


def _unicorn(ram, layout):
    state = initial_cpu_state(layout)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, len(ram))
    uc.mem_write(0, ram.tobytes())
    uc.reg_write(X.UC_X86_REG_CR3, state["cr3"])
    uc.reg_write(X.UC_X86_REG_CR4, state["cr4"])
    if state["efer"]:
        uc.reg_write(X.UC_X86_REG_MSR, (fk.MSR_EFER, state["efer"]))
    uc.reg_write(X.UC_X86_REG_CR0, state["cr0"])
    uc.reg_write(X.UC_X86_REG_GDTR, (0, state["gdtr_base"], state["gdtr_limit"], 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, state["idtr_base"], state["idtr_limit"], 0))
    for seg in ("ss", "ds", "es", "fs", "cs"):          # loaded from our GDT by Unicorn
        uc.reg_write(getattr(X, f"UC_X86_REG_{seg.upper()}"), state[f"{seg}_selector"])
    uc.reg_write(X.UC_X86_REG_ESP, state["esp"])
    return uc


@pytest.mark.parametrize("pae,nx", [(False, False), (True, True)])
def test_unicorn_walks_the_kernel_tables(pae, nx):
    """Code in the kernel text reads through the direct map, a push uses the kernel stack,
    and %fs reaches the per-CPU area through the GDT descriptor (Unicorn walks our tables)."""
    ram, layout = build(pae=pae, nx=nx)
    probes = [0x5000, 0x400000, 0x9A3124, 0xFFFFFC]
    for i, p in enumerate(probes):
        ram[p:p + 4] = np.frombuffer(struct.pack("<I", 0x1000 + i), np.uint8)
    ram[layout.percpu + 8:layout.percpu + 12] = np.frombuffer(b"PCPU", np.uint8)
    code = b""
    for i, p in enumerate(probes):                 # mov PAGE_OFFSET+p, %eax; push %eax
        code += b"\xa1" + struct.pack("<I", PAGE_OFFSET + p) + b"\x50"
    code += b"\x64\xa1\x08\x00\x00\x00"            # mov %fs:8, %eax
    at = layout.text + 0x100
    ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
    uc = _unicorn(ram, layout)
    uc.emu_start(PAGE_OFFSET + at, PAGE_OFFSET + at + len(code))
    esp = uc.reg_read(X.UC_X86_REG_ESP)
    pushed = struct.unpack("<4I", bytes(uc.mem_read(esp - PAGE_OFFSET, 16)))
    assert pushed == tuple(0x1000 + i for i in reversed(range(len(probes))))
    assert uc.reg_read(X.UC_X86_REG_EAX) == struct.unpack("<I", b"PCPU")[0]


def test_unicorn_enforces_our_nx_bits():
    ram, layout = build(pae=True, nx=True)
    page = 0x9A3000
    ram[page] = 0x90                                # nop
    uc = _unicorn(ram, layout)
    seen = []
    uc.hook_add(UC_HOOK_INTR, lambda u, v, d: (seen.append(v), u.emu_stop()))
    uc.emu_start(PAGE_OFFSET + page, PAGE_OFFSET + page + 1, count=1)
    assert seen == [14]                             # data page: not executable
    set_page_executable(ram, layout, page, True)
    uc = _unicorn(ram, layout)
    uc.emu_start(PAGE_OFFSET + page, PAGE_OFFSET + page + 1, count=1)
    assert uc.reg_read(X.UC_X86_REG_EIP) == PAGE_OFFSET + page + 1
