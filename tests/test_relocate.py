"""The committed relocation routine and machine_kexec's call setup (SPEC §6)."""
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kjcore
from kjcore import PAGE_OFFSET, PAGE_SIZE
from kjcore import relocate as R
from kjcore.cpu.state import IF as EFLAGS_IF
from kjcore.first_kernel import (
    ACCESS_CODE0,
    ACCESS_DATA0,
    KERNEL_CS,
    KERNEL_DS,
    build_first_kernel,
    initial_cpu_state,
)

SRC = Path(kjcore.__file__).with_name("relocate_kernel.S")
BIN = Path(kjcore.__file__).with_name("relocate_kernel.bin")


def _assemble(tmp_path):
    if not all(shutil.which(t) for t in ("as", "objcopy", "nm", "objdump")):
        pytest.skip("GNU binutils (as, objcopy, nm, objdump) not installed")
    obj = tmp_path / "relocate_kernel.o"
    out = tmp_path / "relocate_kernel.bin"
    try:
        subprocess.run(["as", "--32", "-o", str(obj), str(SRC)], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError as e:
        if b"unrecognized option" in e.stderr or b"--32" in e.stderr:
            pytest.skip("this `as` cannot assemble i386 code (--32)")
        raise
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(out)], check=True)
    return obj, out


def test_committed_binary_matches_source(tmp_path):
    obj, out = _assemble(tmp_path)
    assert out.read_bytes() == BIN.read_bytes(), \
        "relocate_kernel.bin is stale: re-assemble kjcore/relocate_kernel.S (see its header)"
    # Position independent: nothing is left for a linker to patch.
    relocs = subprocess.run(["objdump", "-r", str(obj)], capture_output=True, text=True).stdout
    assert "R_386" not in relocs


def test_symbols_and_constants_agree_with_the_source(tmp_path):
    obj, _ = _assemble(tmp_path)
    nm = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    syms = {name: int(value, 16) for value, _, name in
            (line.split() for line in nm.splitlines())}
    for name, offset in R.SYMBOLS.items():
        assert syms[name] == offset, name
    for name in ("DATA_ESP", "DATA_CR0", "DATA_CR3", "DATA_CR4", "DATA_VA_CONTROL",
                 "DATA_PA_PGD", "DATA_PA_SWAP", "DATA_HEAD", "DATA_FLAGS", "FLAG_FIX_PAE",
                 "FLAG_FIX_DF",
                 "PA_CONTROL_PAGE", "VA_CONTROL_PAGE", "PA_PGD", "VA_PGD", "PA_PTE_0",
                 "VA_PTE_0", "PA_PTE_1", "VA_PTE_1", "PA_SWAP_PAGE", "PA_PMD_0", "VA_PMD_0",
                 "PA_PMD_1", "VA_PMD_1"):
        assert syms[name] == getattr(R, name), name


def test_data_area_offsets_are_the_spec_ones():
    assert [R.DATA_ESP, R.DATA_CR0, R.DATA_CR3, R.DATA_CR4, R.DATA_VA_CONTROL, R.DATA_PA_PGD,
            R.DATA_PA_SWAP, R.DATA_HEAD] == [2048 + 4 * i for i in range(8)]


def test_binary_fits_and_is_self_describing():
    assert len(R.ROUTINE) <= R.MAX_CODE_SIZE == 2048
    assert R.SYMBOLS["relocate_kernel"] == 0           # machine_kexec calls the page start
    assert 0 < R.JUMP_BACK_OFFSET < R.VIRTUAL_MAPPED_OFFSET < R.SYMBOLS["symbol_table"]
    with pytest.raises(ValueError):
        R.parse_symbols(R.ROUTINE[:-4])
    with pytest.raises(ValueError):
        R.parse_symbols(b"\x90" * 64)


def test_source_is_project_written():
    """The .S is this project's: it names its own labels, not the kernel's macros."""
    text = SRC.read_text()
    for kernel_only in ("PTR(", "CP_PA_BACKUP_PAGES_MAP", "#include", "__ASSEMBLY__"):
        assert kernel_only not in text
    assert re.search(r"^\s*\.code32", text, re.M)


@pytest.mark.parametrize("pae", [False, True])
def test_page_list(pae):
    ram = np.zeros(8 << 20, dtype=np.uint8)
    layout = build_first_kernel(ram, ram_size=len(ram), kernel_reserved=1 << 20, pae=pae, nx=False)
    words = R.build_page_list(layout, 0x600000, 0x7FF000)
    expect = [0x600000, PAGE_OFFSET + 0x600000, layout.kexec_pgd,
              PAGE_OFFSET + layout.kexec_pgd, layout.kexec_pte0,
              PAGE_OFFSET + layout.kexec_pte0, layout.kexec_pte1,
              PAGE_OFFSET + layout.kexec_pte1, 0x7FF000]
    if pae:
        expect += [layout.kexec_pmd0, PAGE_OFFSET + layout.kexec_pmd0, layout.kexec_pmd1,
                   PAGE_OFFSET + layout.kexec_pmd1]
    assert words == expect
    assert len(words) == (R.PAGES_NR_PAE if pae else R.PAGES_NR)


