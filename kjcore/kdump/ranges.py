"""The first kernel's memory as kexec-tools 2.0.1 (the release that added kexec jump) reads it
for a crash or preserve-context load: RAM ranges, the crash ranges the ELF core header
describes, the 640 KiB backup and the ``memmap=`` / ``elfcorehdr=`` command-line options.

``/proc/iomem`` of a kjcore machine (:func:`iomem`): each usable entry of the BIOS memory map
(``m.e820``) is a ``System RAM`` range; a machine without a BIOS has no memory map, and kjcore
reports its RAM as two ranges, the first 640 KiB and the rest (so that kexec-tools' 640 KiB
rule below describes each byte once).  ``crashkernel=`` is the ``Crash kernel`` range.

The rules (kexec-tools 2.0.1, ``crashdump-x86.c``), which kjcore follows:

- A crash load describes the first 640 KiB as one hard-coded range ``[0, 0xa0000)`` (whatever
  the BIOS reports there), then every ``System RAM`` range not wholly inside it, split at the
  896 MiB low-memory limit, minus the ``Crash kernel`` range.  The capture kernel may use the
  first 640 KiB, so purgatory copies it to a backup segment first and the header's PT_LOAD for
  it points at the copy.
- A preserve-context load has no hard-coded range and no backup (a ``System RAM`` range wholly
  inside the first 640 KiB is still skipped: kexec-tools 2.0.1 leaves that memory out of the
  header, as kjcore does); the reserved range is ``[start of the first RAM range ending above
  640 KiB, mem_max]`` ("Too small mem_max" when that is empty).
- The capture kernel's memory (``memmap=exactmap`` and one ``memmap=SIZEK@STARTK`` per range of
  at least 100 KiB) is the first 640 KiB and the reserved range, minus the backup segment and
  the ELF core header's buffer (its bytes, not its 16 KiB reservation).
"""
from typing import NamedTuple

from ..bios.layout import E820_RAM
from ..bootparam import COMMAND_LINE_SIZE
from ..constants import KEXEC_PRESERVE_CONTEXT
from ..errors import LoaderError
from .elfcorehdr import LOWMEM_LIMIT

#: kexec-tools' hard-coded first 640 KiB (inclusive end)
BACKUP_SRC_START, BACKUP_SRC_END = 0x0, 0x9FFFF
BACKUP_SRC_SIZE = BACKUP_SRC_END + 1
#: ``memmap=`` granularity, and the smallest RAM range worth a ``memmap=`` option
MEMMAP_ALIGN = 1024
MEMMAP_MIN_KIB = 100


class LoaderDie(LoaderError):
    """A kexec-tools ``die()``: the message is printed and kexec exits with status 1."""


#: kexec-tools' message for a crash load on a kernel without ``crashkernel=``
NO_CRASHKERNEL = ("Memory for crashkernel is not reserved\n"
                  "Please reserve memory by passing \"crashkernel=Y@X\" parameter to kernel\n"
                  "Then try to loading kdump kernel")


class Range(NamedTuple):
    """A physical range with an inclusive end, as kexec-tools keeps them."""
    start: int
    end: int


def memory_map(m):
    """``(base, length, type)`` entries: the BIOS map, or one RAM entry without a BIOS (what
    the zero page's e820 table carries)."""
    return list(m.e820) if m.e820 is not None else [(0, m.ram_size, E820_RAM)]


def iomem(m):
    """``(system RAM ranges, crash kernel range or None)`` of machine ``m``."""
    if m.e820 is not None:
        ram = [Range(b, b + n - 1) for b, n, t in m.e820 if t == E820_RAM and n]
    elif m.ram_size > BACKUP_SRC_SIZE:
        ram = [Range(0, BACKUP_SRC_END), Range(BACKUP_SRC_SIZE, m.ram_size - 1)]
    else:
        ram = [Range(0, m.ram_size - 1)]
    crash = None if m.crashkernel is None else Range(m.crashkernel[0],
                                                     sum(m.crashkernel) - 1)
    return ram, crash


