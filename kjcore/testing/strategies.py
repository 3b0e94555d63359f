"""Hypothesis strategies for kexec layouts and loaded images (SPEC §11).

Requires ``hypothesis`` (in the ``test`` extra).

>>> from hypothesis import given, settings
>>> from kjcore.testing.strategies import kimages
>>> @settings(max_examples=5, deadline=None)
... @given(kimages(ram_size=16 << 20))
... def test(m):
...     assert m.kexec_image.source_pages().size == sum(s.memsz for s in m.kexec_image.segments) // 4096
>>> test()
"""
import numpy as np
from hypothesis import strategies as st

from ..constants import KEXEC_PRESERVE_CONTEXT, PAGE_SIZE
from ..machine import Machine
from ..segment import Segment


@st.composite
def segments(draw, *, lo=0, hi=64 << 20, max_pages=8, data=True):
    """One page-aligned segment inside ``[lo, hi)`` with ``bufsz <= memsz``.

    With ``data`` the buffer holds random bytes (from a drawn seed), else it is a
    :meth:`Segment.zero` buffer.
    """
    pages = draw(st.integers(0, max_pages))
    first = draw(st.integers(lo // PAGE_SIZE, max(lo // PAGE_SIZE, hi // PAGE_SIZE - pages)))
    memsz = pages * PAGE_SIZE
    bufsz = draw(st.integers(0, memsz))
    mem = first * PAGE_SIZE
    return _segment(draw, bufsz, mem, memsz, data)


def _segment(draw, bufsz, mem, memsz, data):
    """A segment whose buffer is random bytes from a drawn seed (cheap to draw and to shrink)."""
    if not data:
        return Segment.zero(bufsz, mem, memsz)
    seed = draw(st.integers(0, 2**32 - 1))
    return Segment(np.random.default_rng(seed).integers(0, 256, bufsz, dtype=np.uint8), mem, memsz)


@st.composite
def segment_layouts(draw, *, lo=0, hi=64 << 20, max_segments=16, max_pages=8, data=True):
    """A list of 1..max_segments disjoint segments in ``[lo, hi)``, in random order.

    Touching segments and empty segments (also at another segment's ends) are common.
    """
    n = draw(st.integers(1, max_segments))
    npages = hi // PAGE_SIZE - lo // PAGE_SIZE
    sizes = draw(st.lists(st.integers(0, max_pages), min_size=n, max_size=n))
    gaps = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    if sum(sizes) + sum(gaps) > npages:
        sizes = [0] * n
        gaps = [0] * n
    start = lo // PAGE_SIZE + draw(st.integers(0, npages - sum(sizes) - sum(gaps)))
    segs = []
    for size, gap in zip(sizes, gaps):
        start += gap
        memsz = size * PAGE_SIZE
        bufsz = draw(st.integers(0, memsz))
        mem = start * PAGE_SIZE
        segs.append(_segment(draw, bufsz, mem, memsz, data))
        start += size
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
