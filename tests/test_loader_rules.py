"""kjcore.loader: placement, backup, hole-finding and jump-back-helper rules of SPEC
section 10, and what kexec_load makes of the result."""

import numpy as np
import pytest
from elfbuild import Phdr, build_elf32
from hypothesis import given
from hypothesis import strategies as st
from loader_world import HYP, refused

from kjcore.constants import KEXEC_SEGMENT_MAX, PAGE_SIZE, U32
from kjcore.loader import (
    LoadedImage,
    check_placement,
    find_hole,
    jump_back_helper,
    load_elf32,
    load_flat,
    preserve_context_backup_segments,
    sort_segments,
)
from kjcore.segment import Segment

# ---------------------------------------------------------------------------------------------
# load_flat

def test_load_flat():
    data = b"\xf4" * 5000
    image = load_flat(data, at=0x200000)
    assert image == LoadedImage((Segment(data, 0x200000, 0x2000),), 0x200000)
    assert load_flat(data, at=0x200000, entry=0x200010).entry == 0x200010
    assert image.segments[0].buf.obj is data                            # no copy


def test_load_flat_errors():
    refused("at", lambda: load_flat(b"x", at=0x200001))
    refused("at", lambda: load_flat(b"x", at=1 << 32))
    refused("data", lambda: load_flat(b"", at=0))
    refused("data", lambda: load_flat(b"x" * 0x1001, at=0xFFFFF000))
    refused("entry", lambda: load_flat(b"x", at=0, entry=-1))
    assert load_flat(b"x", at=0xFFFFF000).segments[0].memsz == PAGE_SIZE


# ---------------------------------------------------------------------------------------------
# sort_segments / check_placement

def test_sort_segments_rules():
    a, b = Segment.zero(0, 0x1000, 0x2000), Segment.zero(0, 0x3000, 0x1000)
    assert sort_segments([b, a]) == (a, b)
    refused("nr_segments", lambda: sort_segments([Segment.zero(0, i * PAGE_SIZE, PAGE_SIZE)
                                                  for i in range(17)]))
    refused("mem", lambda: sort_segments([a, Segment.zero(0, 0x2000, 0x1000)]))
    # empty segments: at either end of another is fine, strictly inside overlaps
    for mem in (0x1000, 0x3000):
        assert len(sort_segments([a, Segment.zero(0, mem, 0)])) == 2
        assert len(sort_segments([Segment.zero(0, mem, 0), a])) == 2
    refused("mem", lambda: sort_segments([a, Segment.zero(0, 0x2000, 0)]))


def test_check_placement():
    seg = Segment.zero(0, 0x100000, 0x2000)
    check_placement([seg], mem_min=0x100000, mem_max=0x101FFF, ram_size=0x102000)
    refused("mem", lambda: check_placement([seg], mem_min=0x101000))
    refused("mem", lambda: check_placement([seg], mem_max=0x101FFE))
    refused("mem", lambda: check_placement([seg], ram_size=0x101000))
    refused("mem_max", lambda: check_placement([seg], mem_min=5, mem_max=4))
    refused("ram_size", lambda: check_placement([seg], ram_size=0))


# ---------------------------------------------------------------------------------------------
# --load-preserve-context backup segments

def test_preserve_context_requires_mem_max():
    refused("mem_max", lambda: preserve_context_backup_segments((), 0, None, 1 << 20))


def test_backups_fill_the_window_around_the_image():
    image = load_flat(b"k" * 0x3000, at=0x10000)
    backups = preserve_context_backup_segments(image.segments, 0x1000, 0x1FFFF, 1 << 20)
    assert backups == (Segment.zero(0, 0x1000, 0xF000), Segment.zero(0, 0x13000, 0xD000))
    assert all(s.bufsz == 0 and s.buf is None for s in backups)


def test_backups_rounded_inward_and_clipped_to_ram():
    backups = preserve_context_backup_segments((), 0x1001, 0x7FFE, 0x6000)
    assert backups == (Segment.zero(0, 0x2000, 0x4000),)
    # a window that holds no whole free page gives no backup at all
    assert preserve_context_backup_segments((), 0x1001, 0x1FFF, 1 << 20) == ()
    assert preserve_context_backup_segments((), 0x200000, 0x2FFFFF, 1 << 20) == ()


def test_backups_include_the_last_ram_page():
    # kexec-tools loses the last page of a RAM range (inclusive end subtracted as exclusive)
    ram = 1 << 20
    assert preserve_context_backup_segments((), 0, U32, ram) == (Segment.zero(0, 0, ram),)


