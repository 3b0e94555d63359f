"""The kimage (SPEC §5) and load invariants 1-6 of SPEC §12."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kjcore
from kjcore import (
    IND_DESTINATION,
    IND_DONE,
    IND_INDIRECTION,
    IND_SOURCE,
    PAGE_SIZE,
    KexecError,
    Machine,
    Segment,
)
from kjcore.testing.strategies import kimages, segment_layouts

MiB = 1 << 20
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ram_words(m, addr, n):
    return m.ram[addr:addr + 4 * n].view("<u4")


def image_pages(img):
    """Every frame address the image owns besides destinations."""
    return set(img.source_pages().tolist()) | set(img.indirection_pages().tolist()) | \
        {img.control_page, img.swap_page}


def test_list_layout_in_ram(machine):
    segs = [Segment(b"A" * 5000, 0x800000, 0x2000), Segment.zero(0, 0x900000, 0),
            Segment(b"", 0x700000, 0x1000)]
    machine.kexec_load(0x800000, segs)
    img = machine.kexec_image
    assert img.head & 0xFFF == IND_INDIRECTION
    ind = img.head & ~0xFFF
    words = ram_words(machine, ind, 8).tolist()
    src = img.source_pages().tolist()
    assert words[:7] == [0x800000 | IND_DESTINATION, src[0] | IND_SOURCE, src[1] | IND_SOURCE,
                         0x900000 | IND_DESTINATION, 0x700000 | IND_DESTINATION,
                         src[2] | IND_SOURCE, IND_DONE]
    assert [f for f, _ in img.entries()] == [IND_INDIRECTION, IND_DESTINATION, IND_SOURCE,
                                             IND_SOURCE, IND_DESTINATION, IND_DESTINATION,
                                             IND_SOURCE, IND_DONE]


def test_indirection_pages_chain_every_1023_entries():
    m = Machine(32 * MiB)
    pages = 2 * 1023 + 5                      # 1 destination + 2051 sources + DONE
    m.kexec_load(0, [Segment.zero(0, 0x2000000, pages * PAGE_SIZE)])
    img = m.kexec_image
    ind = img.indirection_pages().tolist()
    assert len(ind) == 3
    for a, b in zip(ind, ind[1:]):
        assert ram_words(m, a, 1024)[1023] == b | IND_INDIRECTION
    # data entries per page: 1023, 1023, the rest
    assert ram_words(m, ind[0], 1)[0] == 0x2000000 | IND_DESTINATION
    words2 = ram_words(m, ind[2], 8).tolist()
    assert words2[6] == IND_DONE and all(w & IND_SOURCE for w in words2[:6])


def test_done_takes_the_link_slot_of_a_full_page():
    # kimage_terminate writes IND_DONE at the cursor without allocating: with exactly 1023 data
    # entries the first page is full and DONE lands in its last word.
    m = Machine(16 * MiB)
    m.kexec_load(0, [Segment.zero(0, 0x1000000, 1022 * PAGE_SIZE)])
    img = m.kexec_image
    ind = img.indirection_pages().tolist()
    assert len(ind) == 1
    assert ram_words(m, ind[0], 1024)[1023] == IND_DONE


def test_crash_image_has_no_entries_and_loads_in_place():
    m = Machine(16 * MiB, crashkernel=(8 * MiB, 4 * MiB))
    m.ram[8 * MiB:12 * MiB] = 0xAA
    before = m.ram.copy()
    m.kexec_load(8 * MiB, [Segment(b"xyz", 8 * MiB + 0x1000, 0x2000)], kjcore.KEXEC_ON_CRASH)
    img = m.kexec_crash_image
    assert img.head == IND_DONE and img.swap_page is None and img.type == "crash"
    assert list(img.entries()) == [(IND_DONE, 0)]
    assert img.control_page == 8 * MiB                       # lowest free page of the region
    changed = np.flatnonzero(m.ram != before)
    assert changed.min() >= 8 * MiB + 0x1000 and changed.max() < 8 * MiB + 0x3000
    assert bytes(m.ram[8 * MiB + 0x1000:8 * MiB + 0x1004]) == b"xyz\0"
    assert not m.ram[8 * MiB + 0x1003:8 * MiB + 0x3000].any()


def test_crash_control_page_skips_segments():
    m = Machine(16 * MiB, crashkernel=(8 * MiB, 4 * MiB))
    m.kexec_load(8 * MiB, [Segment.zero(0, 8 * MiB, 0x3000),
                           Segment.zero(0, 8 * MiB + 0x4000, 0x1000)],
                 kjcore.KEXEC_ON_CRASH)
    assert m.kexec_crash_image.control_page == 8 * MiB + 0x3000


def test_allocator_order_is_seeded_and_not_ascending():
    a = Machine(16 * MiB, alloc_seed=1).allocator
    b = Machine(16 * MiB, alloc_seed=1).allocator
    c = Machine(16 * MiB, alloc_seed=2).allocator
    fa = [a.alloc() for _ in range(64)]
    assert fa == [b.alloc() for _ in range(64)]
    assert fa != [c.alloc() for _ in range(64)]
    assert fa != sorted(fa)
    assert min(fa) >= (4 * MiB) // PAGE_SIZE


def test_allocator_never_hands_out_reserved_or_crash_frames():
    m = Machine(16 * MiB, crashkernel=(8 * MiB, 4 * MiB))
    frames = [m.allocator.alloc() for _ in range(m.free_frames)]
    assert len(frames) == len(set(frames)) == 2048
    assert all(1024 <= f < 2048 or 3072 <= f < 4096 for f in frames)
    with pytest.raises(MemoryError):
        m.allocator.alloc()


def test_ram_is_zero_copy(machine):
    # m.ram is the machine's physical memory itself: the kimage is read back through it, so a
    # write through the user's view is what the kernel side sees.
    ram = machine.ram
    machine.kexec_load(0x400000, [Segment(b"x", 0x400000, 0x1000)])
    img = machine.kexec_image
    ind = int(img.indirection_pages()[0])
    ram[ind + 4:ind + 8] = np.array([0x123000 | IND_SOURCE], dtype="<u4").view(np.uint8)
    assert img.source_pages().tolist() == [0x123000]
    assert machine.ram is ram and ram.flags.owndata


def test_destination_aware_allocator_swaps_and_parks():
    # Destinations cover most of the free memory, so most frames handed out are destinations:
    # each must end up as its own source or not be a destination at all (invariant 4).
    m = Machine(8 * MiB, kernel_reserved=1 * MiB)
    segs = [Segment(bytes([i]) * (PAGE_SIZE * 100), 0x100000 + i * 0x100000, 0x100000)
            for i in range(5)]
    m.kexec_load(0, segs)
    img = m.kexec_image
    src, dst = img.source_pages(), img.destination_pages()
    dest_set = set(dst.tolist())
    self_dest = src == dst
    assert self_dest.any(), "expected some self-destination sources"
    assert all(s not in dest_set for s in src[~self_dest].tolist())
    for i in range(5):      # invariant 6 on every page despite the moves
        pages = src[dst // 0x100000 == i + 1]
        for p in pages[:100].tolist():
            assert (m.ram[p:p + PAGE_SIZE] == i).all()


# ---------------------------------------------------------------- invariants 1-6 (property-based)
@SETTINGS
@given(kimages(ram_size=16 * MiB, kernel_reserved=1 * MiB, max_pages=64))
def test_invariants_3_to_6(m):
    img = m.kexec_image
    src, dst = img.source_pages(), img.destination_pages()
    ind = img.indirection_pages()
    dest_pages = set(dst.tolist())
    # 3: control and swap pages
    for p in (img.control_page, img.swap_page):
        assert p % PAGE_SIZE == 0 and p + PAGE_SIZE <= 0xC0000000
        assert p not in dest_pages and p not in set(src.tolist()) | set(ind.tolist())
        for s in img.segments:
            assert not (s.mem <= p < s.mem + s.memsz)
    assert img.control_page != img.swap_page
    # 4: sources are their own destination or not a destination; indirection pages never are
    for s_, d in zip(src.tolist(), dst.tolist()):
        assert s_ == d or s_ not in dest_pages
    assert not set(ind.tolist()) & dest_pages
    # 5: per segment one DESTINATION then ceil(memsz/4096) SOURCE, DONE last, <= 1023 per page
    entries = list(img.entries())
    data = [(f, a) for f, a in entries if f != IND_INDIRECTION]
    k = 0
    for s in img.segments:
        assert data[k] == (IND_DESTINATION, s.mem)
        n = -(-s.memsz // PAGE_SIZE)
        assert [f for f, _ in data[k + 1:k + 1 + n]] == [IND_SOURCE] * n
        k += 1 + n
    assert data[k:] == [(IND_DONE, 0)]
    for p in ind.tolist():
        words = ram_words(m, p, 1023).tolist()
        assert sum(1 for w in words if w & 0xF and not w & IND_INDIRECTION) <= 1023
    # 6: source contents are the segment bytes, zero-padded
    k = 0
    for s in img.segments:
        buf = bytes(s.read(0, s.bufsz)) + bytes(s.memsz - s.bufsz)
        for i in range(s.memsz // PAGE_SIZE):
            p = int(src[k])
            assert bytes(m.ram[p:p + PAGE_SIZE]) == buf[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
            k += 1


@SETTINGS
@given(st.data())
def test_invariant_2_normal_load_writes_only_sources_and_indirection_pages(data):
    m = Machine(16 * MiB, kernel_reserved=1 * MiB, alloc_seed=data.draw(st.integers(0, 99)))
    m.ram[:] = data.draw(st.integers(0, 255))
    before = m.ram.copy()
    segs = data.draw(segment_layouts(lo=0, hi=16 * MiB, max_pages=32))
    m.kexec_load(0, segs)
    img = m.kexec_image
    allowed = np.zeros(m.ram_size // PAGE_SIZE, dtype=bool)
    allowed[(img.source_pages() // PAGE_SIZE)] = True
    allowed[(img.indirection_pages() // PAGE_SIZE)] = True
    changed_pages = np.unique(np.flatnonzero(m.ram != before) // PAGE_SIZE)
    assert allowed[changed_pages].all()


@SETTINGS
@given(st.data())
def test_invariant_1_rejected_load_changes_nothing(data):
    m = Machine(16 * MiB, kernel_reserved=1 * MiB, crashkernel=(8 * MiB, 2 * MiB))
    m.ram[:] = np.arange(m.ram_size, dtype=np.uint32).astype(np.uint8)
    m.kexec_load(0, [Segment(b"keep", 0x200000, 0x1000)])
    before = m.ram.copy()
    free = m.free_frames
    image = m.kexec_image
    flags = data.draw(st.sampled_from([0, 2, 0x10, 3 << 16, 62 << 16]))
    segs = data.draw(st.lists(st.builds(Segment.zero, st.integers(0, 0x3000),
                                        st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                              max_size=18))
    try:
        m.kexec_load(data.draw(st.integers(0, 2**32 - 1)), segs, flags)
    except KexecError:
        assert np.array_equal(m.ram, before)
        assert m.kexec_image is image and m.free_frames == free
