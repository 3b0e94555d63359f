"""kexec_load(2): every rule of SPEC §4.1 and §4.3, their order, and the failure semantics of
§4.2."""
import errno

import numpy as np
import pytest

import kjcore
from kjcore import (
    KEXEC_ARCH_386,
    KEXEC_ARCH_X86_64,
    KEXEC_ON_CRASH,
    KEXEC_PRESERVE_CONTEXT,
    KexecError,
    Machine,
    Segment,
)

MiB = 1 << 20
CRASH = (8 * MiB, 4 * MiB)          # crashkernel=4M@8M: region [8M, 12M - 1]


def seg(mem, memsz, bufsz=0):
    return Segment.zero(bufsz, mem, memsz)


def load_err(m, entry, segs, flags=0):
    """errno and message of a kexec_load call (0, '' on success)."""
    try:
        m.kexec_load(entry, segs, flags)
    except KexecError as e:
        return e.errno, str(e)
    return 0, ""


def errno_of(*args, **kw):
    return load_err(*args, **kw)[0]


# ---------------------------------------------------------------- rules 1-6: header, lock, unload
def test_rule1_eperm_before_everything():
    m = Machine(16 * MiB, cap_sys_boot=False)
    assert errno_of(m, 0, [seg(0x400000, 0x1000)], 0x10 | KEXEC_ARCH_X86_64) == errno.EPERM
    assert errno_of(m, 0, [], 0) == errno.EPERM


@pytest.mark.parametrize("flags, ok_2627, ok_mainline", [
    (0, True, True),
    (KEXEC_PRESERVE_CONTEXT, True, True),
    (KEXEC_ON_CRASH | KEXEC_PRESERVE_CONTEXT, True, True),
    (kjcore.KEXEC_UPDATE_ELFCOREHDR, False, True),
    (kjcore.KEXEC_CRASH_HOTPLUG_SUPPORT, False, True),
    (0x10, False, False),
    (0x8000, False, False),
])
def test_rule2_legal_flags(flags, ok_2627, ok_mainline):
    for profile, ok in (("2.6.27", ok_2627), ("mainline", ok_mainline)):
        m = Machine(16 * MiB, profile=profile, crashkernel=CRASH)
        entry = CRASH[0] if flags & KEXEC_ON_CRASH else 0
        mem = CRASH[0] if flags & KEXEC_ON_CRASH else 0x400000
        err, msg = load_err(m, entry, [seg(mem, 0x1000)], flags)
        assert err == (0 if ok else errno.EINVAL), (profile, msg)
        if not ok:
            assert "rule 2" in msg


def test_rule2_preserve_context_needs_kexec_jump():
    m = Machine(16 * MiB, kexec_jump=False)
    err, msg = load_err(m, 0, [seg(0x400000, 0x1000)], KEXEC_PRESERVE_CONTEXT)
    assert err == errno.EINVAL and "rule 2" in msg
    assert errno_of(m, 0, [seg(0x400000, 0x1000)], 0) == 0


@pytest.mark.parametrize("arch, ok", [(0, True), (KEXEC_ARCH_386, True), (KEXEC_ARCH_X86_64, False),
                                      (40 << 16, False), (0xFFFF0000, False)])
def test_rule3_arch(machine, arch, ok):
    err, msg = load_err(machine, 0, [seg(0x400000, 0x1000)], arch)
    assert err == (0 if ok else errno.EINVAL)
    if not ok:
        assert "rule 3" in msg


def test_rule4_segment_count(machine):
    segs = [seg(0x400000 + i * 0x1000, 0x1000) for i in range(17)]
    err, msg = load_err(machine, 0, segs)
    assert err == errno.EINVAL and "rule 4" in msg
    assert errno_of(machine, 0, segs[:16]) == 0


def test_rules_3_and_4_order_differs_between_profiles():
    segs = [seg(0, 0)] * 17
    _, msg = load_err(Machine(16 * MiB), 0, segs, KEXEC_ARCH_X86_64)
    assert "rule 3" in msg                       # 2.6.27: arch first
    _, msg = load_err(Machine(16 * MiB, profile="mainline"), 0, segs, KEXEC_ARCH_X86_64)
    assert "rule 4" in msg                       # mainline: count first


def test_rule5_lock_held_is_ebusy_after_header_checks(machine):
    with machine.kexec_lock:
        assert errno_of(machine, 0, [seg(0x400000, 0x1000)]) == errno.EBUSY
        assert errno_of(machine, 0, []) == errno.EBUSY          # even an unload
        assert errno_of(machine, 0, [seg(0, 0)], 0x10) == errno.EINVAL
        assert errno_of(machine, 0, [seg(0, 0)] * 17) == errno.EINVAL
    assert errno_of(machine, 0, [seg(0x400000, 0x1000)]) == 0


