"""Open/save cycles do not grow file descriptors or memory (issue 10 B9).

A KImage used to hold its Machine (and the Machine its KImage): every opened machine with a
loaded image, its RAM mapping and the mapping's file descriptor lived until the cyclic garbage
collector ran. Now a machine is freed when its last reference goes, with the collector off.
"""
import gc
import os
import weakref

import kjcore

MiB = 1 << 20


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds():
    return len(os.listdir("/proc/self/fd"))


def test_open_save_cycles_do_not_grow_fds_or_rss(tmp_path):
    path = tmp_path / "m"
    m = kjcore.Machine(ram_size=16 * MiB)
    m.kexec_load(0x400000, [kjcore.Segment(b"\x90" * 5000, 0x400000, 0x2000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    m.save(path)
    del m
    alive = []

    def cycle():
        m = kjcore.Machine.open(path)
        m.ram[0x500000] += 1                        # a private page of the mapping
        m.save(path)
        alive.append(weakref.ref(m))

    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            cycle()
        fds, rss = _fds(), _rss()
        for _ in range(200):
            cycle()
        assert all(r() is None for r in alive), "a machine outlived its last reference"
        assert _fds() == fds
        assert _rss() - rss < 16 * MiB, f"RSS grew by {(_rss() - rss) / MiB:.1f} MiB"
    finally:
        if enabled:
            gc.enable()
