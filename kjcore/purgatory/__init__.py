"""kjcore's purgatory: the code kexec runs between the relocation routine and a Linux-style image.

Written for this project (freestanding C and GNU as in this directory, built by its Makefile,
``purgatory.elf`` committed). Like kexec-tools' purgatory it runs in 32-bit flat protected
mode with paging off, recomputes the SHA-256 digest of every segment the loader listed and
compares it with the digest stored in its parameter block; on a mismatch it prints
``purgatory: SHA-256 mismatch in segment N at 0x..., 0x... bytes`` on the debug console (port
0xE9) and halts forever. Otherwise it copies the backup region (a crash load's first 640 KiB),
loads a boot GDT (flat code at 0x10, data at 0x18) and enters the image as the Linux/x86
32-bit boot protocol says: interrupts off, ESI = the zero page, EAX = EBX = ECX = EDX = EDI =
EBP = 0, and ESP as purgatory found it, so a preserve-context image still finds the jump-back
entry at [ESP] (SPEC 7.8).

>>> data, entry = purgatory_segment(0x200000, entry=0x100000, zero_page=0x90000,
...                                 segments=[(0x100000, b"image")])
>>> len(data) % 4096, hex(entry)
(0, '0x200000')
"""
import hashlib
import struct

from ..segment import check_u32
from .image import purgatory_image

__all__ = ["purgatory_segment", "MAX_SEGMENTS", "PAGE_SIZE"]

PAGE_SIZE = 4096
#: kexec takes 16 segments (KEXEC_SEGMENT_MAX); purgatory's own is one (purgatory.h)
MAX_SEGMENTS = 15
_LIMIT = 1 << 32
# struct purgatory_params (purgatory.h): six words, then the regions (mem, len, digest[32]).
_HEADER = struct.Struct("<6I")
_REGION = struct.Struct("<II32s")
PARAMS_SIZE = _HEADER.size + MAX_SEGMENTS * _REGION.size


def _range(name, start, size):
    """Check that [start, start + size) lies inside the 32-bit physical address space."""
    check_u32(f"{name} address", start)
    check_u32(f"{name} size", size)
    if start + size > _LIMIT:
        raise ValueError(f"{name} [{start:#x}, +{size:#x}) runs past 4 GiB")
    return start, start + size


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def _segment_views(segments):
    """The (mem, bytes view) pairs, checked: a list of at most MAX_SEGMENTS disjoint ranges."""
    if not isinstance(segments, (list, tuple)):
        raise TypeError(f"segments must be a list of (mem, data) pairs, not "
                        f"{type(segments).__name__}")
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"{len(segments)} segments: purgatory verifies at most {MAX_SEGMENTS} "
                         f"(kexec's 16 less its own)")
    views = []
    for i, pair in enumerate(segments):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"segments[{i}] must be a (mem, data) pair")
        mem, data = pair
        try:
            view = memoryview(data).cast("B")
        except TypeError as e:
            raise TypeError(f"segments[{i}] data must be a contiguous bytes-like object "
                            f"({e})") from None
        views.append((_range(f"segments[{i}]", mem, view.nbytes), view))
    spans = sorted((span, i) for i, (span, _) in enumerate(views))
    for (a, i), (b, j) in zip(spans, spans[1:]):
        if _overlap(a, b):
            raise ValueError(f"segments[{i}] [{a[0]:#x}, {a[1]:#x}) and segments[{j}] "
                             f"[{b[0]:#x}, {b[1]:#x}) overlap")
    return views


def _check_backup(backup):
    if backup is None:
        return 0, 0, 0
    if not isinstance(backup, (list, tuple)) or len(backup) != 3:
        raise TypeError("backup must be a (src, dst, size) triple or None")
    src, dst, size = backup
    a, b = _range("backup source", src, size), _range("backup destination", dst, size)
    if size == 0:
        raise ValueError("backup size is 0 (pass backup=None for no backup)")
    if _overlap(a, b):
        raise ValueError(f"backup source {src:#x} and destination {dst:#x} overlap "
                         f"({size:#x} bytes)")
    return src, dst, size


def purgatory_segment(load_address, *, entry, zero_page, segments, backup=None):
    """Purgatory relocated to ``load_address``, with its parameter block filled in.

    Returns ``(data, entry_address)``: ``data`` (a whole number of pages) is an ordinary kexec
    segment to load at ``load_address`` and ``entry_address`` is where kexec must start.
    ``segments`` lists the (mem, data) pairs purgatory verifies (every other segment of the
    load); ``backup`` = (src, dst, size) is copied after they verified. Purgatory then jumps
    to ``entry`` with ESI = ``zero_page``. Raises ``TypeError``/``ValueError`` for arguments
    purgatory cannot honour: unaligned or out-of-range addresses, more than MAX_SEGMENTS
    segments, segments overlapping each other or purgatory, a backup range overlapping
    itself or purgatory.
    """
    check_u32("entry", entry)
    check_u32("zero_page", zero_page)
    image = purgatory_image()
    size = -(-len(image.data) // PAGE_SIZE) * PAGE_SIZE
    own = _range("purgatory", load_address, size)
    if load_address % PAGE_SIZE:
        raise ValueError(f"purgatory load address {load_address:#x} is not page aligned")
    views = _segment_views(segments)
    for i, (span, _) in enumerate(views):
        if _overlap(span, own):
            raise ValueError(f"segments[{i}] at {span[0]:#x} overlaps purgatory "
                             f"[{own[0]:#x}, {own[1]:#x})")
    src, dst, length = _check_backup(backup)
    for name, start in (("source", src), ("destination", dst)):
        if length and _overlap((start, start + length), own):
            raise ValueError(f"backup {name} {start:#x} overlaps purgatory "
                             f"[{own[0]:#x}, {own[1]:#x})")

    offset, params_size = image.symbols["purgatory_params"]
    if params_size != PARAMS_SIZE:
        raise ValueError(f"purgatory.elf's parameter block is {params_size} bytes, "
                         f"this module packs {PARAMS_SIZE}: rebuild or update purgatory.h")
    out = bytearray(size)
    out[:len(image.data)] = image.data
    for at in image.relocations:
        word = int.from_bytes(out[at:at + 4], "little") + load_address
        out[at:at + 4] = (word % _LIMIT).to_bytes(4, "little")
    regions = b"".join(_REGION.pack(span[0], span[1] - span[0], hashlib.sha256(view).digest())
                       for span, view in views)
    block = _HEADER.pack(entry, zero_page, src, dst, length, len(views)) + regions
    out[offset:offset + len(block)] = block
    return bytes(out), load_address + image.entry