def test_rule6_unload(machine):
    assert errno_of(machine, 0, []) == 0                         # nothing loaded: still fine
    machine.kexec_load(0x400000, [seg(0x400000, 0x2000)])
    free_loaded = machine.free_frames
    machine.kexec_load(0, [])
    assert machine.kexec_image is None
    assert machine.free_frames == free_loaded + 2 + 2 + 1       # control, swap, 2 sources, 1 ind


def test_rule6_unload_only_the_named_slot():
    m = Machine(16 * MiB, crashkernel=CRASH)
    m.kexec_load(0x400000, [seg(0x400000, 0x1000)])
    m.kexec_load(CRASH[0], [seg(CRASH[0], 0x1000)], KEXEC_ON_CRASH)
    m.kexec_load(0, [], KEXEC_ON_CRASH)
    assert m.kexec_crash_image is None and m.kexec_image is not None
    m.kexec_load(0, [])
    assert m.kexec_image is None


# ---------------------------------------------------------------- rule 7: crash entry
def test_rule7_crash_entry_inclusive_end():
    m = Machine(16 * MiB, crashkernel=CRASH)
    s = [seg(CRASH[0], 0x1000)]
    assert errno_of(m, CRASH[0], s, KEXEC_ON_CRASH) == 0
    assert errno_of(m, CRASH[0] + CRASH[1] - 1, s, KEXEC_ON_CRASH) == 0
    err, msg = load_err(m, CRASH[0] + CRASH[1], s, KEXEC_ON_CRASH)
    assert err == errno.EADDRNOTAVAIL and "rule 7" in msg
    assert errno_of(m, CRASH[0] - 1, s, KEXEC_ON_CRASH) == errno.EADDRNOTAVAIL


def test_rule7_no_region_is_zero_zero():
    m = Machine(16 * MiB)
    _, msg = load_err(m, 1, [seg(0x400000, 0x1000)], KEXEC_ON_CRASH)
    assert "rule 7" in msg
    err, msg = load_err(m, 0, [seg(0x400000, 0x1000)], KEXEC_ON_CRASH)   # entry 0 is inside {0, 0}
    assert err == errno.EADDRNOTAVAIL and "rule 11" in msg


def test_rule7_crash_load_unloads_old_crash_image_even_when_it_fails():
    m = Machine(16 * MiB, crashkernel=CRASH)
    m.kexec_load(CRASH[0], [seg(CRASH[0], 0x1000)], KEXEC_ON_CRASH)
    assert m.kexec_crash_image is not None
    assert errno_of(m, 0, [seg(CRASH[0], 0x1000)], KEXEC_ON_CRASH) == errno.EADDRNOTAVAIL
    assert m.kexec_crash_image is None


def test_failed_crash_header_check_keeps_crash_image():
    m = Machine(16 * MiB, crashkernel=CRASH)
    m.kexec_load(CRASH[0], [seg(CRASH[0], 0x1000)], KEXEC_ON_CRASH)
    assert errno_of(m, CRASH[0], [seg(CRASH[0], 0x1000)] * 17, KEXEC_ON_CRASH) == errno.EINVAL
    assert m.kexec_crash_image is not None


# ---------------------------------------------------------------- rules 8-11: segment checks
@pytest.mark.parametrize("mem, memsz", [(0x400001, 0x1000), (0x400000, 0xFFF), (0x400800, 0x800),
                                        (0x400000, 0x1001)])
def test_rule8_alignment(machine, mem, memsz):
    err, msg = load_err(machine, 0, [seg(0x500000, 0x1000), seg(mem, memsz)])
    assert err == errno.EADDRNOTAVAIL and "rule 8" in msg and "segment 1" in msg


def test_rule8_checks_all_segments_before_overlap(machine):
    segs = [seg(0x400000, 0x2000), seg(0x401000, 0x1000), seg(0x500001, 0x1000)]
    err, msg = load_err(machine, 0, segs)
    assert err == errno.EADDRNOTAVAIL and "segment 2" in msg


def test_wrap_past_4g_accepted_in_2627_rejected_in_mainline():
    s = [seg(0xFFFFF000, 0x2000)]                 # end wraps to 0x1000, page-aligned
    assert errno_of(Machine(16 * MiB), 0, s) == 0
    err, msg = load_err(Machine(16 * MiB, profile="mainline"), 0, s)
    assert err == errno.EADDRNOTAVAIL and "overflows" in msg


