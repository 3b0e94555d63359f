"""Mutation fuzz of kjcore.loader.load_elf32: hostile files give a LoadedImage or a LoaderError.

Valid seed files are mutated (header fields set to edge values, bytes flipped, truncated,
extended, spliced) with a fixed seed so a failure reproduces. The only outcomes allowed are a
well-formed :class:`LoadedImage` (checked against pyelftools on a sample) or one
:class:`LoaderError` naming a known field; any other exception, or a slow call, fails the test.
"""
import gc
import random
import struct
import time

import pytest

from kjcore.constants import KEXEC_SEGMENT_MAX, PAGE_SIZE
from kjcore.loader import LoadedImage, LoaderError, load_elf32

try:
    from . import elfbuild
except ImportError:             # tests/ is not a package: pytest put it on sys.path
    import elfbuild
from elfbuild import EHDR_OFFSETS, PHDR_FIELDS, PHDR_SIZE, SHDR_FIELDS, SHDR_SIZE, Phdr

#: every field a LoaderError from load_elf32 may name
FIELDS = {"e_ident", "EI_CLASS", "EI_DATA", "EI_VERSION", "Elf32_Ehdr", "e_ehsize", "e_type",
          "e_machine", "e_version", "e_phoff", "e_phnum", "e_phentsize", "e_shoff",
          "e_shentsize", "sh_entsize", "sh_offset", "sh_size", "p_offset", "p_filesz",
          "p_memsz", "p_type", "p_paddr", "nr_segments", "mem"}
#: a single call taking more CPU time than this is treated as a hang (CPU time of this
#: process, so that other work on the machine, such as the Numba compile helper, cannot
#: fail the test; the cyclic garbage collector is off meanwhile, see run_campaign)
SLOW_CALL = 0.25


def seeds():
    """Valid files of several shapes: the starting points of every mutation."""
    ET_DYN, ET_CORE = elfbuild.ET_DYN, elfbuild.ET_CORE
    many = [Phdr(0x100000 + i * 2 * PAGE_SIZE, bytes([i]) * 40, PAGE_SIZE + i) for i in range(15)]
    return [
        elfbuild.build_elf32([Phdr(0x100000, b"\x90" * 64, 0x1800)], entry=0x100000),
        elfbuild.build_elf32([Phdr(0x200000, b"\xcc" * 32, 0x3000), Phdr(0x100000, b"ab", 2),
                              Phdr(0, b"NOTE" * 4, type=elfbuild.PT_NOTE)],
                             entry=0x100000, sections=True),
        elfbuild.build_elf32([Phdr(0x400000, b"x" * 10, 0x10), Phdr(0x401000, b"", 0x5000)],
                             e_type=ET_DYN, sections=True, data_align=1),
        elfbuild.build_elf32([Phdr(0, b"", 0), Phdr(0x1000, b"core", 0x1000)], e_type=ET_CORE),
        elfbuild.build_elf32(many, entry=0x100000, data_align=4),
    ]


def _edge_values(rng, data):
    n = len(data)
    return [0, 1, 2, 3, 4, 6, 0x7F, 0xFF, 0xFFF, 0x1000, 0x1001, 0xFFFE, 0xFFFF, n - 1, n, n + 1,
            n // 2, 0x7FFFFFFF, 0x80000000, 0xFFFFF000, 0xFFFFFFFF, rng.getrandbits(32),
            rng.getrandbits(16), rng.getrandbits(8)]


def _set(data, offset, code, value):
    width = struct.calcsize("<" + code)
    if offset < 0 or offset + width > len(data):
        return data
    return elfbuild.set_field(data, offset, code, value & ((1 << 8 * width) - 1))


def _phoff(data):
    return struct.unpack_from("<I", data, 28)[0] if len(data) >= 32 else 0


def _shoff(data):
    return struct.unpack_from("<I", data, 32)[0] if len(data) >= 36 else 0


def mutate_field(rng, data):
    """Set one header field (ELF, program or section header) to an edge value."""
    value = rng.choice(_edge_values(rng, data))
    kind = rng.random()
    if kind < 0.4:
        offset, code = EHDR_OFFSETS[rng.choice(sorted(EHDR_OFFSETS))]
    elif kind < 0.85:
        index = rng.randrange(4)
        offset, code = _phoff(data) + index * PHDR_SIZE + 4 * rng.randrange(len(PHDR_FIELDS)), "I"
    else:
        index = rng.randrange(6)
        offset, code = _shoff(data) + index * SHDR_SIZE + 4 * rng.randrange(len(SHDR_FIELDS)), "I"
    return _set(data, offset, code, value)


