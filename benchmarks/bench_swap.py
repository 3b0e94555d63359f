"""Swap engines against the memcpy bound (SPEC §13).

The memcpy bound of one swap pass is three plain copies of the image's size (S -> swap,
D -> S, swap -> D for every page), done here as three bulk ``np.copyto`` calls over
contiguous buffers of the same size in the same machine's RAM.

Run: ``pytest benchmarks/bench_swap.py --benchmark-enable -s``
"""
import numpy as np
import pytest
from _timing import best_of, report

import kjcore
from kjcore.swap import swap_pages

MiB = 1 << 20


@pytest.fixture(scope="module")
def machine():
    m = kjcore.Machine(ram_size=1024 * MiB, kernel_reserved=4 * MiB)
    m.ram[:] = np.random.default_rng(0).integers(0, 256, m.ram_size, dtype=np.uint8)
    return m


def load(m, size):
    m.kexec_load(0x1000000, [kjcore.Segment.zero(0, 0x1000000, size)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    return m.kexec_image


def memcpy_bound(m, size):
    a = m.ram[64 * MiB:64 * MiB + size]
    b = m.ram[400 * MiB:400 * MiB + size]
    tmp = m.ram[800 * MiB:800 * MiB + size] if size <= 200 * MiB else np.empty(size, np.uint8)

    def three_copies():
        np.copyto(tmp, a)
        np.copyto(a, b)
        np.copyto(b, tmp)
    return best_of(three_copies)


@pytest.mark.parametrize("size_mib", [16, 64, 256])
def test_native_swap_vs_memcpy(benchmark, machine, size_mib):
    size = size_mib * MiB
    img = load(machine, size)
    benchmark.pedantic(swap_pages, args=(machine.ram, img.head, img.swap_page, "native"),
                       rounds=6, iterations=1)
    native = best_of(lambda: swap_pages(machine.ram, img.head, img.swap_page, "native"))
    numba = best_of(lambda: swap_pages(machine.ram, img.head, img.swap_page, "numba"))
    bound = memcpy_bound(machine, size)
    report(benchmark, f"swap {size_mib} MiB",
           native_vs_memcpy=bound / native, numba_vs_native=native / numba,
           native_GiB_s=3 * size / native / (1 << 30))
