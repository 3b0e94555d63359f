"""The kdump flow with examples/kdump/capture.elf (SPEC §17): ``kjexec -p --args-linux``,
``kjcore panic``: the capture kernel walks elfcorehdr and writes the crashed kernel's memory
to disk 0; ``kjcore vmcore --from-disk`` gives the same notes and memory as ``kjcore vmcore``
(what /proc/vmcore gives), and readelf and gdb open it."""
import shutil
import subprocess

import pytest
from snapshot_world import CAPTURE

from kjcore.commands import kjexec
from kjcore.commands.main import main as kjcore_main
from kjcore.constants import PAGE_OFFSET
from kjcore.kdump.notes import NT_PRSTATUS, parse_notes, parse_prstatus
from kjcore.store import open_machine

elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402


def _core(path):
    """(notes bytes, {paddr: (vaddr, data)}) of a core file, read by pyelftools."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_CORE" and elf.elfclass == 32
        notes = b"".join(s.data() for s in elf.iter_segments() if s.header.p_type == "PT_NOTE")
        loads = {s.header.p_paddr: (s.header.p_vaddr, s.data()) for s in elf.iter_segments()
                 if s.header.p_type == "PT_LOAD"}
    return notes, loads


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A machine whose first kernel panicked into capture.elf: (machine dir, console text)."""
    tmp = tmp_path_factory.mktemp("kdump")
    machine = str(tmp / "m")
    assert kjcore_main(["machine", "new", machine, "--ram", "40M", "--crashkernel", "16M@16M",
                        "--disk", f"{tmp / 'disk.img'}:40M"]) == 0
    assert kjexec.main(["--machine", machine, "-p", "--args-linux", CAPTURE]) == 0
    assert kjcore_main(["panic", machine, "--message", "capture test"]) == 0
    return machine, tmp


def test_the_capture_kernel_writes_what_proc_vmcore_gives(crashed, capsys):
    machine, tmp = crashed
    m = open_machine(machine)
    assert m.state == "crash-kernel"
    assert b"capture: writing 0x017a1000 bytes (kdump) to disk 0\ncapture: done\n" in m.debugcon
    assert kjcore_main(["vmcore", machine, "--from-disk", "-o", str(tmp / "disk.core")]) == 0
    assert kjcore_main(["vmcore", machine, "-o", str(tmp / "vmcore")]) == 0
    notes, loads = _core(tmp / "disk.core")
    want_notes, want_loads = _core(tmp / "vmcore")
    assert notes == want_notes and b"CORE" in notes                  # NT_PRSTATUS
    assert loads == want_loads
    assert set(loads) == {0, 0x100000, 0x2000000}   # the e820 RAM outside the crashkernel


def test_readelf_and_gdb_open_the_core_from_disk(crashed):
    machine, tmp = crashed
    path = str(tmp / "disk2.core")
    assert kjcore_main(["vmcore", machine, "--from-disk", "-o", path]) == 0
    if shutil.which("readelf"):
        r = subprocess.run(["readelf", "-n", path], capture_output=True, text=True)
        assert r.returncode == 0 and "NT_PRSTATUS" in r.stdout
    if shutil.which("gdb"):
        m = open_machine(machine)
        notes, _ = _core(path)
        (prstatus,) = [n for n in parse_notes(notes) if n.type == NT_PRSTATUS]
        eip = parse_prstatus(prstatus.desc)["eip"]
        code = m.ram[eip - PAGE_OFFSET:eip - PAGE_OFFSET + 4].tolist()
        r = subprocess.run(["gdb", "-batch", "-nx", "-ex", "info registers eip", "-ex",
                            f"x/4xb {eip:#x}", "-c", path], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert any(line.split()[:2] == ["eip", f"{eip:#x}"] for line in lines), r.stdout
        dump = next(line for line in lines if line.startswith(f"{eip:#x}:"))
        assert [int(b, 16) for b in dump.split()[1:]] == code
