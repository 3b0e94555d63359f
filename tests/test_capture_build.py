"""examples/kdump: the committed capture.elf is what its Makefile builds, and it loads as one
segment at 16 MiB (where crashkernel=...@16M starts)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from snapshot_world import CAPTURE, EXAMPLES

from kjcore.loader import load_elf32

SOURCES = ("Makefile", "capture.ld", "capture.h", "entry.S", "capture.c", "bootparams.c",
           "swapmap.c", "core.c", "ata.c", "console.c")


def _why_not(tmp_path):
    for tool in ("make", "as", "ld", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    probe = tmp_path / "probe.c"
    probe.write_text("int f(void) { return 1; }\n")
    r = subprocess.run(["gcc", "-m32", "-ffreestanding", "-c", str(probe), "-o",
                        str(tmp_path / "probe.o")], capture_output=True, text=True)
    return f"gcc -m32 cannot build: {r.stderr.strip()[:200]}" if r.returncode else None


def test_rebuild_is_byte_identical(tmp_path):
    reason = _why_not(tmp_path)
    if reason:
        pytest.skip(reason)
    makefile = (Path(EXAMPLES) / "Makefile").read_text()
    recorded = re.search(r"built\s+with gcc (\S+)", makefile).group(1)
    version = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True,
                             text=True).stdout.strip()
    if version != recorded:
        pytest.skip(f"capture.elf was built with gcc {recorded}, this is {version}")
    build = tmp_path / "build"
    build.mkdir()
    for name in SOURCES:
        shutil.copy(Path(EXAMPLES) / name, build / name)
    r = subprocess.run(["make", "-s", "-C", str(build)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (build / "capture.elf").read_bytes() == Path(CAPTURE).read_bytes(), \
        "capture.elf is stale: run make in examples/kdump and commit it"


def test_loads_as_one_segment_at_16_mib():
    image = load_elf32(Path(CAPTURE).read_bytes())
    (seg,) = image.segments
    assert image.entry == seg.mem == 0x1000000 and seg.memsz < 0x100000
