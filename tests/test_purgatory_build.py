"""The committed purgatory.elf is what kjcore/purgatory/Makefile builds from the sources."""
import random
import struct
from pathlib import Path

import pytest
from rebuild import assert_same_bytes, make_copy, require_recorded_gcc, require_toolchain

import kjcore.purgatory
from kjcore.purgatory.image import parse

SOURCES = Path(kjcore.purgatory.__file__).parent
FILES = ("Makefile", "entry.S", "purgatory.c", "sha256.c", "purgatory.h", "purgatory.ld")


def test_rebuild_is_byte_identical(tmp_path):
    require_toolchain(tmp_path)
    require_recorded_gcc(SOURCES / "Makefile", "purgatory.elf")
    build = make_copy(tmp_path, SOURCES, FILES)
    assert_same_bytes(build, SOURCES, ["purgatory.elf"])


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