def _exclude(ranges, cut):
    """``ranges`` without the bytes of ``cut``."""
    out = []
    for r in ranges:
        if cut.start > r.end or cut.end < r.start:
            out.append(r)
            continue
        if r.start < cut.start:
            out.append(Range(r.start, cut.start - 1))
        if cut.end < r.end:
            out.append(Range(cut.end + 1, r.end))
    return out


def crash_memory_ranges(ram, crash, flags, mem_max):
    """``(ranges, reserved)``: the RAM ranges the core header describes and the range the new
    kernel owns, for a crash (``flags`` without KEXEC_PRESERVE_CONTEXT) or a preserve-context
    load.  ``LoaderError`` ("Too small mem_max") when the reserved range is empty."""
    preserve = bool(flags & KEXEC_PRESERVE_CONTEXT)
    if not preserve and crash is None:
        raise LoaderDie("crashkernel", NO_CRASHKERNEL)
    ranges = [] if preserve else [Range(BACKUP_SRC_START, BACKUP_SRC_END)]
    for r in ram:
        if r.end <= BACKUP_SRC_END:
            continue
        if r.start < LOWMEM_LIMIT <= r.end:
            ranges += [Range(r.start, LOWMEM_LIMIT - 1), Range(LOWMEM_LIMIT, r.end)]
        else:
            ranges.append(r)
    if preserve:
        start = next((r.start for r in ranges), None)
        if start is None or start >= mem_max:
            raise LoaderError("mem_max", f"Too small mem_max: {mem_max:#x}.")
        reserved = Range(start, mem_max)
    else:
        reserved = crash
    return _exclude(ranges, reserved), reserved


class MemoryMap:
    """The capture kernel's memory (``memmap=``): sorted ranges, 1 KiB aligned."""

    def __init__(self):
        self.ranges = []

    def add(self, start, size):
        """Add ``[start, start + size)``; ``LoaderError`` if unaligned or overlapping."""
        if start % MEMMAP_ALIGN or size % MEMMAP_ALIGN or size == 0:
            raise LoaderError("memmap", f"range {start:#x}+{size:#x} is not 1 KiB aligned")
        new = Range(start, start + size - 1)
        if any(r.start <= new.end and r.end >= new.start for r in self.ranges):
            raise LoaderError("memmap", f"range {start:#x}+{size:#x} overlaps the memory map")
        self.ranges = sorted(self.ranges + [new])

    def delete(self, start, size):
        """Remove ``[start, start + size)``, which must lie inside one range (kexec-tools'
        ``delete_memmap``; ``LoaderError`` otherwise)."""
        if start % MEMMAP_ALIGN or size % MEMMAP_ALIGN:
            raise LoaderError("memmap", f"segment {start:#x}+{size:#x} is not 1 KiB aligned")
        cut = Range(start, start + size - 1)
        if not any(r.start <= cut.start and cut.end <= r.end for r in self.ranges):
            raise LoaderError("memmap", f"segment {start:#x}+{size:#x} is not inside the "
                                        "capture kernel's memory")
        self.ranges = _exclude(self.ranges, cut)

    def options(self):
        """`` memmap=exactmap`` and a `` memmap=SIZEK@STARTK`` per range of 100 KiB or more."""
        text = " memmap=exactmap"
        for r in self.ranges:
            startk, endk = r.start // 1024, (r.end + 1) // 1024
            if endk - startk >= MEMMAP_MIN_KIB:
                text += f" memmap={endk - startk}K@{startk}K"
        return text


def append_option(cmdline, option):
    """``cmdline + option``, or kexec-tools' "Command line overflow" (:class:`LoaderDie`) when
    the result no longer fits :data:`COMMAND_LINE_SIZE` with its NUL."""
    if len(cmdline) + len(option) > COMMAND_LINE_SIZE - 1:
        raise LoaderDie("command_line", "Command line overflow")
    return cmdline + option