def naive_pages(segments, ram_pages):
    used = np.zeros(ram_pages, dtype=bool)
    for s in segments:
        used[s.mem // PAGE_SIZE:min(ram_pages, -(-(s.mem + s.memsz) // PAGE_SIZE))] = True
    return used


@st.composite
def placement_cases(draw):
    ram_pages = draw(st.integers(1, 96))
    slots = draw(st.lists(st.integers(0, 120), max_size=6, unique=True))
    segments = []
    for page in sorted(slots):
        if not segments or segments[-1].mem + segments[-1].memsz <= page * PAGE_SIZE:
            segments.append(Segment.zero(0, page * PAGE_SIZE,
                                         draw(st.integers(1, 4)) * PAGE_SIZE))
    mem_min = draw(st.integers(0, 130 * PAGE_SIZE))
    mem_max = draw(st.integers(mem_min, 130 * PAGE_SIZE))
    return segments, mem_min, mem_max, ram_pages * PAGE_SIZE


@HYP
@given(placement_cases())
def test_backups_match_a_naive_page_map(case):
    segments, mem_min, mem_max, ram_size = case
    ram_pages = ram_size // PAGE_SIZE
    backups = preserve_context_backup_segments(segments, mem_min, mem_max, ram_size)
    # every page wholly inside [mem_min, mem_max] and RAM, not used by the image, is backed up
    want = ~naive_pages(segments, ram_pages)
    first, last = -(-mem_min // PAGE_SIZE), (mem_max + 1) // PAGE_SIZE
    want[:first] = False
    want[last:] = False
    assert np.array_equal(naive_pages(backups, ram_pages), want)
    assert all(s.mem % PAGE_SIZE == 0 and s.memsz % PAGE_SIZE == 0 and s.memsz for s in backups)
    assert all(mem_min <= s.mem and s.mem + s.memsz - 1 <= mem_max for s in backups)
    sort_segments(segments + list(backups)[:KEXEC_SEGMENT_MAX - len(segments)])  # no overlap


# ---------------------------------------------------------------------------------------------
# find_hole

@HYP
@given(placement_cases(), st.integers(1, 8 * PAGE_SIZE), st.sampled_from([1, PAGE_SIZE, 0x4000]),
       st.booleans())
def test_find_hole_matches_brute_force(case, size, align, top):
    segments, mem_min, mem_max, ram_size = case
    used = naive_pages(segments, ram_size // PAGE_SIZE)
    need, step = -(-size // PAGE_SIZE), max(align, PAGE_SIZE) // PAGE_SIZE
    fits = [p for p in range(0, ram_size // PAGE_SIZE - need + 1, step)
            if not used[p:p + need].any() and p * PAGE_SIZE >= mem_min
            and (p + need) * PAGE_SIZE - 1 <= mem_max]
    if not fits:
        refused("size", lambda: find_hole(segments, size, mem_min, mem_max, ram_size, align,
                                          top=top))
    else:
        got = find_hole(segments, size, mem_min, mem_max, ram_size, align, top=top)
        assert got == (fits[-1] if top else fits[0]) * PAGE_SIZE


def test_find_hole_argument_errors():
    refused("size", lambda: find_hole((), 0, 0, U32, 1 << 20))
    refused("align", lambda: find_hole((), 1, 0, U32, 1 << 20, align=0x3000))
    refused("mem_min", lambda: find_hole((), 1, -1, U32, 1 << 20))


# ---------------------------------------------------------------------------------------------
# --load-jump-back-helper

def test_jump_back_helper():
    image = jump_back_helper(0x1234560)
    assert image.entry == 0x1234560
    (seg,) = image.segments
    assert (seg.bufsz, seg.mem, seg.memsz, seg.buf) == (0, 0, 0, None)


@pytest.mark.parametrize("entry", [None, 0, 1 << 32, -4])
def test_jump_back_helper_needs_an_entry(entry):
    refused("entry", lambda: jump_back_helper(entry))


# ---------------------------------------------------------------------------------------------
# What the loader produces is what kexec_load takes

def test_loaded_segments_go_through_kexec_load():
    kjcore = pytest.importorskip("kjcore")
    if not hasattr(kjcore, "Machine"):
        pytest.skip("kjcore.Machine not available")
    m = kjcore.Machine(ram_size=16 << 20)
    data = build_elf32([Phdr(0x800000, b"\xf4" * 300, 0x1800), Phdr(0x900000, b"", 0x4000)],
                       entry=0x800000)
    image = load_elf32(data)
    mem_min, mem_max = 0x800000, 0xBFFFFF
    backups = preserve_context_backup_segments(image.segments, mem_min, mem_max, m.ram.size)
    segments = sort_segments(image.segments + backups)
    check_placement(segments, mem_min, mem_max, m.ram.size)
    m.kexec_load(image.entry, list(segments), flags=kjcore.KEXEC_PRESERVE_CONTEXT)
    loaded = m.kexec_image
    assert loaded.start == 0x800000 and loaded.preserve_context
    assert sum(s.memsz for s in loaded.segments) == mem_max + 1 - mem_min

    helper = jump_back_helper(0x1234000)
    fresh = kjcore.Machine(ram_size=16 << 20)
    fresh.kexec_load(helper.entry, list(helper.segments), flags=kjcore.KEXEC_PRESERVE_CONTEXT)
    assert fresh.kexec_image.start == 0x1234000
