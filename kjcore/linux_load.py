"""``kexec --args-linux`` for an i386 ELF kernel: what kexec-tools 2.0.1 adds to the image.

``elf_x86_load`` with the Linux argument style loads, after the kernel's own ``PT_LOAD``
segments, in this order (each placed by :func:`locate_hole`, kexec-tools' first-fit or
last-fit search over RAM minus the segments so far, inside ``[mem_min, mem_max]`` -- for a
crash load that window is the ``crashkernel=`` region):

1. **purgatory** (lowest hole): the project's purgatory (:mod:`kjcore.purgatory`), the image's
   entry: it verifies the SHA-256 of every other segment, then enters the kernel with ESI =
   the zero page;
2. **the parameter segment** (lowest hole, 16 KiB reserved): the zero page and the command
   line (:mod:`kjcore.bootparam`);
3. for a crash load (``-p``): the **backup** segment for the first 640 KiB (highest hole;
   purgatory copies the first 640 KiB there), and for crash and preserve-context loads the
   **ELF core header** (highest hole, at least 16 KiB reserved, :mod:`kjcore.kdump.elfcorehdr`)
   with ``memmap=`` and ``elfcorehdr=`` appended to the command line
   (:mod:`kjcore.kdump.ranges`).

:func:`plan_linux_load` does all that up to purgatory's bytes, which depend on every other
segment: ``kjexec`` then adds the preserve-context backup segments, sorts, and calls
:func:`finish_linux_load`, as kexec-tools fills purgatory's digests last.

Errors are kexec-tools': :class:`~kjcore.kdump.ranges.LoaderDie` for its ``die()`` (exit
status 1: "Command line overflow", "locate_hole failed"), :class:`~kjcore.errors.LoaderError`
for a load that fails ("Too small mem_max", a memory map kexec-tools cannot edit).
"""
from typing import NamedTuple

from .bootparam import COMMAND_LINE_SIZE, PARAM_BUFFER_SIZE, PARAM_MEMSZ, boot_params
from .constants import KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT, PAGE_SIZE, U32
from .errors import LoaderError
from .kdump.elfcorehdr import ELF_CORE_HEADER_ALIGN, ELFCLASS32, LoadRange, build_elfcorehdr
from .kdump.notes import MAX_NOTE_BYTES
from .kdump.ranges import (
    BACKUP_SRC_SIZE,
    BACKUP_SRC_START,
    LoaderDie,
    MemoryMap,
    append_option,
    crash_memory_ranges,
    iomem,
    memory_map,
)
from .purgatory import MAX_SEGMENTS, purgatory_segment
from .segment import Segment

#: the elfcorehdr's minimum reservation (kexec-tools' 16 KiB "ld gap" workaround)
ELFCOREHDR_MIN_MEMSZ = 16 << 10


class LinuxLoad(NamedTuple):
    """A planned ``--args-linux`` load (see :func:`plan_linux_load`)."""
    segments: tuple          # the kernel, parameter, backup and elfcorehdr segments
    purgatory: Segment       # placeholder (zero buffer) reserving purgatory's memory
    kernel_entry: int
    zero_page: int
    command_line: bytes
    backup: tuple            # (src, dst, size) for a crash load, else None
    elfcorehdr: int          # address, or None