def test_segment_ending_exactly_at_4g_is_not_a_wrap():
    # mem + memsz == 2**32 wraps to 0: 2.6.27 accepts it; mainline sees end < start.
    s = [seg(0xFFFFF000, 0x1000)]
    assert errno_of(Machine(16 * MiB), 0, s) == 0
    assert errno_of(Machine(16 * MiB, profile="mainline"), 0, s) == errno.EADDRNOTAVAIL


@pytest.mark.parametrize("second, overlaps", [
    ((0x401000, 0x2000), True),      # straddles the end
    ((0x400000, 0x1000), True),      # same start
    ((0x402000, 0x1000), False),     # touches the end
    ((0x3FF000, 0x1000), False),     # touches the start
    ((0x401000, 0x0), True),         # empty, strictly inside
    ((0x400000, 0x0), False),        # empty, at the start
    ((0x402000, 0x0), False),        # empty, at the end
    ((0x3F0000, 0x20000), True),     # contains it
])
def test_rule9_overlap_exactly_as_the_kernel(machine, second, overlaps):
    err, msg = load_err(machine, 0, [seg(0x400000, 0x2000), seg(*second)])
    assert err == (errno.EINVAL if overlaps else 0), msg
    if overlaps:
        assert "rule 9" in msg and "segments 0 and 1" in msg


def test_rule9_uses_wrapped_ends(machine):
    # A wrapped segment [0xFFFFE000, 0x1000) never "intersects" a low one under the kernel's
    # comparison (its end 0x1000 is below its start), even though it covers page 0.
    assert errno_of(machine, 0, [seg(0xFFFFE000, 0x3000), seg(0x0, 0x1000)]) == 0


def test_rule10_bufsz(machine):
    assert errno_of(machine, 0, [seg(0x400000, 0x1000, 0x1000)]) == 0
    err, msg = load_err(machine, 0, [seg(0x400000, 0x1000, 0x1001)])
    assert err == errno.EINVAL and "rule 10" in msg


def test_rule9_before_rule10(machine):
    segs = [seg(0x400000, 0x1000, 0x2000), seg(0x500000, 0x2000), seg(0x501000, 0x1000)]
    _, msg = load_err(machine, 0, segs)
    assert "rule 9" in msg


def test_rule8_before_rule10(machine):
    assert errno_of(machine, 0, [seg(0x400000, 0x1000, 0x2000), seg(0x500001, 0x1000)]) == \
        errno.EADDRNOTAVAIL


def test_rule11_crash_range():
    m = Machine(16 * MiB, crashkernel=CRASH)
    lo, hi = CRASH[0], CRASH[0] + CRASH[1]
    assert errno_of(m, lo, [seg(lo, CRASH[1] - 0x1000)], KEXEC_ON_CRASH) == 0
    for bad in ([seg(lo - 0x1000, 0x2000)], [seg(hi - 0x1000, 0x2000)], [seg(hi, 0x1000)]):
        err, msg = load_err(m, lo, bad, KEXEC_ON_CRASH)
        assert err == errno.EADDRNOTAVAIL and "rule 11" in msg
    # inclusive ends, and only mem is compared with the start: an empty segment at the region
    # start (end start - 1) and one just past it (end = the last byte) are both accepted
    assert errno_of(m, lo, [seg(lo, 0)], KEXEC_ON_CRASH) == 0
    assert errno_of(m, lo, [seg(hi, 0)], KEXEC_ON_CRASH) == 0


def test_rule10_before_rule11():
    m = Machine(16 * MiB, crashkernel=CRASH)
    err = errno_of(m, CRASH[0], [seg(0x400000, 0x1000), seg(CRASH[0], 0x1000, 0x2000)],
                   KEXEC_ON_CRASH)
    assert err == errno.EINVAL


# ---------------------------------------------------------------- rule 12 and mainline sizes
def test_rule12_enomem_sources():
    m = Machine(16 * MiB)
    err, msg = load_err(m, 0, [seg(0x1000000, 12 * MiB)])   # destinations outside RAM
    assert err == errno.ENOMEM and "rule 12" in msg
    assert errno_of(m, 0, [seg(0x1000000, 8 * MiB)]) == 0


def test_rule12_enomem_control_page_when_every_free_frame_is_a_destination():
    m = Machine(16 * MiB)
    err, msg = load_err(m, 0, [seg(4 * MiB, 12 * MiB)])
    assert err == errno.ENOMEM and "control page" in msg


