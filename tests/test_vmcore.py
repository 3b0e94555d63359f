"""kjcore vmcore: the crashed memory as /proc/vmcore gives it, read by pyelftools, readelf and
gdb; hostile ELF core headers in the crashed memory."""
import os
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile
from kdump_world import CRASHKERNEL, capture_elf

import kjcore
from kjcore.commands import kjexec
from kjcore.commands import main as cli
from kjcore.kdump.elfcorehdr import LoadRange, build_elfcorehdr
from kjcore.kdump.notes import CRASH_NOTES, elf_note, parse_notes, parse_prstatus
from kjcore.kdump.vmcore import write_vmcore
from kjcore.store import open_machine, save_machine

MiB = 1 << 20
BACKUP = sum(CRASHKERNEL) - 0xA0000


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A machine whose capture kernel runs (kjexec -p --args-linux, kjcore panic) and its
    vmcore."""
    tmp = tmp_path_factory.mktemp("vmcore")
    (tmp / "capture.elf").write_bytes(capture_elf())
    mpath = str(tmp / "m")
    m = kjcore.Machine(ram_size=64 * MiB, crashkernel=CRASHKERNEL, bios=True)
    m.ram[0x2000000:0x2000010] = np.frombuffer(b"first kernel RAM", dtype=np.uint8)
    m.cpu.ebx = 0xB0B0
    save_machine(m, mpath)
    assert kjexec.main(["--machine", mpath, "-p", "--args-linux", "--command-line=x",
                        str(tmp / "capture.elf")]) == 0
    assert cli.main(["panic", mpath]) == 0
    assert cli.main(["vmcore", mpath, "-o", str(tmp / "vmcore")]) == 0
    return open_machine(mpath), str(tmp / "vmcore")


def test_pyelftools_reads_the_vmcore(crashed):
    m, path = crashed
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert (elf.elfclass, elf["e_type"], elf["e_machine"]) == (32, "ET_CORE", "EM_386")
        segs = list(elf.iter_segments())
        assert [s["p_type"] for s in segs] == ["PT_NOTE"] + ["PT_LOAD"] * 3
        notes = list(segs[0].iter_notes())
        assert [(n["n_name"], n["n_type"]) for n in notes] == [("CORE", "NT_PRSTATUS")]
        desc = notes[0]["n_desc"]                     # i386 elf_prstatus: 144 bytes
        assert len(desc) == 144 and struct.unpack_from("<I", desc, 24) == (1,)   # pr_pid
        pr_reg = struct.unpack_from("<17I", desc, 72)   # user_regs_struct: ebx ... eip=12
        assert (pr_reg[0], pr_reg[12], pr_reg[15]) == (0xB0B0, 0xC0001000, 0xC000FE00)
        # the first 640 KiB come from the backup copy, the rest from the old memory
        low = segs[1]
        assert (low["p_paddr"], low["p_memsz"]) == (0, 0xA0000)
        assert low.data() == bytes(m.ram[BACKUP:BACKUP + 0xA0000])
        for s in segs[2:]:
            assert s.data() == bytes(m.ram[s["p_paddr"]:s["p_paddr"] + s["p_memsz"]])
        assert b"first kernel RAM" in segs[3].data()


def crashed_registers(m):
    return parse_prstatus(parse_notes(m.ram[CRASH_NOTES:CRASH_NOTES + 1024])[0].desc)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf is not installed")
def test_readelf_reads_the_vmcore(crashed):
    out = subprocess.run(["readelf", "-a", "-n", crashed[1]], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr
    assert "CORE (Core file)" in out.stdout and "NT_PRSTATUS" in out.stdout


@pytest.mark.skipif(not os.path.exists("/usr/bin/gdb"), reason="gdb is not installed")
def test_gdb_shows_the_registers_of_the_panic(crashed):
    m, path = crashed
    regs = crashed_registers(m)
    out = subprocess.run(["/usr/bin/gdb", "-nx", "-batch", "-c", path, "-ex", "info registers"],
                         capture_output=True, text=True, timeout=120).stdout
    shown = {line.split()[0]: int(line.split()[1], 16) for line in out.splitlines()
             if len(line.split()) >= 2 and line.split()[1].startswith("0x")}
    assert shown["eip"] == regs["eip"] and shown["esp"] == regs["esp"]
    assert shown["ebx"] == 0xB0B0


def test_vmcore_needs_a_running_crash_kernel(tmp_path, capsys):
    path = str(tmp_path / "m")
    save_machine(kjcore.Machine(ram_size=16 * MiB), path)
    assert cli.main(["vmcore", path, "-o", str(tmp_path / "core")]) == 1
    assert "no crash kernel runs" in capsys.readouterr().err
    m = kjcore.Machine(ram_size=64 * MiB, crashkernel=CRASHKERNEL)
    m.kexec_load(CRASHKERNEL[0], [kjcore.Segment(b"\xf4", CRASHKERNEL[0], 0x1000)],
                 kjcore.KEXEC_ON_CRASH)
    m.panic()
    save_machine(m, path)
    assert cli.main(["vmcore", path, "-o", str(tmp_path / "core")]) == 1
    assert "no elfcorehdr= option" in capsys.readouterr().err
    assert cli.main(["vmcore", path, "-o", str(tmp_path / "core"), "--elfcorehdr",
                     "0x3000000"]) == 1
    assert "no ELF magic" in capsys.readouterr().err
    assert not (tmp_path / "core").exists()


def _ram_with(header, at=0x100000, size=4 * MiB):
    ram = np.zeros(size, dtype=np.uint8)
    ram[at:at + len(header)] = np.frombuffer(header, dtype=np.uint8)
    return ram


@pytest.mark.parametrize("header, message", [
    (build_elfcorehdr([(0x1000, 1024)], [LoadRange(0x200000, 0x200000, 8 * MiB)]),
     "PT_LOAD 0 [0x200000, 0xa00000) is not in RAM"),
    (build_elfcorehdr([(0x3FFF00, 1024)], []), "PT_NOTE 0"),
    (build_elfcorehdr([], [LoadRange(0, 0, 4 * MiB)] * 3), "more than twice the RAM"),
    (build_elfcorehdr([], [LoadRange(0, 0, 0x1000)])[:44] + struct.pack("<H", 60000),
     "headers of 0x1d4c34 bytes"),
    (b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack("<HH", 2, 3), "is not ET_CORE"),
    (b"\x7fELF\x02\x02", "is not a little-endian"),
])
def test_hostile_core_headers(tmp_path, header, message):
    out = tmp_path / "core"
    with pytest.raises(ValueError, match=re.escape(message)):
        write_vmcore(_ram_with(header), 0x100000, str(out))
    assert os.listdir(tmp_path) == []


def test_a_note_that_runs_past_its_segment(tmp_path):
    ram = _ram_with(build_elfcorehdr([(0x1000, 64)], []))
    bad = elf_note(b"CORE", 1, bytes(144))              # 164 bytes in a 64-byte PT_NOTE
    ram[0x1000:0x1000 + len(bad)] = np.frombuffer(bad, dtype=np.uint8)
    with pytest.raises(ValueError, match="runs past the end"):
        write_vmcore(ram, 0x100000, str(tmp_path / "core"))


def test_elf64_core_headers_give_an_elf64_vmcore(tmp_path):
    header = build_elfcorehdr([(0x1000, 1024)], [LoadRange(0x200000, 0x200000, 0x1000)],
                              elf_class=2)
    ram = _ram_with(header)
    ram[0x200000:0x200004] = np.frombuffer(b"data", dtype=np.uint8)
    core = write_vmcore(ram, 0x100000, str(tmp_path / "core"))
    with open(tmp_path / "core", "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64 and core.notes == b""
        assert list(elf.iter_segments())[1].data()[:4] == b"data"
