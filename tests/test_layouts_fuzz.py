"""check_layouts agrees with Machine.kexec_load (SPEC §11) and kexec_load survives hostile input."""
import errno

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_errno

from kjcore import KEXEC_ON_CRASH, KexecError, Machine, Segment
from kjcore.bios.layout import bios_frames
from kjcore.fuzz import LAYOUT_DTYPE, check_layouts, layout_segments, random_layouts

MiB = 1 << 20
RAM = 16 * MiB
CRASH = (8 * MiB, 4 * MiB)
N_AGREE = 100_000


def machine_errno(m, layout):
    """errno of one layout on machine m, then reset m to its boot state."""
    entry, segs, flags = layout_segments(layout)
    try:
        m.kexec_load(entry, segs, flags)
        err = 0
    except KexecError as e:
        err = e.errno
    m.kexec_load(0, [])
    m.kexec_load(0, [], KEXEC_ON_CRASH)
    m.allocator.reset()           # a fresh machine's free-list order
    return err


@pytest.mark.parametrize("profile", ["2.6.27", "mainline"])
def test_check_layouts_agrees_with_kexec_load(profile):
    layouts = random_layouts(N_AGREE, seed=2026, ram_size=RAM, crashkernel=CRASH)
    fast = check_layouts(layouts, profile=profile, ram_size=RAM, crashkernel=CRASH)
    m = Machine(RAM, profile=profile, crashkernel=CRASH)
    slow = np.array([machine_errno(m, lay) for lay in layouts])
    mismatch = np.flatnonzero(fast != slow)
    assert len(mismatch) == 0, (mismatch[:5], layouts[mismatch[:1]], fast[mismatch[:5]],
                                slow[mismatch[:5]])
    # every outcome is common enough to mean something
    for e in (0, errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENOMEM):
        assert (slow == e).sum() > N_AGREE // 1000, (profile, e)


@pytest.mark.parametrize("profile", ["2.6.27", "mainline"])
def test_check_layouts_agrees_with_the_naive_oracle(profile):
    layouts = random_layouts(20_000, seed=7, ram_size=RAM, crashkernel=CRASH)
    fast = check_layouts(layouts, profile=profile, ram_size=RAM, crashkernel=CRASH)
    for lay, got in zip(layouts, fast.tolist()):
        nr = int(lay["nr_segments"])
        segs = [(int(lay["bufsz"][i]), int(lay["mem"][i]), int(lay["memsz"][i]))
                for i in range(min(nr, 16))] + [(0, 0, 0)] * max(nr - 16, 0)
        want = naive_errno(int(lay["flags"]), int(lay["entry"]), segs, profile=profile,
                           crash=CRASH, ram_size=RAM)
        if want is not None:
            assert got == want
        else:
            assert got in (0, errno.ENOMEM)


@pytest.mark.parametrize("bios,reserved", [(False, 1 * MiB), (True, 256 << 10)])
def test_check_layouts_other_machine_shapes(bios, reserved):
    # kexec_jump off, no crash region, a different kernel_reserved and allocator seed; below
    # 1 MiB the BIOS's frames are never free (the allocator's ``excluded``)
    layouts = random_layouts(3000, seed=5, ram_size=8 * MiB, kernel_reserved=reserved)
    kw = dict(ram_size=8 * MiB, kexec_jump=False, kernel_reserved=reserved, bios=bios)
    fast = check_layouts(layouts, **kw)
    m = Machine(8 * MiB, kexec_jump=False, kernel_reserved=reserved, alloc_seed=9, bios=bios)
    assert fast.tolist() == [machine_errno(m, lay) for lay in layouts]


