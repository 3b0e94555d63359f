"""The kexec-tools side of a load: images to ``Segment`` lists, plus the ``kjexec`` helpers.

This is what ``kexec -l`` does in user space before it calls ``kexec_load(2)`` (SPEC section 10):
parse the image, turn each loadable piece into a ``struct kexec_segment``, add the backup
segments ``--load-preserve-context`` needs, sort the list and refuse overlaps. Nothing here
touches a :class:`~kjcore.Machine`; the result is handed to ``Machine.kexec_load``.

Every refusal is a :class:`LoaderError` (a ``ValueError``) whose ``field`` names the ELF field or
parameter at fault. Segment buffers are slices of the caller's data, never copies.

An i386 ELF executable with one loadable segment, built by hand:

>>> import struct
>>> ehdr = struct.pack("<4s3B9xHHIIIIIHHHHHH", b"\\x7fELF", 1, 1, 1, 2, 3, 1,
...                    0x100000, 52, 0, 0, 52, 32, 1, 0, 0, 0)
>>> phdr = struct.pack("<8I", 1, 84, 0x100000, 0x100000, 5, 0x2100, 5, 0x1000)
>>> image = load_elf32(ehdr + phdr + b"\\xeb\\xfe\\x90\\x90\\x90")
>>> image.segments
(Segment(bufsz=5, mem=0x100000, memsz=0x3000),)
>>> hex(image.entry)
'0x100000'

Differences from kexec-tools (each is repeated where it applies):

- ``ET_CORE`` files load (SPEC section 10); kexec-tools' i386 ELF probe takes only ``ET_EXEC`` and
  ``ET_DYN``. ``EM_486`` and big-endian files, which kexec-tools accepts, are refused: the SPEC
  loads ``EM_386`` only, and an i386 image is little-endian.
- ``ET_DYN`` files are loaded at their ``p_paddr`` like ``ET_EXEC``; kexec-tools moves them to the
  lowest free hole when that range is not usable RAM. Use :func:`find_hole` to relocate by hand.
- More than 16 segments is an error here, before the system call; kexec-tools only warns and
  lets ``kexec_load`` fail with EINVAL.
- A file with no loadable segment is refused; kexec-tools would call ``kexec_load`` with zero
  segments, which *unloads* the current image.
- PT_NOTE contents are not parsed (kexec-tools walks the notes without bounds checks).
- Placement against RAM and ``--mem-min``/``--mem-max`` is a separate step,
  :func:`check_placement`; :func:`load_elf32` knows nothing about the machine.
"""
from typing import NamedTuple

from .constants import KEXEC_SEGMENT_MAX, PAGE_SIZE, U32
from .elf32 import PT_INTERP, PT_LOAD, LoaderError, byte_view, parse_elf32
from .segment import Segment

__all__ = ["LoadedImage", "LoaderError", "load_elf32", "load_flat", "sort_segments",
           "check_placement", "preserve_context_backup_segments", "find_hole",
           "jump_back_helper"]

_ADDR_END = 1 << 32


class LoadedImage(NamedTuple):
    """What a loader hands to ``kexec_load``: the segments (sorted by address) and the entry."""
    segments: tuple
    entry: int


def _page_up(n):
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _page_down(n):
    return n & ~(PAGE_SIZE - 1)