@pytest.mark.parametrize("pae,preserve,fix,df", [(False, True, False, False),
                                                 (True, False, True, False),
                                                 (True, True, False, True),
                                                 (False, True, True, True)])
def test_prepare_call(pae, preserve, fix, df):
    ram = np.zeros(8 << 20, dtype=np.uint8)
    layout = build_first_kernel(ram, ram_size=len(ram), kernel_reserved=1 << 20, pae=pae,
                                nx=pae)
    ram[0x600000:0x601000] = 0xEE
    regs = R.prepare_call(ram, layout, image_head=0x123002, start=0x200000,
                          control_page=0x600000, swap_page=0x601000, pae=pae,
                          preserve_context=preserve, fix_pae_return=fix, fix_peer_df=df)
    # The routine is in the first half of the control page; the second half is untouched.
    assert bytes(ram[0x600000:0x600000 + len(R.ROUTINE)]) == R.ROUTINE
    assert np.all(ram[0x600000 + len(R.ROUTINE):0x601000] == 0xEE)
    # The faithful routine at offset 0, or the flags entry with the correction bits in EAX.
    flags = (R.FLAG_FIX_PAE if fix else 0) | (R.FLAG_FIX_DF if df else 0)
    assert R.routine_flags(fix, df) == regs["eax"] == flags
    assert regs["eip"] == PAGE_OFFSET + 0x600000 + R.entry_offset(flags)
    assert (R.entry_offset(flags) == 0) == (flags == 0)
    ret, head, plist, start, has_pae, pres = R.stack_words(ram, regs["esp"], 6)
    assert (ret, head, start, has_pae, pres) == (layout.return_address, 0x123002, 0x200000, 1,
                                                 int(preserve))
    assert R.stack_words(ram, plist, 13 if pae else 9) == \
        R.build_page_list(layout, 0x600000, 0x601000)
    # The cdecl frame is on the kernel stack, below the kernel's own ESP.
    assert layout.stack_bottom + PAGE_OFFSET < regs["esp"] < plist < layout.kernel_esp
    assert (regs["gdtr_base"], regs["gdtr_limit"]) == (PAGE_OFFSET, 0)
    assert (regs["idtr_base"], regs["idtr_limit"]) == (PAGE_OFFSET, 0)
    assert regs["eflags"] & EFLAGS_IF == 0
    assert regs["cs_selector"] == KERNEL_CS and regs["cs_access"] == ACCESS_CODE0
    for seg in ("ds", "es", "fs", "gs", "ss"):
        assert (regs[f"{seg}_selector"], regs[f"{seg}_base"], regs[f"{seg}_limit"],
                regs[f"{seg}_access"]) == (KERNEL_DS, 0, 0xFFFFFFFF, ACCESS_DATA0)
    state = initial_cpu_state(layout)
    assert set(regs) == set(state)
    for key in ("cr0", "cr3", "cr4", "efer", "tr_selector", "ldtr_selector", "ebx", "ecx"):
        assert regs[key] == state[key]


def test_prepare_call_rejects_inconsistent_arguments():
    ram = np.zeros(8 << 20, dtype=np.uint8)
    layout = build_first_kernel(ram, ram_size=len(ram), kernel_reserved=1 << 20, pae=False,
                                nx=False)
    args = dict(image_head=4, start=0, control_page=0x600000, swap_page=0x601000, pae=False,
                preserve_context=True, fix_pae_return=False)
    with pytest.raises(ValueError, match="pae"):
        R.prepare_call(ram, layout, **{**args, "pae": True})
    with pytest.raises(ValueError, match="control_page"):
        R.prepare_call(ram, layout, **{**args, "control_page": 0x600800})
    with pytest.raises(ValueError, match="swap_page"):
        R.prepare_call(ram, layout, **{**args, "swap_page": 8 << 20})
    # A crash image has no swap page: page_list carries 0.
    regs = R.prepare_call(ram, layout, **{**args, "swap_page": None, "preserve_context": False})
    plist = R.stack_words(ram, regs["esp"], 3)[2]
    assert R.stack_words(ram, plist, 9)[R.PA_SWAP_PAGE] == 0


def test_return_point_after_ret():
    assert R.return_point_after_ret(0x7FF000) == 0x800000
    assert R.return_point_after_ret(0xFFFFF000) == 0       # 32-bit wrap
    assert R.jump_back_entry(0x600000) == 0x600000 + R.JUMP_BACK_OFFSET
    assert PAGE_SIZE // 2 == R.DATA_AREA
