"""kjcore's purgatory (kjcore/purgatory) on kjcore's CPU, against hashlib and Unicorn.

Segments are small (the CPU-bound SHA-256 figures are benchmarks/bench_purgatory.py's job);
their lengths cover every padding case of the final SHA-256 block.
"""
import hashlib
import struct

import numpy as np
import pytest
from purgatory_world import (
    ENTRY,
    JUMP_BACK,
    PURGATORY,
    STACK_TOP,
    ZERO_PAGE,
    picture,
    run_kjcore,
    run_unicorn,
)

from kjcore.purgatory import MAX_SEGMENTS, purgatory_segment
from kjcore.purgatory.image import purgatory_image

EDGE_LENGTHS = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 4095, 4096, 20000]


def _segments(seed, lengths=EDGE_LENGTHS, base=0x100000):
    rng = np.random.default_rng(seed)
    out, mem = [], base
    for n in lengths:
        out.append((mem, rng.bytes(n)))
        mem += -(-max(n, 1) // 4096) * 4096
    return out


def _entered(regs, eip_after_hlt):
    """The Linux/x86 32-bit boot protocol state at the image's entry."""
    return (regs["eip"] == ENTRY + eip_after_hlt and regs["esi"] == ZERO_PAGE
            and regs["esp"] == STACK_TOP and regs["IF"] == 0
            and (regs["cs"], regs["ds"], regs["es"], regs["ss"]) == (0x10, 0x18, 0x18, 0x18)
            and all(regs[r] == 0 for r in ("eax", "ebx", "ecx", "edx", "edi", "ebp")))


def test_good_digests_enter_the_image_with_the_boot_protocol_registers():
    ram, start = picture(_segments(1))
    regs, console, cpu = run_kjcore(ram, start)
    assert console == b"" and _entered(regs, 1)
    # the stack the image was entered with: the jump-back entry is still at [ESP]
    assert ram[STACK_TOP:STACK_TOP + 4].tobytes() == JUMP_BACK.to_bytes(4, "little")


@pytest.mark.parametrize("victim", [0, 1, 3, 11, 13])
def test_a_corrupted_segment_stops_with_its_name_on_the_console(victim):
    segments = _segments(2)
    ram, start = picture(segments)
    mem, blob = segments[victim]
    ram[mem + len(blob) - 1] ^= 0x40 if blob else 0                  # the last byte
    if not blob:                                                   # an empty segment cannot
        ram[mem] ^= 1                                             # change: still verifies
    regs, console, cpu = run_kjcore(ram, start)
    if not blob:
        assert console == b"" and _entered(regs, 1)
        return
    assert console == (b"purgatory: SHA-256 mismatch in segment 0x%08x at 0x%08x, 0x%08x bytes\n"
                       % (victim, mem, len(blob)))
    assert PURGATORY <= regs["eip"] < PURGATORY + 4096             # halted inside purgatory
    assert cpu.run(1000).name == "HLT" and PURGATORY <= cpu.eip < PURGATORY + 4096
    assert cpu.debugcon == console                                 # halts forever, silently


def _call_sha256(ram, start_kjcore, data_at, length, out_at):
    """Call purgatory's sha256_digest(data, len, out) directly (cdecl) on kjcore's CPU."""
    from kjcore.cpu import CPU, Status
    offset, _ = purgatory_image().symbols["sha256_digest"]
    cpu = CPU(ram)
    esp = STACK_TOP - 16
    ram[esp:esp + 16] = np.frombuffer(struct.pack("<4I", ENTRY, data_at, length, out_at),
                                      np.uint8)
    cpu.eip, cpu.esp = PURGATORY + offset, esp
    assert cpu.run(10_000_000) == Status.HLT and cpu.eip == ENTRY + 1
    return ram[out_at:out_at + 32].tobytes()


def test_sha256_equals_hashlib_on_random_data():
    rng = np.random.default_rng(3)
    ram, start = picture([])
    for length in [0, 3, 55, 56, 57, 64, 100, 128, 1000, 8191] + list(rng.integers(0, 5000, 6)):
        data = rng.bytes(int(length))
        ram[0x100000:0x100000 + len(data)] = np.frombuffer(data, np.uint8)
        got = _call_sha256(ram, start, 0x100000, len(data), 0x180000)
        assert got == hashlib.sha256(data).digest(), length


def test_backup_is_copied_after_the_digests_verified():
    rng = np.random.default_rng(4)
    src, dst, size = 0x1000, 0x120000, 0x10000
    segments = [(dst, bytes(size))]                   # the backup segment: zeros when loaded
    ram, start = picture(segments, backup=(src, dst, size))
    old = rng.bytes(size)
    ram[src:src + size] = np.frombuffer(old, np.uint8)
    regs, console, _ = run_kjcore(ram, start)
    assert console == b"" and _entered(regs, 1)
    assert ram[dst:dst + size].tobytes() == old and ram[src:src + size].tobytes() == old


def test_relocated_copies_differ_only_in_relocated_words():
    a, _ = purgatory_segment(0x100000, entry=0, zero_page=0, segments=[])
    b, entry = purgatory_segment(0x7000000, entry=0, zero_page=0, segments=[])
    relocs = set(purgatory_image().relocations)
    words = {i - i % 4 for i in range(len(a)) if a[i] != b[i]}
    assert len(a) == len(b) == 4096 and entry == 0x7000000 + purgatory_image().entry
    assert words and all(any(w <= r < w + 4 or r <= w < r + 4 for r in relocs) for w in words)


def test_unicorn_runs_the_same_bytes_with_the_same_result():
    pytest.importorskip("unicorn")
    segments = _segments(5)
    ram, start = picture(segments)
    k_regs, k_console, _ = run_kjcore(ram.copy(), start)
    u_regs, u_console, _ = run_unicorn(ram.copy(), start)
    assert _entered(k_regs, 1) and _entered(u_regs, 0) and k_console == u_console == b""
    ram[segments[7][0] + 3] ^= 0xFF
    k_regs, k_console, _ = run_kjcore(ram.copy(), start)
    u_regs, u_console, _ = run_unicorn(ram.copy(), start)
    assert k_console == u_console and b"segment 0x00000007" in k_console
    assert k_regs["eip"] == u_regs["eip"]                           # both stop after the HLT
    assert {r: k_regs[r] for r in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")} == \
           {r: u_regs[r] for r in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")}