def _page_up(n):
    return -(-n // PAGE_SIZE) * PAGE_SIZE


def locate_hole(ram, segments, size, align, lo, hi, *, top):
    """kexec-tools' ``locate_hole``: the lowest (``top=False``) or highest start of ``size``
    bytes (a page multiple) aligned to ``align`` (at least a page) in a RAM range, outside
    ``segments``, inside ``[lo, hi]`` (inclusive).  :class:`LoaderDie` when none fits."""
    align = max(align, PAGE_SIZE)
    busy = sorted((s.mem, s.mem + s.memsz - 1) for s in segments if s.memsz)
    free = []
    for r in ram:
        start = r.start
        for s, e in busy:
            if s > r.end or e < start:
                continue
            if start < s:
                free.append((start, s - 1))
            start = max(start, e + 1)
        if start < r.end:
            free.append((start, r.end))
    found = None
    for start, end in free:
        start = max(start, lo)
        start = -(-start // align) * align
        end = min(end, hi)
        if start >= end or start >= hi or end <= lo or end - start < size - 1:
            continue
        if not top:
            found = start
            break
        found = (end - size + 1) // align * align
    if found is None or found + size - 1 > hi:
        raise LoaderDie("size", f"Could not find a free area of memory of {size:#x} "
                                "bytes...\nlocate_hole failed")
    return found


def _add_buffer(ram, segments, data, memsz, align, lo, hi, *, top):
    memsz = _page_up(memsz)
    at = locate_hole(ram, segments, memsz, align, lo, hi, top=top)
    seg = Segment(data, at, memsz) if data else Segment.zero(0, at, memsz)
    segments.append(seg)
    return at


def purgatory_memsz():
    """Memory reserved for purgatory: its size for the largest segment list, page-rounded."""
    code, _ = purgatory_segment(0, entry=0, zero_page=0, segments=[(0, b"")] * MAX_SEGMENTS)
    return _page_up(len(code))


def plan_linux_load(m, image, flags, command_line, *, mem_min=0, mem_max=U32,
                    elf_class=ELFCLASS32, purgatory_size=None):
    """Plan the ``--args-linux`` load of ``image`` (a :class:`~kjcore.loader.LoadedImage`)
    on machine ``m`` (read only: its memory map, ``crashkernel=`` and crash notes).

    ``command_line`` is bytes (None: empty); ``mem_max`` is inclusive; ``purgatory_size``
    defaults to :func:`purgatory_memsz`.  Returns a :class:`LinuxLoad`.
    """
    ram, crash = iomem(m)
    lo, hi = mem_min, mem_max
    if flags & KEXEC_ON_CRASH and not flags & KEXEC_PRESERVE_CONTEXT and crash is not None:
        lo, hi = max(lo, crash.start), min(hi, crash.end)
    segments = list(image.segments)
    size = _page_up(purgatory_size if purgatory_size is not None else purgatory_memsz())
    purgatory_at = locate_hole(ram, segments, size, PAGE_SIZE, lo, hi, top=False)
    purgatory = Segment.zero(0, purgatory_at, size)
    segments.append(purgatory)
    cmdline = bytes(command_line or b"")
    param_at = locate_hole(ram, segments, PARAM_MEMSZ, 16, lo, hi, top=False)
    param_slot = len(segments)
    segments.append(Segment.zero(0, param_at, PARAM_MEMSZ))     # its bytes come last
    backup = elfcorehdr = None
    if flags & (KEXEC_ON_CRASH | KEXEC_PRESERVE_CONTEXT):
        # kexec-tools works on a copy cut to the kernel's buffer (strncpy + NUL)
        text = cmdline.split(b"\0")[0][:COMMAND_LINE_SIZE - 1].decode("latin-1")
        text, backup, elfcorehdr = _crashdump_segments(m, ram, crash, segments, flags, text,
                                                       lo, hi, mem_max, elf_class)
        cmdline = text.encode("latin-1")
    params = boot_params(param_at, cmdline, memory_map(m))
    assert len(params) == PARAM_BUFFER_SIZE
    segments[param_slot] = Segment(params, param_at, PARAM_MEMSZ)
    segments.remove(purgatory)
    return LinuxLoad(tuple(segments), purgatory, image.entry, param_at, cmdline, backup,
                     elfcorehdr)


def _crashdump_segments(m, ram, crash, segments, flags, text, lo, hi, mem_max, elf_class):
    """kexec-tools' ``load_crashdump_segments``: (command line, backup, elfcorehdr address)."""
    ranges, reserved = crash_memory_ranges(ram, crash, flags, mem_max)
    mmap = MemoryMap()
    mmap.add(BACKUP_SRC_START, BACKUP_SRC_SIZE)
    mmap.add(reserved.start, reserved.end - reserved.start + 1)
    backup = None
    backup_at = None
    if not flags & KEXEC_PRESERVE_CONTEXT:
        size = -(-BACKUP_SRC_SIZE // ELF_CORE_HEADER_ALIGN) * ELF_CORE_HEADER_ALIGN
        backup_at = _add_buffer(ram, segments, None, size, ELF_CORE_HEADER_ALIGN, lo, hi,
                                top=True)
        mmap.delete(backup_at, size)
        backup = (BACKUP_SRC_START, backup_at, BACKUP_SRC_SIZE)
    loads = [LoadRange(backup_at if (r.start, r.end + 1) == (0, BACKUP_SRC_SIZE)
                       and backup_at is not None else r.start, r.start, r.end - r.start + 1)
             for r in ranges]
    header = build_elfcorehdr([(m.crash_notes, MAX_NOTE_BYTES)], loads, elf_class=elf_class)
    at = _add_buffer(ram, segments, header, max(ELFCOREHDR_MIN_MEMSZ, len(header)),
                     ELF_CORE_HEADER_ALIGN, lo, hi, top=True)
    mmap.delete(at, len(header))
    text = append_option(text, mmap.options())
    text = append_option(text, f" elfcorehdr={at // 1024}K")
    return text, backup, at


def finish_linux_load(plan, segments):
    """``(segments, entry)`` with purgatory's bytes in place of ``plan.purgatory``: its
    digests cover every other segment of ``segments`` (the sorted final list, backups
    included), their buffers zero-padded to ``memsz``."""
    others = [(s.mem, bytes(s.read(0, s.bufsz)) + bytes(s.memsz - s.bufsz))
              for s in segments if s is not plan.purgatory]
    code, entry = purgatory_segment(plan.purgatory.mem, entry=plan.kernel_entry,
                                    zero_page=plan.zero_page, segments=others,
                                    backup=plan.backup)
    if len(code) > plan.purgatory.memsz:
        raise LoaderError("purgatory", f"{len(code):#x} bytes do not fit the "
                                       f"{plan.purgatory.memsz:#x} reserved for them")
    final = [Segment(code, s.mem, s.memsz) if s is plan.purgatory else s for s in segments]
    return final, entry
