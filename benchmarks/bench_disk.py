"""Guest-to-disk throughput through the ATA controller (SPEC §15, issue 11: goal >= 100 MB/s).

A protected-mode guest writes a disk 256 sectors (128 KiB) at a time: WRITE SECTORS with the
block's LBA, wait for DRQ, ``rep outsw`` of 65536 words from a buffer in RAM, next block.
``REP OUTSW`` on the data port goes through the CPU's bulk path
(:mod:`kjcore.cpu.portstring`): one Python call per string, numpy copies.  The same guest
with the bulk path off (one Python call per word) is measured on a smaller disk beside it.

Run: ``pytest benchmarks/bench_disk.py --benchmark-enable -s``
"""
import time

import numpy as np
import pytest
from _timing import report

from kjcore.cpu import CPU, Status
from kjcore.devices import AtaController, Disk

#: for block in range(EBX): WRITE SECTORS (count 0 = 256, LBA = block * 256), wait for DRQ,
#: rep outsw 65536 words from 0x100000; then hlt.  (GNU as, 32-bit: xor %ebp,%ebp; 1: mov
#: $0x1f2,%dx; xor %al,%al; out; mov %ebp,%eax; shl $8,%eax; 3 x (inc %dx; out; shr $8,%eax);
#: and $0xf,%al; or $0xe0,%al; inc %dx; out; inc %dx; mov $0x30,%al; out; 2: in; test $8,%al;
#: jz 2b; mov $0x1f0,%dx; mov $0x100000,%esi; mov $0x10000,%ecx; rep outsw; inc %ebp;
#: cmp %ebx,%ebp; jne 1b; hlt)
GUEST = bytes.fromhex(
    "31ed66baf20130c0ee89e8c1e0086642eec1e8086642eec1e8086642eec1e808240f0ce06642ee6642b030"
    "eeeca80874fb66baf001be00001000b90000010066f36f4539dd75bbf4")
BLOCK = 256 * 512


def _write_disk(disk, blocks, bulk=True):
    """Seconds for the guest to write ``blocks`` 128 KiB blocks to ``disk``."""
    ram = np.zeros(4 << 20, np.uint8)
    ram[0x1000:0x1000 + len(GUEST)] = np.frombuffer(GUEST, np.uint8)
    ram[0x100000:0x100000 + BLOCK] = np.arange(BLOCK, dtype=np.uint32).astype(np.uint8)
    cpu = CPU(ram)
    ata = AtaController([disk])
    if bulk:
        ata.attach(cpu)
    else:
        for port in (0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6):
            cpu.on_port(port, ata.port)
    cpu.eip, cpu.esp, cpu.ebx = 0x1000, 0x9000, blocks
    t0 = time.perf_counter()
    assert cpu.run(1 << 40) == Status.HLT
    elapsed = time.perf_counter() - t0
    assert disk.read((blocks - 1) * 256, 256) == ram[0x100000:0x100000 + BLOCK].tobytes()
    return elapsed


@pytest.mark.parametrize("where", ["memory", "file"])
def test_rep_outsw_to_disk(benchmark, tmp_path, where):
    blocks = 512                                    # 64 MiB
    size = blocks * BLOCK

    def fresh(name):
        return Disk.memory(size) if where == "memory" else \
            Disk.create(str(tmp_path / name), size)
    _write_disk(Disk.memory(BLOCK), 1)              # compile
    cold = _write_disk(fresh("cold.img"), blocks)   # the disk's pages touched the first time
    disk = fresh("disk.img")
    benchmark.pedantic(_write_disk, args=(disk, blocks), rounds=3, iterations=1)
    slow_blocks = 2
    slow = _write_disk(Disk.memory(slow_blocks * BLOCK), slow_blocks, bulk=False)
    warm = size / 1e6 / benchmark.stats.stats.min
    report(benchmark, f"guest REP OUTSW to a {where} disk (64 MiB)",
           mb_per_s=warm, first_write_mb_per_s=size / 1e6 / cold,
           per_word_mb_per_s=slow_blocks * BLOCK / 1e6 / slow, goal_ratio=warm / 100)
