"""An ELF core file written from LBA 0 of a disk (the capture/snapshot program of
examples/kdump writes one there through the ATA controller), read back as a file.

The disk is untrusted: the ELF header and program headers are checked by
:func:`kjcore.kdump.elfcorehdr.parse_elfcorehdr` (an i386 ``ET_CORE`` of either class, only
``PT_NOTE``/``PT_LOAD``, at most 1024 program headers), and the file they describe must end
inside the disk before anything past the header is read. The file's length is where its
last program header or segment ends.
"""
import os
from typing import NamedTuple

from ..devices.disk import SECTOR_SIZE
from .elfcorehdr import PT_LOAD, header_size, parse_elfcorehdr
from .vmcore import MAX_HEADER_BYTES

#: bytes copied from the disk to the file at a time
CHUNK_SECTORS = 2048


class CoreOnDisk(NamedTuple):
    """The core file at LBA 0: its length in bytes, its class and its program headers."""
    size: int
    elf_class: int
    phdrs: tuple

    @property
    def loads(self):
        return tuple(p for p in self.phdrs if p.type == PT_LOAD)


def _sectors(n):
    return -(-n // SECTOR_SIZE)


def find_core(disk):
    """Check the core file at LBA 0 of ``disk`` (``m.disks[i]``) and return its
    :class:`CoreOnDisk`; ``ValueError`` with one line saying what is wrong."""
    where = f"disk {disk.path or '(memory)'}"
    if disk.sectors < 1:
        raise ValueError(f"{where}: empty, no core file")
    first = disk.read(0, 1)
    try:
        need = header_size(first)
        if need > MAX_HEADER_BYTES:
            raise ValueError(f"{need} bytes of program headers (more than "
                             f"{MAX_HEADER_BYTES})")
        if _sectors(need) > disk.sectors:
            raise ValueError(f"the program headers end at {need:#x}, past the disk's end")
        header = parse_elfcorehdr(disk.read(0, _sectors(need)))
    except ValueError as e:
        raise ValueError(f"{where}: no ELF core at LBA 0 ({str(e).removeprefix('elfcorehdr: ')})"
                         ) from None
    size = max([need] + [p.offset + p.filesz for p in header.phdrs])
    if size > disk.sectors * SECTOR_SIZE:
        raise ValueError(f"{where}: the core file at LBA 0 claims {size:#x} bytes, the disk "
                         f"holds {disk.sectors * SECTOR_SIZE:#x}")
    return CoreOnDisk(size, header.elf_class, header.phdrs)


def extract_core(disk, path):
    """Copy the core file at LBA 0 of ``disk`` to ``path`` (never left half written);
    returns its :class:`CoreOnDisk`."""
    core = find_core(disk)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            for lba in range(0, _sectors(core.size), CHUNK_SECTORS):
                n = min(CHUNK_SECTORS, _sectors(core.size) - lba)
                data = disk.read(lba, n)
                f.write(data[:core.size - lba * SECTOR_SIZE])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return core


def core_from_disk_command(m, name, index, output):
    """``kjcore vmcore --from-disk``: copy the core on disk ``index`` of machine ``m``."""
    from ..errors import UsageError
    if index >= len(m.disks):
        raise UsageError(f"{name}: the machine has {len(m.disks)} disk(s), no disk {index}")
    try:
        core = extract_core(m.disks[index], output)
    except ValueError as e:
        raise UsageError(f"{name}: {e}") from None
    print(f"wrote {output}: {core.size} bytes, ELF{32 if core.elf_class == 1 else 64} core "
          f"from disk {index}, {len(core.loads)} PT_LOAD segments")
    return 0