def test_check_layouts_counts_the_bios_frames():
    # one source page per free frame but two (control and swap pages): the BIOS's frames decide
    ram, reserved = 2 * MiB, 256 << 10
    lay = np.zeros(1, dtype=LAYOUT_DTYPE)
    lay["nr_segments"] = 1
    lay["mem"][0, 0] = 0x10000000
    for bios in (True, False):
        free = Machine(ram, kernel_reserved=reserved, bios=bios).free_frames
        for n_src, want in ((free - 3, 0), (free - 2, errno.ENOMEM)):
            lay["memsz"][0, 0] = n_src * 4096
            assert check_layouts(lay, ram_size=ram, kernel_reserved=reserved,
                                 bios=bios).tolist() == [want]
    with pytest.raises(ValueError, match="1 MiB"):
        check_layouts(lay, ram_size=MiB // 2, kernel_reserved=64 << 10)


@pytest.mark.parametrize("bios", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enomem_boundary_does_not_depend_on_the_free_list_order(seed, bios):
    # Loads that need exactly the free frames, or one more, with destinations over free RAM
    # (parking and exchanges; with the BIOS one destination frame is the EBDA's) and empty
    # segments (mainline's inclusive ends): the outcome must not depend on the allocator's order.
    ram, reserved = 1 * MiB, 512 << 10
    free = Machine(ram, kernel_reserved=reserved, bios=bios).free_frames
    assert free == (ram - reserved) // 4096 - (len(bios_frames()) - 1 if bios else 0)
    rows = []
    for extra in (0, 1):
        for empties in (0, 4):
            for over in (0, 16):
                lay = np.zeros(1, dtype=LAYOUT_DTYPE)[0]
                n_src = free - 3 + extra - over
                lay["nr_segments"] = 2 + empties
                lay["mem"][0], lay["memsz"][0] = 0x10000000, n_src * 4096
                lay["mem"][1], lay["memsz"][1] = 0x80000 + 0x10000, over * 4096
                for i in range(empties):
                    lay["mem"][2 + i] = 0xA0000 + 0x2000 * i
                rows.append(lay)
    layouts = np.array(rows, dtype=LAYOUT_DTYPE)
    for profile in ("2.6.27", "mainline"):
        fast = check_layouts(layouts, profile=profile, ram_size=ram, kernel_reserved=reserved,
                             bios=bios)
        m = Machine(ram, profile=profile, kernel_reserved=reserved, alloc_seed=seed, bios=bios)
        slow = [machine_errno(m, lay) for lay in layouts]
        assert fast.tolist() == slow
        assert set(slow) == {0, errno.ENOMEM}


def test_random_layouts_is_reproducible():
    a = random_layouts(1000, seed=1)
    assert np.array_equal(a, random_layouts(1000, seed=1))
    assert not np.array_equal(a, random_layouts(1000, seed=2))
    assert a.dtype == LAYOUT_DTYPE


def test_check_layouts_rejects_bad_input():
    with pytest.raises(TypeError):
        check_layouts(np.zeros(3), ram_size=RAM)
    with pytest.raises(ValueError):
        check_layouts(random_layouts(1, 0), ram_size=RAM, profile="3.0")


u32 = st.integers(0, 2**32 - 1)
hostile_segment = st.one_of(
    st.builds(Segment.zero, u32, u32, u32),
    st.builds(Segment.zero, st.integers(0, 0x3000), u32.map(lambda a: a & ~0xFFF),
              st.integers(0, 64).map(lambda p: p * 4096)),
    st.builds(Segment, st.binary(max_size=64), u32.map(lambda a: a & ~0xFFF),
              st.sampled_from([0, 4096, 8192])))


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 7), u32, st.lists(hostile_segment, max_size=20), u32, st.booleans())
def test_hostile_kexec_load_never_crashes_and_never_changes_ram_on_rejection(
        shape, entry, segs, flags, locked):
    profile = "mainline" if shape & 1 else "2.6.27"
    m = Machine(8 * MiB, profile=profile, kernel_reserved=1 * MiB,
                crashkernel=(4 * MiB, 1 * MiB) if shape & 2 else None, kexec_jump=bool(shape & 4))
    m.ram[:] = 0x5A
    before = m.ram.copy()
    if locked:
        m.kexec_lock.acquire()
    try:
        m.kexec_load(entry, segs, flags)
    except KexecError as e:
        assert e.errno in (errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENOMEM, errno.EBUSY)
        assert np.array_equal(m.ram, before)
    else:
        assert not locked
