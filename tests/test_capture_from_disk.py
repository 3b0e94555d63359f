"""kjcore.kdump.from_disk: the core file at LBA 0 of a disk, read back; the disk is hostile."""
import os

import pytest

from kjcore.commands.main import main as kjcore_main
from kjcore.devices import Disk
from kjcore.kdump.elfcorehdr import ELFCLASS32, ELFCLASS64, PT_LOAD, PT_NOTE, Phdr, elf_header
from kjcore.kdump.elfcorehdr import program_headers as pack
from kjcore.kdump.from_disk import extract_core, find_core


def _core(loads, notes=b"", elf_class=ELFCLASS32, phnum=None):
    """A core file: header, notes, then each (paddr, data) at the offsets after it."""
    phs = [Phdr(PT_NOTE, 0, 0, 0, 0, len(notes), len(notes), 0)] if notes else []
    head = len(elf_header(elf_class, 1)) + len(pack(elf_class, [Phdr(1, 0, 0, 0, 0, 0, 0, 0)])) \
        * (len(phs) + len(loads))
    if notes:
        phs[0] = phs[0]._replace(offset=head)
    offset = head + len(notes)
    for paddr, data in loads:
        phs.append(Phdr(PT_LOAD, 7, offset, 0xC0000000 + paddr, paddr, len(data), len(data), 0))
        offset += len(data)
    body = elf_header(elf_class, len(phs) if phnum is None else phnum) + pack(elf_class, phs)
    return body + notes + b"".join(d for _, d in loads)


def _disk(blob, size=64 << 10):
    disk = Disk.memory(size)
    padded = blob + bytes(-len(blob) % 512)
    disk.write(0, padded)
    return disk


@pytest.mark.parametrize("elf_class", [ELFCLASS32, ELFCLASS64])
def test_a_core_comes_back_byte_for_byte(tmp_path, elf_class):
    blob = _core([(0x1000, os.urandom(3000)), (0x9000, os.urandom(777))], notes=b"N" * 20,
                 elf_class=elf_class)
    core = extract_core(_disk(blob), str(tmp_path / "core"))
    assert (tmp_path / "core").read_bytes() == blob
    assert core.size == len(blob) and core.elf_class == elf_class
    assert [p.paddr for p in core.loads] == [0x1000, 0x9000]


@pytest.mark.parametrize("blob, message", [
    (b"", "no ELF magic"),
    (b"\x7fELF\x03\x01" + bytes(100), "not a little-endian"),
    (_core([(0, b"x")], phnum=0), "e_phnum 0"),
    (_core([(0, b"x")], phnum=5000), "more than"),
    (_core([(0, b"x")], phnum=1100), "e_phnum 1100 is not in"),
    (_core([(0, b"x" * 100)]).replace(b"\x64\x00\x00\x00\x64", b"\x64\x00\x00\x00\x65", 1),
     "p_filesz"),
])
def test_what_is_not_a_core_is_refused(blob, message):
    with pytest.raises(ValueError, match=message):
        find_core(_disk(blob))


def test_a_core_longer_than_the_disk_is_refused(tmp_path):
    blob = _core([(0, bytes(512)), (0x100000, bytes(100 << 10))])
    disk = _disk(blob[:60 << 10], size=64 << 10)
    with pytest.raises(ValueError, match="claims 0x19[0-9a-f]+ bytes, the disk holds 0x10000"):
        extract_core(disk, str(tmp_path / "core"))
    assert os.listdir(tmp_path) == []                  # nothing half written


def test_program_headers_past_the_disk_are_refused():
    blob = elf_header(ELFCLASS32, 1000)               # 32000 bytes of headers
    with pytest.raises(ValueError, match="past the disk's end"):
        find_core(_disk(blob, size=4096))


def test_vmcore_from_disk_on_the_command_line(tmp_path, capsys):
    machine = str(tmp_path / "m")
    assert kjcore_main(["machine", "new", machine, "--ram", "8M"]) == 0
    assert kjcore_main(["vmcore", machine, "--from-disk", "-o", str(tmp_path / "c")]) == 1
    assert "has 0 disk(s), no disk 0" in capsys.readouterr().err
    assert kjcore_main(["machine", "new", str(tmp_path / "d"), "--ram", "8M", "--disk",
                        f"{tmp_path / 'd.img'}:1M"]) == 0
    assert kjcore_main(["vmcore", str(tmp_path / "d"), "--from-disk", "-o",
                        str(tmp_path / "c")]) == 1
    assert "no ELF core at LBA 0 (no ELF magic)" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
