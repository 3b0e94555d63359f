"""The committed purgatory.elf is what kjcore/purgatory/Makefile builds from the sources."""
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import kjcore.purgatory
from kjcore.purgatory.image import parse

SOURCES = Path(kjcore.purgatory.__file__).parent
FILES = ("Makefile", "entry.S", "purgatory.c", "sha256.c", "purgatory.h", "purgatory.ld")


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
    recorded = re.search(r"built\s+#?\s*with gcc (\S+)", (SOURCES / "Makefile").read_text())
    version = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True,
                             text=True).stdout.strip()
    if version != recorded.group(1):
        pytest.skip(f"purgatory.elf was built with gcc {recorded.group(1)}, this is {version}")
    build = tmp_path / "build"
    build.mkdir()
    for name in FILES:
        shutil.copy(SOURCES / name, build / name)
    r = subprocess.run(["make", "-s", "-C", str(build)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (build / "purgatory.elf").read_bytes() == (SOURCES / "purgatory.elf").read_bytes(), \
        "purgatory.elf is stale: run make in kjcore/purgatory and commit it"


def test_the_committed_build_parses():
    image = parse((SOURCES / "purgatory.elf").read_bytes())
    assert image.entry == 0 and len(image.data) <= 4096 and image.relocations
    assert {"purgatory_params", "sha256_digest", "purgatory_start"} <= set(image.symbols)


@pytest.mark.parametrize("cut", [0, 10, 60, 200])
def test_a_truncated_build_is_refused(cut):
    blob = (SOURCES / "purgatory.elf").read_bytes()
    with pytest.raises(ValueError):
        parse(blob[:cut])


def test_a_damaged_build_is_refused_or_parsed_never_crashes():
    """Random byte flips in the header and tables: parse returns or raises ValueError."""
    blob = (SOURCES / "purgatory.elf").read_bytes()
    rng = random.Random(5)
    _, offset, _, _, filesz = struct.unpack_from("<5I", blob, 52)     # the PT_LOAD's header
    tables = [i for i in range(len(blob)) if i < 0x100 or i >= offset + filesz]
    refused = 0
    for _ in range(300):
        damaged = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.choice(tables)] = rng.randrange(256)
        try:
            parse(bytes(damaged))
        except ValueError:
            refused += 1
    assert refused > 0
