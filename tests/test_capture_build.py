"""examples/kdump: the committed capture.elf is what its Makefile builds, and it loads as one
segment at 16 MiB (where crashkernel=...@16M starts)."""
from pathlib import Path

from rebuild import assert_same_bytes, make_copy, require_recorded_gcc, require_toolchain
from snapshot_world import CAPTURE, EXAMPLES

from kjcore.loader import load_elf32

SOURCES = ("Makefile", "capture.ld", "capture.h", "entry.S", "capture.c", "bootparams.c",
           "swapmap.c", "core.c", "ata.c", "console.c")


def test_rebuild_is_byte_identical(tmp_path):
    require_toolchain(tmp_path)
    require_recorded_gcc(Path(EXAMPLES) / "Makefile", "capture.elf")
    build = make_copy(tmp_path, EXAMPLES, SOURCES)
    assert_same_bytes(build, EXAMPLES, [Path(CAPTURE).name])


def test_loads_as_one_segment_at_16_mib():
    image = load_elf32(Path(CAPTURE).read_bytes())
    (seg,) = image.segments
    assert image.entry == seg.mem == 0x1000000 and seg.memsz < 0x100000
