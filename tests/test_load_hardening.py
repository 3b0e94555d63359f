"""Issue 10, loading under hostile input: a corrupt free stack (B1, the planner's half), any
buffer-protocol object as a segment buffer (B5) and a 2.6.27 crash segment that wraps past
4 GiB (B7)."""
import array
import errno
import mmap
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kjcore import KEXEC_ON_CRASH, KexecError, Machine, Segment
from kjcore.constants import PAGE_SIZE
from kjcore.kimage_alloc import load_image
from kjcore.load_checks import PROFILE_2627
from kjcore.memory import FrameAllocator

MiB = 1 << 20


# ------------------------------------------------------------------ B1: a corrupt free stack
# Each case corrupts the allocator of a fresh 16 MiB machine (3072 free frames, the first kernel
# owns 4 MiB) and loads one segment; before issue 10 the compiled planner indexed its per-frame
# arrays with the bad frame (out-of-bounds writes: a host segfault or silent corruption) or used
# one frame twice.  Run in a subprocess so a crash fails the test instead of killing pytest.
CORRUPTIONS = {
    # the next frame popped is a destination far outside RAM: per-frame array index 0xFFFFF
    "frame-past-ram-destination": ("stack[top - 1] = 0xFFFFF", 0xFFFFE000, 0x2000),
    # a frame outside RAM that is not a destination: becomes a source page past RAM
    "frame-past-ram": ("stack[top - 1] = 10 ** 9", 0x800000, 0x2000),
    "negative-frame": ("stack[top - 1] = -7", 0x800000, 0x2000),
    # the same frame on top twice: control page == swap page
    "duplicate": ("stack[top - 1] = stack[top - 2]", 0x800000, 0x2000),
    "top-past-stack": ("a.top[0] = len(stack) + 5", 0x800000, 0x2000),
}

_SCRIPT = textwrap.dedent("""
    import numpy as np
    from kjcore import Machine, Segment
    m = Machine(16 << 20)
    a = m.allocator
    stack, top = a.stack, int(a.top[0])
    {corrupt}
    ram, saved_stack, saved_top = m.ram.copy(), a.stack.copy(), int(a.top[0])
    try:
        m.kexec_load(0, [Segment(b"payload", {mem:#x}, {memsz:#x})])
    except RuntimeError as e:
        print("refused:", e)
    else:
        print("loaded")
    assert np.array_equal(m.ram, ram), "RAM changed"
    assert int(a.top[0]) == saved_top and np.array_equal(a.stack, saved_stack), "allocator"
    assert m.kexec_image is None
    print("OK")
""")


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_free_stack_is_refused_cleanly(case):
    corrupt, mem, memsz = CORRUPTIONS[case]
    code = _SCRIPT.format(corrupt=corrupt, mem=mem, memsz=memsz)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "refused: the frame allocator is corrupt" in r.stdout and r.stdout.endswith("OK\n")


