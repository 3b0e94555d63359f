"""Hypothesis strategies for kexec layouts, loaded images and payloads (SPEC §11).

Requires ``hypothesis`` (in the ``test`` extra).  Every choice is a hypothesis draw, so a
failing example shrinks: toward fewer and smaller segments, lower addresses, simpler contents
and, for :func:`payloads`, fewer and simpler operations.

* Segment contents are not random bytes: each 32-bit word holds its own destination address
  XOR a drawn ``salt``.  Every page differs from every other, a page found in the wrong place
  says where it belongs, and a shrunk example shows the plain pattern (salt 0).
* :func:`payloads` builds with :class:`kjcore.fuzz.payloads.PayloadBuilder`, the generator
  the campaigns drive with a numpy seed, with hypothesis answering each of its choices.

>>> from hypothesis import given, settings
>>> from kjcore.testing.strategies import kimages
>>> @settings(max_examples=5, deadline=None)
... @given(kimages(ram_size=16 << 20))
... def test(m):
...     img = m.kexec_image
...     assert img.source_pages().size == sum(s.memsz for s in img.segments) // 4096
>>> test()
"""
import numpy as np
from hypothesis import strategies as st

from ..constants import KEXEC_PRESERVE_CONTEXT, PAGE_SIZE
from ..fuzz.payloads import PayloadBuilder
from ..machine import Machine
from ..segment import Segment

#: at most this many drawn bytes in a payload's buffer (the rest is zero): hypothesis draws a
#: few KiB per example at most, and a shrunk example shows only the bytes that matter
PAYLOAD_DATA_MARKS = 16


def address_pattern(mem, nbytes, salt=0):
    """``nbytes`` bytes for destination ``mem``: each little-endian word is its own address
    XOR ``salt``."""
    words = (np.arange(-(-nbytes // 4), dtype=np.uint64) * 4 + mem) & 0xFFFFFFFF
    return (words.astype("<u4") ^ np.uint32(salt)).view(np.uint8)[:nbytes]


@st.composite
def segments(draw, *, lo=0, hi=64 << 20, max_pages=8, data=True):
    """One page-aligned segment inside ``[lo, hi)`` with ``bufsz <= memsz``.

    With ``data`` the buffer holds :func:`address_pattern` with a drawn salt, else it is a
    :meth:`Segment.zero` buffer.
    """
    pages = draw(st.integers(0, max_pages))
    first = draw(st.integers(lo // PAGE_SIZE, max(lo // PAGE_SIZE, hi // PAGE_SIZE - pages)))
    bufsz, salt = draw(_buffer(pages * PAGE_SIZE, data))
    return _segment(bufsz, first * PAGE_SIZE, pages * PAGE_SIZE, salt)


def _buffer(memsz, data):
    """``(bufsz, salt)`` for a segment of ``memsz`` bytes; salt None without ``data``."""
    salts = st.integers(0, 2**32 - 1) if data else st.none()
    return st.tuples(st.integers(0, memsz), salts)


def _segment(bufsz, mem, memsz, salt):
    if salt is None:
        return Segment.zero(bufsz, mem, memsz)
    return Segment(address_pattern(mem, bufsz, salt), mem, memsz)


@st.composite
def _piece(draw, max_pages, data):
    """One segment of a layout: ``(pages, pages of gap before it, bufsz, salt)``, drawn
    together so that shrinking can drop a whole segment."""
    pages = draw(st.integers(0, max_pages))
    gap = draw(st.integers(0, 4))
    return (pages, gap) + draw(_buffer(pages * PAGE_SIZE, data))


@st.composite
def segment_layouts(draw, *, lo=0, hi=64 << 20, max_segments=16, max_pages=8, data=True):
    """A list of 1..max_segments disjoint segments in ``[lo, hi)``, in random order.

    Touching segments and empty segments (also at another segment's ends) are common.
    """
    npages = hi // PAGE_SIZE - lo // PAGE_SIZE
    pieces = draw(st.lists(_piece(max_pages, data), min_size=1, max_size=max_segments))
    if sum(p[0] + p[1] for p in pieces) > npages:
        pieces = [(0, 0, 0, salt) for *_, salt in pieces]      # does not fit: all empty
    start = lo // PAGE_SIZE + draw(st.integers(0, npages - sum(p[0] + p[1] for p in pieces)))
    segs = []
    for pages, gap, bufsz, salt in pieces:
        start += gap
        segs.append(_segment(bufsz, start * PAGE_SIZE, pages * PAGE_SIZE, salt))
        start += pages
    return draw(st.permutations(segs))


@st.composite
def kimages(draw, *, ram_size=16 << 20, kernel_reserved=4 << 20, profile="2.6.27",
            preserve_context=True, max_segments=16, max_pages=8):
    """A fresh :class:`Machine` with random RAM contents and a normal image loaded.

    Destinations lie anywhere in RAM (also over the first kernel's reserved region), so the
    destination-aware allocator's swaps and parking are exercised.
    """
    seed = draw(st.integers(0, 2**16))
    m = Machine(ram_size, kernel_reserved=kernel_reserved, profile=profile, alloc_seed=seed)
    fill = draw(st.integers(0, 255))
    m.ram[:] = fill
    segs = draw(segment_layouts(lo=0, hi=ram_size, max_segments=max_segments,
                                max_pages=max_pages))
    entry = segs[0].mem
    m.kexec_load(entry, segs, KEXEC_PRESERVE_CONTEXT if preserve_context else 0)
    return m


class _DrawnChoices:
    """What :class:`~kjcore.fuzz.payloads.PayloadBuilder` asks of a ``numpy.random.Generator``,
    answered by hypothesis draws.

    ``integers(low, high)`` is a drawn integer in ``[low, high)`` (``integers(high)``: in
    ``[0, high)``); ``integers(0, 256, size)`` (the buffer's initial bytes) zeros but for at
    most :data:`PAYLOAD_DATA_MARKS` drawn bytes at drawn offsets.
    """

    def __init__(self, draw):
        self._draw = draw

    def integers(self, low, high=None, size=None, dtype=None):
        if high is None:
            low, high = 0, low
        if size is None:
            return self._draw(st.integers(low, high - 1))
        if (low, high) != (0, 256):
            raise ValueError("only bytes (integers(0, 256, size)) are drawn as arrays")
        data = np.zeros(size, dtype=np.uint8)
        marks = st.tuples(st.integers(0, size - 1), st.integers(1, 255))
        for offset, value in self._draw(st.lists(marks, max_size=PAYLOAD_DATA_MARKS)):
            data[offset] = value
        return data


@st.composite
def payloads(draw, *, dest=0x80000, max_pages=4, max_ops=40, checkpoint_port=None):
    """A :class:`kjcore.fuzz.payloads.Payload` at ``dest``: 2..max_pages pages, up to
    ``max_ops`` random operations, any exit kind; every choice drawn by hypothesis.

    Before each operation a drawn boolean says whether another follows (as in ``st.lists``),
    so a failing example shrinks toward two pages, a ``call`` exit and only the operations
    that matter, each of the simplest kind with the smallest values.
    """
    npages = draw(st.integers(2, max_pages))
    exit = draw(st.sampled_from(("call", "ret", "mixed")))
    choices = _DrawnChoices(draw)
    builder = PayloadBuilder(dest, npages, checkpoint_port=checkpoint_port)
    for _ in range(max_ops):
        if not draw(st.booleans()):
            break
        builder.add_random_op(choices)
    return builder.finish(choices, exit)
