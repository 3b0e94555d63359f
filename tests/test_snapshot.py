"""Snapshots by kexec jump (SPEC §17): examples/kdump/capture.elf, loaded with
``--load-preserve-context --args-linux``, writes the first kernel's memory to disk 0 as an
ELF32 core and jumps back; ``kjcore vmcore --from-disk`` extracts it; the snapshot holds the
first kernel's bytes (the swapped-out pages included) and the first kernel goes on byte-exact
(invariant 8)."""
import shutil
import subprocess

import numpy as np
import pytest
from jump_world import reboot
from snapshot_world import CAPTURE, MEM_MAX, MEM_MIN, load_like_kjexec, load_snapshot

import kjcore
from kjcore.commands import kjexec
from kjcore.commands.main import main as kjcore_main
from kjcore.fuzz.oracle import preserved_mask
from kjcore.kdump.from_disk import find_core
from kjcore.store import open_machine

elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402

MiB = 1 << 20
WINDOW = ["--mem-min=0x1000000", "--mem-max=0x10fffff"]


def _loads(path):
    """{paddr: bytes} of the PT_LOAD segments of the core file at ``path`` (pyelftools)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_CORE" and elf.header.e_machine == "EM_386"
        return {s.header.p_paddr: s.data() for s in elf.iter_segments()
                if s.header.p_type == "PT_LOAD"}


def _as_ram(loads, size):
    """The snapshot as a RAM image (and which bytes it covers)."""
    ram, covered = np.zeros(size, np.uint8), np.zeros(size, bool)
    for paddr, data in loads.items():
        ram[paddr:paddr + len(data)] = np.frombuffer(data, np.uint8)
        covered[paddr:paddr + len(data)] = True
    return ram, covered


def test_snapshot_flow_through_kjexec_and_vmcore(tmp_path, capsys):
    machine, disk, snap = str(tmp_path / "m"), str(tmp_path / "disk.img"), str(tmp_path / "snap")
    assert kjcore_main(["machine", "new", machine, "--ram", "24M", "--disk",
                        f"{disk}:32M"]) == 0
    assert kjexec.main(["--machine", machine, "-l", "--load-preserve-context", "--args-linux",
                        *WINDOW, CAPTURE]) == 0
    m = open_machine(machine)
    before, img = m.ram.copy(), m.kexec_image
    mask = preserved_mask(m, img)
    dests = img.destination_pages().tolist()
    capsys.readouterr()
    assert kjexec.main(["--machine", machine, "-e"]) == 0
    out = capsys.readouterr().out
    assert "capture: writing 0x017a0000 bytes (snapshot) to disk 0" in out
    assert "back in the first kernel" in out
    after = open_machine(machine)
    assert after.state == "kernel"
    changed = np.flatnonzero((after.ram != before) & mask)
    assert changed.size == 0, f"invariant 8: first kernel byte {changed[0]:#x} changed"

    assert kjcore_main(["vmcore", machine, "--from-disk", "-o", snap]) == 0
    ram, covered = _as_ram(_loads(snap), len(before))
    usable = np.zeros(len(before), bool)              # the BIOS's e820 RAM, whole pages
    for base, size, kind in after.e820:
        if kind == 1:
            usable[-(-base // 4096) * 4096:(base + size) // 4096 * 4096] = True
    assert (covered == usable).all()
    differ = np.flatnonzero((ram != before) & mask & covered)
    assert differ.size == 0, f"snapshot byte {differ[0]:#x} is not the first kernel's"
    # the destination pages: the first kernel's bytes, which were swapped out at the time
    for d in dests:
        assert ram[d:d + 4096].tobytes() == before[d:d + 4096].tobytes()
    if shutil.which("readelf"):
        r = subprocess.run(["readelf", "-lW", snap], capture_output=True, text=True)
        assert r.returncode == 0 and "0xc0100000 0x00100000 0x1700000" in r.stdout


def _disk_bytes(disk, core, paddr, size):
    (load,) = [p for p in core.loads if p.paddr <= paddr < p.paddr + p.filesz]
    at = load.offset + paddr - load.paddr
    first, last = at // 512, -(-(at + size) // 512)
    return disk.read(first, last - first)[at % 512:at % 512 + size]


def test_swapped_out_pages_are_read_where_the_jump_put_them():
    """While the program runs, the first kernel's bytes at a destination page lie in its
    source page: the snapshot has them at their own addresses. (Free pages kexec_load took
    as their own destination, or as another page's source, held nothing of the first
    kernel's: kexec overwrote them at load time, as 2.6.27's kimage_alloc_page does.)"""
    m = kjcore.Machine(ram_size=20 * MiB, disks=[24 * MiB])
    pattern = np.random.default_rng(9).integers(0, 256, MEM_MAX + 1 - MEM_MIN, dtype=np.uint8)
    m.ram[MEM_MIN:MEM_MAX + 1] = pattern
    img = load_snapshot(m)
    before, mask = m.ram.copy(), preserved_mask(m, img)
    swapped = [d for d, s in zip(img.destination_pages().tolist(),
                                 img.source_pages().tolist()) if d != s]
    kept = [d for d in swapped if (before[d:d + 4096] == pattern[d - MEM_MIN:
                                                                d - MEM_MIN + 4096]).all()]
    assert len(kept) > 100                          # pages holding the first kernel's pattern
    assert reboot(m) == 0 and m.state == "kernel"
    assert not ((m.ram != before) & mask).any()                      # invariant 8
    got = _disk_bytes(m.disks[0], find_core(m.disks[0]), MEM_MIN, MEM_MAX + 1 - MEM_MIN)
    snap = np.frombuffer(got, np.uint8)
    for d in swapped:
        assert (snap[d - MEM_MIN:d - MEM_MIN + 4096] == before[d:d + 4096]).all(), hex(d)


def test_every_exec_takes_a_fresh_snapshot():
    """After the jump back the program's re-entry point is the image's start: the next exec
    continues it, and it writes the first kernel as it is then."""
    m = kjcore.Machine(ram_size=20 * MiB, disks=[24 * MiB])
    load_snapshot(m)
    assert reboot(m) == 0 and m.state == "kernel"
    first = bytes(m.disks[0].read(0, 8))
    marker_at = 0x3F0000                             # first-kernel RAM, no kexec page
    m.ram[marker_at:marker_at + 8] = np.frombuffer(b"changed!", np.uint8)
    m.debugcon = b""
    assert reboot(m) == 0 and m.state == "kernel"
    assert m.debugcon.count(b"capture: done") == 1
    assert _disk_bytes(m.disks[0], find_core(m.disks[0]), marker_at, 8) == b"changed!"
    assert bytes(m.disks[0].read(0, 8)) == first      # the same header


def test_a_failed_snapshot_still_returns_to_the_first_kernel():
    """A disk too small for the snapshot: the message, nothing written, and the jump back."""
    m = kjcore.Machine(ram_size=20 * MiB, disks=[4 * MiB])
    img = load_snapshot(m)
    before, mask = m.ram.copy(), preserved_mask(m, img)
    assert reboot(m) == 0 and m.state == "kernel"
    assert b"capture: core file does not fit disk 0, bytes 0x013a0000\n" in m.debugcon
    assert b"capture: done" not in m.debugcon and m.disks[0].read(0, 1) == bytes(512)
    assert not ((m.ram != before) & mask).any()                      # invariant 8


def test_a_pae_machine_with_a_bios_e820_map():
    """The e820 table of a BIOS machine (RAM below 640 KiB, holes, RAM above 1 MiB): one
    PT_LOAD per usable range, cut inward to whole pages; a PAE first kernel (fix_pae_return)
    comes back byte-exact."""
    m = kjcore.Machine(ram_size=24 * MiB, disks=[32 * MiB], bios=True, pae=True,
                       fix_pae_return=True)
    img = load_like_kjexec(m, b"console=ttyS0")
    before, mask = m.ram.copy(), preserved_mask(m, img)
    assert reboot(m) == 0 and m.state == "kernel"
    assert b'capture: command line "console=ttyS0 memmap=' in m.debugcon
    assert not ((m.ram != before) & mask).any()                      # invariant 8
    pages = [(-(-base // 4096) * 4096, (base + size) // 4096 * 4096)      # whole pages only
             for base, size, kind in m.e820 if kind == 1]
    assert [(p.paddr, p.paddr + p.filesz) for p in find_core(m.disks[0]).loads] == pages