def test_load_image_refuses_a_corrupt_stack_given_directly():
    ram = np.zeros(4 * MiB, dtype=np.uint8)
    alloc = FrameAllocator(len(ram) // PAGE_SIZE, 256)
    good = alloc.stack.copy()
    for bad in (len(ram) // PAGE_SIZE, 1 << 40, -1):
        alloc.stack[:] = good
        alloc.stack[int(alloc.top[0]) - 1] = bad
        with pytest.raises(RuntimeError, match="allocator is corrupt"):
            load_image(ram, alloc, 0, [Segment(b"x", 0x200000, 0x1000)], 0,
                       profile=PROFILE_2627, crash_region=(0, 0))
        assert not ram.any() and alloc.stack[int(alloc.top[0]) - 1] == bad
    alloc.stack[:] = good
    image = load_image(ram, alloc, 0, [Segment(b"x", 0x200000, 0x1000)], 0,
                       profile=PROFILE_2627, crash_region=(0, 0))
    assert image.type == "default" and bytes(ram[image.source_pages()[0]:][:1]) == b"x"


# ------------------------------------------------------------------ B5: any buffer
def _mmap(data):
    mm = mmap.mmap(-1, len(data))
    mm.write(data)
    return mm


def _float_grid(data):
    n = len(data) // 8
    return np.frombuffer(data[:n * 8], dtype="<f8").reshape(-1, 1) if n else np.zeros((0, 1))


# (name, build(data) -> buffer, the bytes that buffer stands for)
BUFFERS = [
    ("bytes", bytes, lambda d: d),
    ("bytearray", bytearray, lambda d: d),
    ("memoryview", memoryview, lambda d: d),
    ("memoryview-strided", lambda d: memoryview(d)[::3], lambda d: d[::3]),
    ("array-B", lambda d: array.array("B", d), lambda d: d),
    ("array-h", lambda d: array.array("h", d[:len(d) // 2 * 2]), lambda d: d[:len(d) // 2 * 2]),
    ("mmap", lambda d: _mmap(d) if d else b"", lambda d: d),
    ("numpy-u8", lambda d: np.frombuffer(d, np.uint8).copy(), lambda d: d),
    ("numpy-f8-2d", _float_grid, lambda d: d[:len(d) // 8 * 8]),
    ("numpy-strided", lambda d: np.frombuffer(d, np.uint8)[::2], lambda d: d[::2]),
    ("numpy-reversed-i2", lambda d: np.frombuffer(d[:len(d) // 2 * 2], "<i2")[::-1],
     lambda d: b"".join(d[i:i + 2] for i in range(len(d) // 2 * 2 - 2, -1, -2))),
    ("numpy-fortran", lambda d: np.asfortranarray(np.frombuffer(d[:len(d) // 6 * 6], np.uint8)
                                                  .reshape(-1, 2, 3)),
     lambda d: d[:len(d) // 6 * 6]),
    ("numpy-big-endian", lambda d: np.frombuffer(d[:len(d) // 4 * 4], ">u4"),
     lambda d: d[:len(d) // 4 * 4]),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(BUFFERS), data=st.binary(max_size=3 * PAGE_SIZE + 100),
       reject=st.sampled_from([None, "bufsz", "overlap", "nomem"]))
def test_any_buffer_loads_its_bytes_or_changes_nothing(kind, data, reject):
    name, build, expect = kind
    m = Machine(16 * MiB)
    buf = build(data)
    want = expect(data)
    seg = Segment(buf, 0x800000, 4 * PAGE_SIZE)
    assert seg.bufsz == len(want) and bytes(seg.read(0, seg.bufsz)) == want
    segs = [seg]
    if reject == "bufsz":
        segs.append(Segment(buf, 0x900000, 0) if len(want) else Segment.zero(1, 0x900000, 0))
    elif reject == "overlap":
        segs.append(Segment(buf, 0x801000, 4 * PAGE_SIZE))
    elif reject == "nomem":
        segs.append(Segment.zero(0, 0x1000000, 16 * MiB))
    ram, free = m.ram.copy(), m.allocator.state()
    if reject is None:
        m.kexec_load(0x800000, segs)
        src = m.kexec_image.source_pages()
        loaded = np.concatenate([m.ram[p:p + PAGE_SIZE] for p in src]).tobytes()
        assert loaded == want + bytes(4 * PAGE_SIZE - len(want)), name
        return
    with pytest.raises(KexecError) as e:
        m.kexec_load(0x800000, segs)
    assert e.value.errno == (errno.ENOMEM if reject == "nomem" else errno.EINVAL)
    assert np.array_equal(m.ram, ram), name
    assert np.array_equal(m.allocator.state(), free) and m.kexec_image is None


def test_strided_uint8_view_loads_instead_of_failing_half_way():
    """Before issue 10 a 1-D strided uint8 view was accepted by Segment and failed in the
    middle of the RAM writes (indirection page written, frames gone)."""
    m = Machine(16 * MiB)
    base = np.arange(2 * PAGE_SIZE, dtype=np.uint8)
    m.kexec_load(0x800000, [Segment(base[::2], 0x800000, PAGE_SIZE)])
    page = m.kexec_image.source_pages()[0]
    assert np.array_equal(m.ram[page:page + PAGE_SIZE], base[::2])


def test_contiguous_buffers_are_read_at_load_time_strided_ones_when_created():
    m = Machine(16 * MiB)
    live = bytearray(b"A" * 16)
    grid = np.zeros(32, dtype=np.uint8)
    s_live, s_copy = Segment(live, 0x800000, PAGE_SIZE), Segment(grid[::2], 0x900000, PAGE_SIZE)
    live[:4] = b"BBBB"
    grid[:] = 7
    m.kexec_load(0x800000, [s_live, s_copy])
    first, second = m.kexec_image.source_pages()
    assert bytes(m.ram[first:first + 16]) == b"BBBB" + b"A" * 12
    assert not m.ram[second:second + 16].any()
    with pytest.raises(BufferError):
        live.extend(b"more")            # the segment holds an export: no resize behind its back


def test_a_buffer_that_views_the_machines_own_ram_loads_its_old_bytes():
    m = Machine(16 * MiB)
    m.ram[0x700000:0x702000] = np.arange(0x2000, dtype=np.uint8)
    want = m.ram[0x700000:0x702000].copy()
    m.kexec_load(0x800000, [Segment(m.ram[0x700000:0x702000], 0x800000, 0x2000)])
    src = m.kexec_image.source_pages()
    assert np.array_equal(np.concatenate([m.ram[p:p + PAGE_SIZE] for p in src]), want)


@pytest.mark.parametrize("buf", [np.array([1, "a"], dtype=object), 3, "text"])
def test_non_byte_buffers_are_typeerror(buf):
    with pytest.raises(TypeError):
        Segment(buf, 0, 0x1000)


# ------------------------------------------------------------------ B7: a crash segment wraps
CRASH = (8 * MiB, 4 * MiB)                  # [8 MiB, 12 MiB - 1]
WRAP_MEM = 10 * MiB
WRAP_END = 0x3000                           # (mem + memsz) mod 2**32, inside the region's bound


def _expected_after_wrap(before, data, memsz):
    """What 2.6.27's kimage_load_crash_segment leaves: byte k of the segment (buffer, then
    zeros) at (mem + k) mod 2**32; addresses past RAM are the empty bus."""
    want = before.copy()
    ram_size = len(want)
    seg = np.zeros(ram_size - WRAP_MEM, dtype=np.uint8)
    head = data[:len(seg)]
    seg[:len(head)] = np.frombuffer(head, np.uint8)
    want[WRAP_MEM:] = seg
    wrapped_from = (1 << 32) - WRAP_MEM      # offset of the byte that lands at address 0
    low = np.zeros(WRAP_END, dtype=np.uint8)
    tail = data[wrapped_from:wrapped_from + WRAP_END]
    low[:len(tail)] = np.frombuffer(tail, np.uint8)
    want[:WRAP_END] = low
    assert memsz == wrapped_from + WRAP_END
    return want


@pytest.mark.parametrize("bufsz", [0x1800, 6 * MiB + 0x1800])   # ends in RAM / past RAM
def test_2627_crash_segment_that_wraps_writes_exactly_the_wrapped_range(bufsz):
    m = Machine(16 * MiB, crashkernel=CRASH)
    m.ram[:] = 0xA5
    before = m.ram.copy()
    memsz = (1 << 32) - WRAP_MEM + WRAP_END
    data = bytes(range(256)) * (bufsz // 256) + bytes(bufsz % 256)
    m.kexec_load(CRASH[0], [Segment(data, WRAP_MEM, memsz)], KEXEC_ON_CRASH)
    assert m.kexec_crash_image.control_page == CRASH[0]
    assert np.array_equal(m.ram, _expected_after_wrap(before, data, memsz))


def test_mainline_refuses_the_wrapping_crash_segment():
    m = Machine(16 * MiB, crashkernel=CRASH, profile="mainline")
    ram = m.ram.copy()
    with pytest.raises(KexecError) as e:
        m.kexec_load(CRASH[0], [Segment.zero(0, WRAP_MEM, (1 << 32) - WRAP_MEM + WRAP_END)],
                     KEXEC_ON_CRASH)
    assert e.value.errno == errno.EADDRNOTAVAIL and np.array_equal(m.ram, ram)