def mutate_bytes(rng, data):
    """Overwrite or bit-flip a few bytes, mostly in the headers."""
    out = bytearray(data)
    if not out:
        return data
    hot = min(len(out), 52 + 4 * PHDR_SIZE)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(hot) if rng.random() < 0.75 else rng.randrange(len(out))
        out[i] = rng.getrandbits(8) if rng.random() < 0.5 else out[i] ^ (1 << rng.randrange(8))
    return bytes(out)


def mutate_length(rng, data):
    """Truncate, extend with junk, or splice a chunk of the file over another place."""
    kind = rng.random()
    if kind < 0.45:
        return data[:rng.randrange(len(data) + 1)]
    if kind < 0.7:
        return data + rng.randbytes(rng.randint(1, 64))
    a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[a:b] + data[at + (b - a):]


MUTATORS = (mutate_field, mutate_field, mutate_bytes, mutate_length)


def mutants(count, seed):
    """``count`` mutated files, deterministic in ``seed``."""
    rng = random.Random(seed)
    base = seeds()
    for _ in range(count):
        data = rng.choice(base)
        for _ in range(rng.choice((1, 1, 2, 3))):
            data = rng.choice(MUTATORS)(rng, data)
        yield data


def check_image(image, data):
    """A LoadedImage must be something kexec_load can be given."""
    assert isinstance(image, LoadedImage)
    assert 1 <= len(image.segments) <= KEXEC_SEGMENT_MAX
    assert 0 <= image.entry < 1 << 32
    end = 0
    for seg in image.segments:
        assert seg.mem % PAGE_SIZE == 0 and seg.memsz % PAGE_SIZE == 0 and seg.memsz > 0
        assert seg.bufsz <= seg.memsz and seg.mem >= end
        assert seg.mem + seg.memsz <= 1 << 32
        assert seg.buf.obj is data or bytes(seg.buf) in data
        end = seg.mem + seg.memsz


def run_campaign(count, seed, oracle_every=3):
    """Load ``count`` mutants; return {outcome: number}. Fails on any forbidden outcome.

    The cyclic garbage collector is off while it runs: one full collection of
    the test process's heap (Numba's and llvmlite's objects) can take longer
    than SLOW_CALL and land in any call.
    """
    gc.collect()
    gc.disable()
    try:
        return _campaign(count, seed, oracle_every)
    finally:
        gc.enable()


def _campaign(count, seed, oracle_every):
    outcomes = {}
    loaded = 0
    for i, data in enumerate(mutants(count, seed)):
        start = time.process_time()
        try:
            image = load_elf32(data)
        except LoaderError as err:
            outcome = err.field
            assert err.field in FIELDS, f"mutant {i} (seed {seed}): unknown field {err!r}"
            assert str(err).startswith(err.field + ": ")
        except Exception as err:        # noqa: BLE001 - any other exception is the bug
            raise AssertionError(f"mutant {i} (seed {seed}) raised {err!r}; "
                                 f"file: {data.hex()}") from err
        else:
            outcome = "loaded"
            check_image(image, data)
            if loaded % oracle_every == 0:
                segments, entry = elfbuild.pyelftools_load(data)
                got = [(s.mem, bytes(s.read(0, s.bufsz)), s.memsz) for s in image.segments]
                assert (got, image.entry) == (segments, entry), f"mutant {i} (seed {seed})"
            loaded += 1
        elapsed = time.process_time() - start
        assert elapsed < SLOW_CALL, f"mutant {i} (seed {seed}) took {elapsed:.3f}s"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def test_seeds_are_valid():
    for data in seeds():
        check_image(load_elf32(data), data)


def test_mutation_fuzz_12000():
    outcomes = run_campaign(12_000, seed=20080727)
    assert sum(outcomes.values()) == 12_000
    # the campaign must reach both success and a broad range of refusals to mean anything
    assert outcomes.get("loaded", 0) > 1000
    assert len(set(outcomes) - {"loaded"}) >= 18, sorted(outcomes)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_mutation_fuzz_long(seed):
    run_campaign(100_000, seed=seed, oracle_every=20)
