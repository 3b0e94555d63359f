"""The seed's use case from the command line (SPEC §14.3): ``kjcore machine new M --disk
FILE:SIZE``, ``kjexec --machine M -l --load-preserve-context --args-none bios_*.elf``,
``kjexec --machine M -e``.  The console and the screen show what the machine's ``e820`` and
the disk say, and the saved first kernel's memory is byte-exact afterwards."""
import pytest
from bios_examples import (
    KJEXEC_LOAD,
    assert_byte_exact,
    disk_console,
    disk_content,
    e820_console,
    e820_lines,
    first_kernel_mask,
    path,
    screen_lines,
)

from kjcore.commands import kjexec
from kjcore.commands.main import main as kjcore_main
from kjcore.store import open_machine

SECTORS = 200


@pytest.fixture
def pc(tmp_path, capsys):
    """A saved BIOS machine with one 100 KiB disk holding :func:`disk_content`."""
    mpath, disk = str(tmp_path / "pc"), tmp_path / "disk.img"
    assert kjcore_main(["machine", "new", mpath, "--ram", "32M", "--disk",
                        f"{disk}:{SECTORS * 512}"]) == 0
    disk.write_bytes(disk_content(SECTORS, seed=7))
    capsys.readouterr()
    return mpath, disk


def _jump(capsys, mpath, program):
    """Load ``program``, snapshot the first kernel, run ``kjexec -e``; (stdout, before, keep)."""
    assert kjexec.main(["--machine", mpath, *KJEXEC_LOAD, path(program)]) == 0
    m = open_machine(mpath)
    assert m.bios is not None, "kjcore machine new must give a machine with a BIOS"
    before, keep = m.ram.copy(), first_kernel_mask(m)
    del m
    capsys.readouterr()
    assert kjexec.main(["--machine", mpath, "-e"]) == 0
    out = capsys.readouterr().out
    after = open_machine(mpath)
    assert after.state == "kernel"
    assert_byte_exact(before, after.ram, keep)
    return out, after


def _console(out):
    """The debug console bytes kjexec -e printed (between its header line and 'back in')."""
    head = out.index("debug console (port 0xe9)")
    body = out[out.index("\n", head) + 1:]
    return body[:body.index("kjexec: back in the first kernel")]


def test_e820_example(capsys, pc):
    mpath, _ = pc
    out, m = _jump(capsys, mpath, "bios_e820.elf")
    assert _console(out) == e820_console(m.e820)
    lines = e820_lines(m.e820)
    assert screen_lines(m)[:len(lines)] == lines
    assert lines[-1].startswith("e820: 0000000000100000-0000000001ffffff usable")


def test_disk_example(capsys, pc):
    mpath, disk = pc
    data = disk.read_bytes()
    out, m = _jump(capsys, mpath, "bios_disk.elf")
    expected = disk_console(SECTORS, data[:512], data[-512:])
    assert _console(out) == expected
    assert screen_lines(m)[:4] == expected.replace("\r", "").splitlines()[2:]
    assert disk.read_bytes() == data


def test_tty_then_e820_on_one_machine(capsys, pc):
    mpath, _ = pc
    out, m = _jump(capsys, mpath, "bios_tty.elf")
    assert "bios_tty: cursor at row 4, column 43" in out
    out, m = _jump(capsys, mpath, "bios_e820.elf")
    screen = screen_lines(m)                 # the map starts at the tty example's cursor
    assert (screen[4].ljust(80) + screen[5])[43:].startswith(e820_lines(m.e820)[0])
