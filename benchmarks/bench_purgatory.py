"""Purgatory's SHA-256 over 16 and 64 MiB of segments: kjcore's CPU vs Unicorn (SPEC §18),
and a snapshot of a 256 MiB machine to disk by kexec jump, end to end (issue 14).

The same relocated purgatory (kjcore/purgatory) verifies the same four segments of random data
on both CPUs in the same run; each run ends at the image's entry (a HLT) with ESI = the zero
page, so both did all the work. The figure is Unicorn's time / kjcore's time (goal >= 0.5,
i.e. kjcore takes at most twice Unicorn's time). kjcore's CPU is warmed on a small picture
first, so its figure excludes Numba compilation; Unicorn needs no warm-up beyond its first
translation, which is part of its time as kjcore's first decode is of its own.

The snapshot: examples/kdump/capture.elf loaded as ``kjexec -l --load-preserve-context
--args-linux --mem-min=16M --mem-max=17M-1`` loads it (purgatory hashes the 1 MiB window), one
exec: purgatory, 256 MiB through the ATA controller (polled per sector), the jump back.

Run: ``pytest benchmarks/bench_purgatory.py --benchmark-enable -s`` (64 MiB takes minutes).
"""
import os
import time

import numpy as np
import pytest
from _timing import report

import kjcore
from kjcore.cpu import CPU, Status
from kjcore.linux_load import finish_linux_load, plan_linux_load
from kjcore.loader import load_elf32, preserve_context_backup_segments, sort_segments
from kjcore.purgatory import purgatory_segment

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as X  # noqa: E402

PURGATORY, ENTRY, ZERO_PAGE, STACK_TOP, SEGMENTS = 0x200000, 0x300000, 0x90000, 0x8F000, 0x400000


def _picture(total, parts=4, seed=0):
    """RAM with purgatory, ``parts`` random segments of ``total`` bytes and a HLT at ENTRY."""
    rng = np.random.default_rng(seed)
    ram = np.zeros(SEGMENTS + total, np.uint8)
    ram[SEGMENTS:] = rng.integers(0, 256, total, dtype=np.uint8)
    step = total // parts
    segments = [(SEGMENTS + i * step, memoryview(ram[SEGMENTS + i * step:
                                                     SEGMENTS + (i + 1) * step]))
                for i in range(parts)]
    data, start = purgatory_segment(PURGATORY, entry=ENTRY, zero_page=ZERO_PAGE,
                                    segments=segments)
    ram[PURGATORY:PURGATORY + len(data)] = np.frombuffer(data, np.uint8)
    ram[ENTRY] = 0xF4
    return ram, start


def _kjcore(ram, start):
    cpu = CPU(ram)
    cpu.eip, cpu.esp = start, STACK_TOP
    t0 = time.perf_counter()
    assert cpu.run(1 << 40) == Status.HLT
    elapsed = time.perf_counter() - t0
    assert (cpu.eip, cpu.esi, bytes(cpu.debugcon)) == (ENTRY + 1, ZERO_PAGE, b"")
    return elapsed, cpu.steps


def _unicorn(ram, start):
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, len(ram))
    uc.mem_write(0, ram.tobytes())
    uc.reg_write(X.UC_X86_REG_ESP, STACK_TOP)
    uc.reg_write(X.UC_X86_REG_CR0, 0x11)
    t0 = time.perf_counter()
    uc.emu_start(start, ENTRY)
    elapsed = time.perf_counter() - t0
    assert (uc.reg_read(X.UC_X86_REG_EIP), uc.reg_read(X.UC_X86_REG_ESI)) == (ENTRY, ZERO_PAGE)
    return elapsed


@pytest.mark.parametrize("mib", [16, 64])
def test_purgatory_sha256(benchmark, mib):
    _kjcore(*_picture(1 << 16))                                   # compile
    ram, start = _picture(mib << 20)
    steps = []

    def run():
        elapsed, n = _kjcore(ram, start)
        steps.append(n)
        return elapsed
    benchmark.pedantic(run, rounds=1, iterations=1)
    kj = benchmark.stats.stats.min
    uc = _unicorn(ram, start)
    size = mib << 20
    report(benchmark, f"purgatory SHA-256 over {mib} MiB",
           kjcore_s=kj, unicorn_s=uc, kjcore_mb_per_s=size / 1e6 / kj,
           unicorn_mb_per_s=size / 1e6 / uc, kjcore_mips=steps[-1] / kj / 1e6,
           ratio_vs_unicorn=uc / kj, goal_ratio=(uc / kj) / 0.5)


CAPTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "kdump", "capture.elf")


def test_snapshot_of_a_256_mib_machine(benchmark):
    mib, lo, hi = 256, 0x1000000, 0x10FFFFF
    m = kjcore.Machine(ram_size=mib << 20, disks=[(mib + 4) << 20])
    with open(CAPTURE, "rb") as f:
        image = load_elf32(f.read())
    plan = plan_linux_load(m, image, kjcore.KEXEC_PRESERVE_CONTEXT, b"", mem_min=lo, mem_max=hi)
    segments = list(plan.segments) + [plan.purgatory]
    segments += preserve_context_backup_segments(segments, lo, hi, m.ram_size)
    segments, entry = finish_linux_load(plan, list(sort_segments(segments)))
    m.kexec_load(entry, segments, kjcore.KEXEC_PRESERVE_CONTEXT)

    def snapshot():
        t0 = time.perf_counter()
        assert m.reboot(kjcore.LINUX_REBOOT_MAGIC1, kjcore.LINUX_REBOOT_MAGIC2,
                        kjcore.LINUX_REBOOT_CMD_KEXEC) == 0
        return time.perf_counter() - t0
    benchmark.pedantic(snapshot, rounds=1, iterations=1)
    assert m.state == "kernel" and m.debugcon.endswith(b"capture: done\n")
    elapsed = benchmark.stats.stats.min
    report(benchmark, f"snapshot of a {mib} MiB machine to disk", seconds=elapsed,
           mb_per_s=(mib << 20) / 1e6 / elapsed, guest_steps_m=m.last_result.steps / 1e6)