def test_mainline_empty_segment_at_zero_marks_every_page():
    m = Machine(16 * MiB, profile="mainline")
    err, msg = load_err(m, 0, [seg(0, 0)])
    assert err == errno.ENOMEM and "control page" in msg
    assert errno_of(Machine(16 * MiB), 0, [seg(0, 0)]) == 0


def test_mainline_half_of_ram():
    m = Machine(16 * MiB, profile="mainline")
    half = 8 * MiB
    assert errno_of(m, 0, [seg(0x1000000, half)]) == 0
    _, msg = load_err(m, 0, [seg(0x1000000, half + 0x1000)])
    assert "half of RAM" in msg and "segment 0" in msg
    err, msg = load_err(m, 0, [seg(0x1000000, half // 2), seg(0x2000000, half // 2 + 0x1000)])
    assert err == errno.EINVAL and "together" in msg


def test_crash_enomem_when_segments_fill_the_region():
    m = Machine(16 * MiB, crashkernel=CRASH)
    err, msg = load_err(m, CRASH[0], [seg(CRASH[0], CRASH[1])], KEXEC_ON_CRASH)
    assert err == errno.ENOMEM and "crashkernel" in msg


# ---------------------------------------------------------------- §4.2 failure and replacement
def test_rejected_load_changes_no_ram_and_keeps_the_image():
    m = Machine(16 * MiB)
    m.ram[:] = np.random.default_rng(0).integers(0, 256, m.ram_size, dtype=np.uint8)
    m.kexec_load(0x400000, [Segment(b"abc", 0x400000, 0x1000)])
    old = m.kexec_image
    before = m.ram.copy()
    free = m.free_frames
    for segs in ([seg(0x1000000, 12 * MiB)], [seg(0x400001, 0x1000)],
                 [seg(0x400000, 0x1000, 2)] * 2):
        with pytest.raises(KexecError):
            m.kexec_load(0, segs)
        assert np.array_equal(m.ram, before)
        assert m.kexec_image is old and m.free_frames == free


def test_successful_load_frees_the_previous_image():
    m = Machine(16 * MiB)
    fresh = m.free_frames
    m.kexec_load(0, [seg(0x1000000, 0x10000)])
    m.kexec_load(0, [seg(0x1000000, 0x3000)])
    assert m.free_frames == fresh - (2 + 3 + 1)


def test_nothing_else_is_checked(machine):
    # any entry, destinations over the running kernel or past RAM, unsorted segments
    segs = [seg(0x2000000, 0x1000), seg(0x0, 0x2000), seg(0x100000, 0x1000)]
    machine.kexec_load(0xFFFFFFFF, segs, KEXEC_PRESERVE_CONTEXT)
    img = machine.kexec_image
    assert img.start == 0xFFFFFFFF and img.preserve_context
    assert [hex(d) for d in img.destination_pages()] == \
        ["0x2000000", "0x0", "0x1000", "0x100000"]


def test_crash_image_can_preserve_context():
    m = Machine(16 * MiB, crashkernel=CRASH)
    m.kexec_load(CRASH[0], [seg(CRASH[0], 0x1000)], KEXEC_ON_CRASH | KEXEC_PRESERVE_CONTEXT)
    assert m.kexec_crash_image.preserve_context


# ---------------------------------------------------------------- ABI-level argument errors
@pytest.mark.parametrize("entry", [-1, 1 << 32])
def test_entry_outside_the_abi_is_valueerror(machine, entry):
    with pytest.raises(ValueError):
        machine.kexec_load(entry, [])


@pytest.mark.parametrize("bad", [[b"xx"], ["str"], [(b"", 0)], [object()]])
def test_segments_must_be_segments(machine, bad):
    with pytest.raises(TypeError):
        machine.kexec_load(0, bad)


def test_segment_abi():
    with pytest.raises(ValueError):
        Segment(b"", -4096, 0)
    with pytest.raises(ValueError):
        Segment.zero(0, 0, 1 << 32)
    with pytest.raises(TypeError):
        Segment("text", 0, 0)
    with pytest.raises(TypeError):
        Segment(b"", 0.0, 0)
    with pytest.raises(TypeError):
        Machine(16 * MiB).kexec_load(0, [], 1.5)


def test_kexec_error_is_oserror_with_errno():
    e = KexecError(errno.EINVAL, "x")
    assert isinstance(e, OSError) and e.errno == errno.EINVAL
