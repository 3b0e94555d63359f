"""The physical-mode examples (examples/): committed builds are reproducible, load with
``load_elf32``, and do what they say on an independent CPU (Unicorn)."""
import os

import pytest
from rebuild import assert_same_bytes, make_copy, require_recorded_gcc, require_toolchain

import kjcore
from kjcore.loader import load_elf32

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
PROGRAMS = {
    "phy_mode.elf": b"phy_mode: hello from physical mode\n",
    "phy_mode_c.elf": b"phy_mode_c: hello from physical mode (C)\n",
}
LOAD_ADDR = 0x1000000


def _read(name):
    with open(os.path.join(EXAMPLES, name), "rb") as f:
        return f.read()


def test_rebuild_is_byte_identical(tmp_path):
    require_toolchain(tmp_path)
    build = make_copy(tmp_path, EXAMPLES, ("Makefile", "phy_mode.S", "phy_mode_c.c",
                                            "phy_mode.ld"))
    assert_same_bytes(build, EXAMPLES, ["phy_mode.elf"])
    # the C build depends on the compiler version recorded in the Makefile
    require_recorded_gcc(os.path.join(EXAMPLES, "Makefile"), "phy_mode_c.elf")
    assert_same_bytes(build, EXAMPLES, ["phy_mode_c.elf"])


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_loads_with_load_elf32(name):
    image = load_elf32(_read(name))
    assert image.entry == LOAD_ADDR
    assert len(image.segments) == 1
    seg = image.segments[0]
    assert (seg.mem, seg.memsz) == (LOAD_ADDR, 0x1000) and 0 < seg.bufsz < 0x1000
    assert PROGRAMS[name] in bytes(seg.buf)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_loads_into_a_machine(name):
    from kjcore.loader import preserve_context_backup_segments, sort_segments
    m = kjcore.Machine(ram_size=64 << 20)
    image = load_elf32(_read(name))
    backups = preserve_context_backup_segments(image.segments, LOAD_ADDR, 0x1FFFFFF, m.ram_size)
    m.kexec_load(image.entry, sort_segments(image.segments + backups),
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    assert m.kexec_image.start == LOAD_ADDR and len(m.kexec_image.source_pages()) == 4096


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_runs_on_unicorn(name):
    """The kexec jump calling convention on Unicorn: paging off, flat segments, ESP at the
    top of a 'swap page' holding only the return address. The program writes its line to
    port 0xE9 and returns there with EAX = the number of bytes written."""
    unicorn = pytest.importorskip("unicorn")
    from unicorn import x86_const as X
    image = load_elf32(_read(name))
    seg = image.segments[0]
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, 0x3000000)
    uc.mem_write(seg.mem, bytes(seg.buf))
    swap_page, back = 0x2F00000, 0x2E00000             # jump-back entry: a HLT
    uc.mem_write(back, b"\xf4")
    esp = swap_page + 4096 - 4
    uc.mem_write(esp, back.to_bytes(4, "little"))
    uc.reg_write(X.UC_X86_REG_ESP, esp)
    uc.reg_write(X.UC_X86_REG_ESI, 0x5151)
    uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)             # IF = 0
    console = bytearray()
    other_ports = []

    def on_out(uc, port, size, value, data):
        (console.append(value & 0xFF) if port == 0xE9 else other_ports.append(port))
    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    uc.emu_start(image.entry, back, count=10_000)
    assert bytes(console) == PROGRAMS[name] and not other_ports
    assert uc.reg_read(X.UC_X86_REG_EIP) == back
    assert uc.reg_read(X.UC_X86_REG_ESP) == swap_page + 4096        # popped the return
    assert uc.reg_read(X.UC_X86_REG_EAX) == len(PROGRAMS[name])
    assert uc.reg_read(X.UC_X86_REG_ESI) == 0x5151