# ------------------------------------------------------------------ hostile arguments
def _call(**kw):
    args = dict(entry=ENTRY, zero_page=ZERO_PAGE, segments=[(0x100000, b"x")])
    args.update(kw)
    load_address = args.pop("load_address", PURGATORY)
    return purgatory_segment(load_address, **args)


@pytest.mark.parametrize("kw, error", [
    (dict(load_address=PURGATORY + 1), "not page aligned"),
    (dict(load_address=-4096), "does not fit"),
    (dict(load_address=1 << 32), "does not fit"),
    (dict(load_address=0xFFFFF000, segments=[]), None),
    (dict(entry=1 << 32), "entry"),
    (dict(zero_page=-1), "zero_page"),
    (dict(segments=[(0x100000, b"ab"), (0x100001, b"c")]), "overlap"),
    (dict(segments=[(PURGATORY + 4095, b"ab")]), "overlaps purgatory"),
    (dict(segments=[(0xFFFFFFFF, b"ab")]), "past 4 GiB"),
    (dict(segments=[(i * 4096, b"a") for i in range(MAX_SEGMENTS + 1)]), "at most 15"),
    (dict(backup=(0x1000, 0x1800, 0x1000)), "overlap"),
    (dict(backup=(0x1000, PURGATORY, 0x1000)), "overlaps purgatory"),
    (dict(backup=(0x1000, 0x9000, 0)), "size is 0"),
    (dict(backup=(0x1000, 0xFFFFF000, 0x2000)), "past 4 GiB"),
])
def test_hostile_arguments_are_refused_with_one_clear_error(kw, error):
    if error is None:                                  # the last page below 4 GiB is fine
        assert len(_call(**kw)[0]) == 4096
        return
    with pytest.raises(ValueError, match=error):
        _call(**kw)


@pytest.mark.parametrize("kw", [
    dict(entry=True), dict(entry=1.0), dict(segments=None), dict(segments=[(0x1000,)]),
    dict(segments=[(0x1000, "text")]), dict(segments=[("0x1000", b"x")]), dict(backup=(1, 2)),
])
def test_wrong_types_are_refused(kw):
    with pytest.raises(TypeError):
        _call(**kw)


def test_fifteen_segments_fit():
    data, entry = _call(segments=[(i * 4096, b"a" * 100) for i in range(MAX_SEGMENTS)])
    assert len(data) == 4096 and entry == PURGATORY