def _check_u32(field, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value <= U32:
        raise LoaderError(field, f"{value:#x} is not a 32-bit physical address")
    return value


def sort_segments(segments):
    """Sort segments by ``mem`` and refuse more than 16 or any overlap; return a tuple.

    This is the last user-space step before ``kexec_load`` (kexec-tools' ``sort_segments``).
    Ranges are compared without 32-bit wrap-around: a segment ending exactly at 4 GiB is fine.
    Zero-length segments are kept (the jump-back helper is one); ties sort the shorter
    segment first, so an empty segment at either end of another does not overlap it and one
    strictly inside does, as in the kernel's own test (SPEC section 4.1, rule 9).

    >>> sort_segments([Segment.zero(0, 0x3000, 0x1000), Segment.zero(0, 0x1000, 0x2000)])
    (Segment(bufsz=0, mem=0x1000, memsz=0x2000, zero), \
Segment(bufsz=0, mem=0x3000, memsz=0x1000, zero))
    >>> sort_segments([Segment.zero(0, 0x1000, 0x2000), Segment.zero(0, 0x2000, 0x1000)])
    Traceback (most recent call last):
    ...
    kjcore.errors.LoaderError: mem: segment [0x2000, 0x3000) overlaps segment [0x1000, 0x3000)
    """
    ordered = sorted(segments, key=lambda s: (s.mem, s.memsz))
    if len(ordered) > KEXEC_SEGMENT_MAX:
        raise LoaderError("nr_segments", f"{len(ordered)} segments, kexec_load takes at most "
                                         f"KEXEC_SEGMENT_MAX = {KEXEC_SEGMENT_MAX}")
    for prev, seg in zip(ordered, ordered[1:]):
        if prev.mem + prev.memsz > seg.mem:
            raise LoaderError("mem", f"segment [{seg.mem:#x}, {seg.mem + seg.memsz:#x}) overlaps "
                                     f"segment [{prev.mem:#x}, {prev.mem + prev.memsz:#x})")
    return tuple(ordered)


def load_elf32(data):
    """Turn an i386 ELF32 file into segments the way ``kexec -l --args-none`` does.

    Each ``PT_LOAD`` program header becomes one segment at ``p_paddr`` with the first
    ``min(p_filesz, p_memsz)`` bytes at ``p_offset`` as its buffer (a zero-copy slice of
    ``data``) and ``p_memsz`` rounded up to a page; headers with ``p_memsz == 0`` are dropped.
    The entry is ``e_entry``. This *is* kexec-tools' ``--args-none`` load: no purgatory, no
    boot notes or Linux parameters, the image is entered at ``e_entry`` directly; ``kjexec
    --entry=ADDR`` overrides the entry afterwards.

    Parameters
    ----------
    data : bytes-like
        The whole file (``bytes``, ``bytearray``, ``mmap``, numpy ``uint8`` array...).

    Returns
    -------
    LoadedImage
        ``segments`` sorted by address, checked for overlap, at most 16.

    Raises
    ------
    LoaderError
        With ``field`` naming what is wrong: an ``e_ident``/``EI_*`` or ``Elf32_Ehdr`` field
        (not an i386 ELF32 little-endian file, truncated header), ``e_type`` (not ET_EXEC,
        ET_DYN or ET_CORE), ``e_machine`` (not EM_386), ``e_phoff``/``e_phnum``/``e_phentsize``
        (missing, truncated or odd program header table), ``e_shoff``/``e_shentsize``/``sh_*``
        (bad section table, checked as kexec-tools does), ``p_offset``/``p_filesz`` (bytes past
        the end of the file), ``p_type`` (PT_INTERP present, or nothing to load), ``p_paddr``
        (not page aligned), ``p_memsz`` (range wraps past 4 GiB), ``nr_segments`` (more
        than 16), ``mem`` (segments overlap once page-rounded).

    Notes
    -----
    Where kjcore and kexec-tools differ:

    - ``ET_CORE`` is accepted (SPEC section 10); kexec-tools' ``elf_x86_probe`` refuses it.
    - ``EM_486`` and ``ELFDATA2MSB`` are refused; kexec-tools accepts both.
    - ``ET_DYN`` is not relocated: kexec-tools moves an ``ET_DYN`` image whose range is not
      usable RAM to the lowest free hole (and adds the offset to ``e_entry``); kjcore loads it
      at ``p_paddr`` and leaves relocation to the caller (see :func:`find_hole`).
    - No loadable segment is an error (kexec-tools would ask the kernel to *unload*).
    - More than 16 segments is an error here, not a warning followed by EINVAL.
    - A segment whose page-rounded size no longer fits 32 bits is refused (``p_memsz``);
      kexec-tools' 32-bit rounding wraps it to size 0.

    Like kexec-tools, kjcore refuses unaligned ``p_paddr`` instead of rounding it down, requires
    the whole ``p_filesz`` (not only the bytes loaded) to be in the file, and checks every
    program header, not only ``PT_LOAD``, for bytes past the end and address wrap.

    >>> load_elf32(b"MZ" + bytes(100))
    Traceback (most recent call last):
    ...
    kjcore.errors.LoaderError: e_ident: bad magic b'MZ\\x00\\x00', not an ELF file
    """
    view, ehdr, phdrs = parse_elf32(data)
    segments = []
    for i, ph in enumerate(phdrs):
        if ph.p_type == PT_INTERP:
            raise LoaderError("p_type", f"program header {i} is PT_INTERP: the image needs an "
                                        "ELF interpreter, kexec cannot load it")
    for i, ph in enumerate(phdrs):
        if ph.p_type != PT_LOAD or ph.p_memsz == 0:
            continue
        if ph.p_paddr % PAGE_SIZE:
            raise LoaderError("p_paddr", f"program header {i}: {ph.p_paddr:#x} is not page "
                                         "aligned (kexec-tools does not round it down)")
        # p_paddr is aligned and p_paddr + p_memsz < 2**32 (checked by the parser), so the
        # rounded end is at most 4 GiB; only the size itself can outgrow 32 bits (p_paddr 0).
        memsz = _page_up(ph.p_memsz)
        if memsz > U32:
            raise LoaderError("p_memsz", f"program header {i}: {ph.p_memsz:#x} rounded up to a "
                                         "page does not fit 32 bits")
        bufsz = min(ph.p_filesz, ph.p_memsz)
        segments.append(Segment(view[ph.p_offset:ph.p_offset + bufsz], ph.p_paddr, memsz))
    if not segments:
        raise LoaderError("p_type", "no PT_LOAD program header with p_memsz > 0: nothing to "
                                    "load")
    return LoadedImage(sort_segments(segments), ehdr.e_entry)


def load_flat(data, at, entry=None):
    """Load a raw binary image at physical address ``at``; the entry defaults to ``at``.

    The segment's buffer is ``data`` itself (not copied); ``memsz`` is ``len(data)`` rounded up
    to a page. kexec-tools has no raw-image loader for i386: this is what its ``add_segment``
    would make of one buffer.

    >>> image = load_flat(b"\\xf4", at=0x200000)
    >>> image.segments, hex(image.entry)
    ((Segment(bufsz=1, mem=0x200000, memsz=0x1000),), '0x200000')
    >>> load_flat(b"\\xf4", at=0x200010)
    Traceback (most recent call last):
    ...
    kjcore.errors.LoaderError: at: 0x200010 is not page aligned
    """
    view = byte_view(data)
    _check_u32("at", at)
    if at % PAGE_SIZE:
        raise LoaderError("at", f"{at:#x} is not page aligned")
    if len(view) == 0:
        raise LoaderError("data", "empty image: nothing to load")
    memsz = _page_up(len(view))
    if at + memsz > _ADDR_END:
        raise LoaderError("data", f"{len(view):#x} bytes at {at:#x} pass 4 GiB")
    entry = at if entry is None else _check_u32("entry", entry)
    return LoadedImage((Segment(view, at, memsz),), entry)


def _check_window(mem_min, mem_max, ram_size):
    """Validate ``[mem_min, mem_max]`` (inclusive) and ``ram_size``; return the exclusive end."""
    _check_u32("mem_min", mem_min)
    _check_u32("mem_max", mem_max)
    if mem_min > mem_max:
        raise LoaderError("mem_max", f"{mem_max:#x} is below mem_min {mem_min:#x}")
    if isinstance(ram_size, bool) or not isinstance(ram_size, int):
        raise TypeError(f"ram_size must be an int, not {type(ram_size).__name__}")
    if not 0 < ram_size <= _ADDR_END:
        raise LoaderError("ram_size", f"{ram_size:#x} is not in (0, 4 GiB]")
    return min(mem_max + 1, ram_size)


def _free_ranges(segments, lo, hi):
    """The maximal sub-ranges of ``[lo, hi)`` no segment covers, in ascending order."""
    cursor = lo
    for seg in sorted(segments, key=lambda s: s.mem):
        if seg.memsz == 0:
            continue
        start, end = seg.mem, seg.mem + seg.memsz
        if end <= cursor:
            continue
        if start >= hi:
            break
        if start > cursor:
            yield cursor, start
        cursor = end
    if cursor < hi:
        yield cursor, hi


def check_placement(segments, mem_min=0, mem_max=U32, ram_size=None):
    """Refuse segments outside RAM or outside ``[mem_min, mem_max]`` (kexec-tools'
    ``valid_memory_segment``, applied to every segment just before the system call).

    ``mem_max`` is inclusive, like ``--mem-max``. ``ram_size=None`` skips the RAM test.

    >>> check_placement([Segment.zero(0, 0x100000, 0x1000)], mem_max=0xFFFFF)
    Traceback (most recent call last):
    ...
    kjcore.errors.LoaderError: mem: segment [0x100000, 0x100fff] is outside [mem_min, mem_max] = \
[0x0, 0xfffff]
    """
    end = _check_window(mem_min, mem_max, _ADDR_END if ram_size is None else ram_size)
    for seg in segments:
        last = seg.mem + seg.memsz - 1
        if seg.mem < mem_min or last > mem_max:
            raise LoaderError("mem", f"segment [{seg.mem:#x}, {last:#x}] is outside "
                                     f"[mem_min, mem_max] = [{mem_min:#x}, {mem_max:#x}]")
        if last >= end:
            raise LoaderError("mem", f"segment [{seg.mem:#x}, {last:#x}] is not in RAM "
                                     f"[0, {ram_size:#x})")


def preserve_context_backup_segments(segments, mem_min, mem_max, ram_size):
    """The zero "backup" segments ``kexec -l --load-preserve-context`` adds.

    They cover every RAM byte of ``[mem_min, mem_max]`` (``mem_max`` inclusive) that no segment
    of the image covers, each range rounded *inward* to whole pages, so that the jump swaps
    that memory out and the first kernel's pages there survive the round trip. RAM is
    ``[0, ram_size)``. Each backup is ``Segment.zero(0, mem, memsz)`` (no buffer: the kernel
    zero-fills it). Returns them sorted; combine with the image and call :func:`sort_segments`.

    ``mem_max`` is required: ``--load-preserve-context`` without ``--mem-max`` is refused.

    >>> image = load_flat(b"\\x90" * 0x1800, at=0x2000)
    >>> backups = preserve_context_backup_segments(image.segments, 0x800, 0x7FFF, 1 << 20)
    >>> backups
    (Segment(bufsz=0, mem=0x1000, memsz=0x1000, zero), \
Segment(bufsz=0, mem=0x4000, memsz=0x4000, zero))
    >>> [hex(s.mem) for s in sort_segments(image.segments + backups)]
    ['0x1000', '0x2000', '0x4000']

    Notes
    -----
    kexec-tools (``add_backup_segments``) differs in three places:

    - its RAM ranges have inclusive ends and its clipping subtracts them as if exclusive, so
      the last page of a RAM range is never backed up; kjcore covers it;
    - a free range shorter than a page after inward rounding gives it a negative size that
      wraps and ends in an "Invalid memory segment" failure; kjcore simply skips it;
    - ``--mem-max=0xffffffff`` reads as "not given" on i386 (ULONG_MAX is the default) and is
      refused; here only ``mem_max=None`` means "not given".
    """
    if mem_max is None:
        raise LoaderError("mem_max", "--load-preserve-context needs --mem-max: the memory range "
                                     "the new image may use must be bounded")
    hi = _check_window(mem_min, mem_max, ram_size)
    backups = []
    for start, end in _free_ranges(segments, mem_min, hi):
        start, end = _page_up(start), _page_down(end)
        if end > start:
            backups.append(Segment.zero(0, start, end - start))
    return tuple(backups)


def find_hole(segments, size, mem_min, mem_max, ram_size, align=PAGE_SIZE, *, top=False):
    """The lowest (or with ``top=True`` highest) free address for ``size`` bytes.

    The hole lies in RAM ``[0, ram_size)`` and in ``[mem_min, mem_max]`` (inclusive), covers no
    segment, starts on a multiple of ``align`` (at least a page, a power of two) and spans
    ``size`` rounded up to a page, like kexec-tools' ``locate_hole`` behind ``add_buffer``.

    >>> used = [Segment.zero(0, 0x0, 0x3000)]
    >>> hex(find_hole(used, 0x1800, 0, 0xFFFFF, 1 << 20))
    '0x3000'
    >>> hex(find_hole(used, 0x1800, 0, 0xFFFFF, 1 << 20, align=0x10000))
    '0x10000'
    >>> hex(find_hole(used, 0x1800, 0, 0xFFFFF, 1 << 20, top=True))
    '0xfe000'
    >>> find_hole(used, 0x100000, 0, 0xFFFFF, 1 << 20)
    Traceback (most recent call last):
    ...
    kjcore.errors.LoaderError: size: no free area of 0x100000 bytes aligned to 0x1000 in RAM \
within [0x0, 0xfffff]

    Notes
    -----
    kexec-tools scans *all* holes in the ``top`` case and keeps the last one that fits, which is
    the highest; kjcore returns the same address. ``size == 0`` is refused here; kexec-tools
    treats it as "any hole".
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if not 0 < size <= _ADDR_END:
        raise LoaderError("size", f"{size:#x} is not in (0, 4 GiB]")
    if isinstance(align, bool) or not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise LoaderError("align", f"{align!r} is not a power of two")
    align = max(align, PAGE_SIZE)
    hi = _check_window(mem_min, mem_max, ram_size)
    need = _page_up(size)
    found = None
    for start, end in _free_ranges(segments, mem_min, hi):
        if top:
            base = (end - need) & ~(align - 1)
            if end >= need and base >= start:
                found = base
        else:
            base = (start + align - 1) & ~(align - 1)
            if base + need <= end:
                found = base
                break
    if found is None:
        raise LoaderError("size", f"no free area of {need:#x} bytes aligned to {align:#x} in RAM "
                                  f"within [{mem_min:#x}, {mem_max:#x}]")
    return found


def jump_back_helper(entry):
    """The ``kexec --load-jump-back-helper --entry=ADDR`` image.

    One empty segment at address 0 and the given entry: loaded with ``KEXEC_PRESERVE_CONTEXT``
    (the caller adds the flag) in the *second* kernel, it makes the next ``kexec -e`` jump back
    to ``ADDR`` in the first one. The caller also refuses it when an image is already loaded.

    >>> jump_back_helper(0x1234000)
    LoadedImage(segments=(Segment(bufsz=0, mem=0x0, memsz=0x0, zero),), entry=19087360)

    ``entry=0`` is refused as kexec-tools refuses it ("Please specify jump back entry"): there 0
    means "no ``--entry`` given".
    """
    if entry is None or entry == 0:
        raise LoaderError("entry", "the jump-back helper needs the jump-back address "
                                   "(--entry=ADDR, not 0)")
    _check_u32("entry", entry)
    return LoadedImage((Segment.zero(0, 0, 0),), entry)
