"""Swap engines (SPEC §7.6): native, Numba and plain-numpy reference are byte-identical;
invariant 10 (two passes change nothing); the bus rule of SPEC §3."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import kjcore
from kjcore import IND_DESTINATION, IND_DONE, IND_INDIRECTION, IND_SOURCE
from kjcore.errors import SwapBusError
from kjcore.swap import swap_pages, swap_pass
from kjcore.testing.strategies import kimages

MiB = 1 << 20
ENGINES = ["native", "numba", "reference"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def randomize(m, seed=0):
    m.ram[:] = np.random.default_rng(seed).integers(0, 256, m.ram_size, dtype=np.uint8)


@SETTINGS
@given(kimages(ram_size=16 * MiB, kernel_reserved=1 * MiB, max_pages=48))
def test_engines_are_byte_identical_and_swap_is_an_involution(m):
    randomize(m, 1)                         # RAM noise everywhere but the list itself...
    img = m.kexec_image
    m.kexec_load(img.start, img.segments, kjcore.KEXEC_PRESERVE_CONTEXT)   # ...reload over it
    img = m.kexec_image
    before = m.ram.copy()
    results = {}
    for engine in ENGINES:
        ram = before.copy()
        n = swap_pages(ram, img.head, img.swap_page, engine)
        assert n == len(img.source_pages())
        results[engine] = ram
        # invariant 10: a second pass restores everything but the swap page
        again = ram.copy()
        swap_pages(again, img.head, img.swap_page, engine)
        sp = img.swap_page
        mask = np.ones(len(again), dtype=bool)
        mask[sp:sp + 4096] = False
        assert np.array_equal(again[mask], before[mask])
    for engine in ENGINES[1:]:
        assert np.array_equal(results[engine], results["native"]), engine


@SETTINGS
@given(kimages(ram_size=16 * MiB, kernel_reserved=1 * MiB, max_pages=32))
def test_one_pass_exchanges_destinations_and_sources(m):
    randomize(m, 2)
    img = m.kexec_image
    m.kexec_load(img.start, img.segments, kjcore.KEXEC_PRESERVE_CONTEXT)
    img = m.kexec_image
    before = m.ram.copy()
    swap_pages(m.ram, img.head, img.swap_page)
    for s, d in zip(img.source_pages().tolist(), img.destination_pages().tolist()):
        if s != d:
            assert np.array_equal(m.ram[d:d + 4096], before[s:s + 4096])
            assert np.array_equal(m.ram[s:s + 4096], before[d:d + 4096])
    last = int(img.source_pages()[-1]) if len(img.source_pages()) else None
    if last is not None:        # the swap page ends holding the last source's original content
        assert np.array_equal(m.ram[img.swap_page:img.swap_page + 4096], before[last:last + 4096])


def hand_list(ram, page, words):
    ram[page:page + 4 * len(words)] = np.array(words, dtype="<u4").view(np.uint8)


@pytest.mark.parametrize("engine", ENGINES)
def test_flag_order_and_skipped_words(engine):
    ram = np.zeros(64 * 4096, dtype=np.uint8)
    ram[0x10000:0x11000] = 1          # D
    ram[0x20000:0x21000] = 2          # S
    ram[0x30000:0x31000] = 3          # S2
    # a word with DESTINATION|SOURCE acts as DESTINATION; a 0 word is skipped; DONE|SOURCE stops
    hand_list(ram, 0x5000, [0x10000 | IND_DESTINATION | IND_SOURCE, 0,
                            0x20000 | IND_SOURCE, 0x6000 | IND_INDIRECTION])
    hand_list(ram, 0x6000, [0x30000 | IND_SOURCE, 0x40000 | IND_DONE | IND_SOURCE,
                            0x20000 | IND_SOURCE])
    n = swap_pages(ram, 0x5000 | IND_INDIRECTION, 0x7000, engine)
    assert n == 2
    assert (ram[0x10000:0x11000] == 2).all() and (ram[0x20000:0x21000] == 1).all()
    assert (ram[0x11000:0x12000] == 3).all() and (ram[0x30000:0x31000] == 0).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_destinations_past_ram_read_ones_and_drop_writes(engine):
    ram = np.full(16 * 4096, 5, dtype=np.uint8)
    hand_list(ram, 0x1000, [0xFFFFF000 | IND_DESTINATION, 0x3000 | IND_SOURCE,
                            0x4000 | IND_SOURCE, IND_DONE])   # D wraps from 4G-4K to 0
    ram[0:0x1000] = 9
    before = ram.copy()
    assert swap_pages(ram, 0x1000 | IND_INDIRECTION, 0x2000, engine) == 2
    assert (ram[0x3000:0x4000] == 0xFF).all()        # the past-RAM destination read all ones
    assert (ram[0x4000:0x5000] == 9).all() and (ram[0:0x1000] == 5).all()   # wrapped to page 0
    with pytest.raises(SwapBusError) as exc:
        swap_pages(before, 0x1000 | IND_INDIRECTION, 0x2000, engine, strict_bus=True)
    assert exc.value.address == 0xFFFFF000


@pytest.mark.parametrize("engine", ENGINES)
def test_list_past_ram_on_a_strict_bus(engine):
    ram = np.zeros(4 * 4096, dtype=np.uint8)
    with pytest.raises(SwapBusError):
        swap_pages(ram, 0x100000 | IND_INDIRECTION, 0x1000, engine, strict_bus=True)


@pytest.mark.parametrize("engine", ["native", "numba"])
def test_cyclic_list_raises_instead_of_hanging(engine):
    ram = np.zeros(4 * 4096, dtype=np.uint8)
    hand_list(ram, 0x1000, [0x1000 | IND_INDIRECTION])
    with pytest.raises(RuntimeError, match="IND_DONE"):
        swap_pages(ram, 0x1000 | IND_INDIRECTION, 0x2000, engine)


def test_bad_arguments():
    ram = np.zeros(4096, dtype=np.uint8)
    with pytest.raises(ValueError):
        swap_pages(ram, 0, 0x800)
    with pytest.raises(TypeError):
        swap_pages(bytearray(4096), 0, 0)
    with pytest.raises(TypeError):
        swap_pages(np.zeros(4096, dtype=np.uint16), 0, 0)
    with pytest.raises(ValueError):
        swap_pages(np.zeros(4000, dtype=np.uint8), 0, 0)
    with pytest.raises(ValueError):
        swap_pages(ram, 1 << 32, 0)
    with pytest.raises(ValueError):
        swap_pages(ram, IND_DONE, 0, engine="magic")
    assert swap_pages(ram, IND_DONE, 0) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_swap_pass_returns_the_word_that_ended_the_walk(engine):
    """What the relocation routine leaves in ECX (SPEC 7.10): DONE may carry other bits."""
    ram = np.zeros(16 * 4096, dtype=np.uint8)
    hand_list(ram, 0x1000, [0x3000 | IND_DESTINATION, 0x4000 | IND_SOURCE, 0xABC000 | IND_DONE])
    assert swap_pass(ram, 0x1000 | IND_INDIRECTION, 0x2000, engine) == (1, 0xABC004)
    assert swap_pass(ram, IND_DONE | 0x10, 0x2000, engine) == (0, 0x14)
