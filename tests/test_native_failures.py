"""The native engine fails like the emulated one (issue 10 B4, SPEC §12 invariant 13).

A corrupted indirection list -- self-linked, cyclic, without IND_DONE, running past RAM -- or a
control-page data area a peer overwrote makes the relocation routine do on hardware whatever
its code does with it: usually walk forever.  Both engines then end with the same error within
the step budget (``StepLimit`` when the walk never ends) and leave the same RAM, registers and
machine state: the native engine leaves every pass it cannot do exactly to the CPU
(:func:`kjcore.swap.plan_pass`).  The C loop itself is bounded and interruptible.
"""
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kjcore
from kjcore import IND_DONE, IND_INDIRECTION, KEXEC_PRESERVE_CONTEXT, Segment, relocate, swap
from kjcore.cpu import CPUFault, StepLimit

RAM = 1 << 20
RESERVED = 64 << 10
DEST = 0x80000
ENGINES = ("emulated", "native")
BUDGET = 200_000
#: CPU state fields that count work, not architectural state (the native engine runs fewer
#: instructions on the CPU and charges the budget for the rest)
WORK = {"tsc", "steps", "trace_pos", "trace_cnt", "con_len"}
CHECKPOINT = 0xEA
#: out %al, $0xEA; ret -- the port hook corrupts the data area while the peer runs
PEER = bytes([0xE6, CHECKPOINT, 0xC3])


def put(ram, addr, value):
    ram[addr:addr + 4] = np.array([value], dtype="<u4").view(np.uint8)


def list_words(ram, img):
    """(address, word) of each word the walk of ``img.head`` reads, the DONE word last."""
    out, ptr, word = [], None, img.head
    while not word & IND_DONE or word & 3:
        ptr = word & 0xFFFFF000 if word & 2 and not word & 1 else ptr + 4
        word = int(ram[ptr:ptr + 4].view("<u4")[0])
        out.append((ptr, word))
    return out


# ----------------------------------------------------------------- corruptions before the jump
def self_link(m, img):
    ind = int(img.indirection_pages()[0])
    put(m.ram, ind, ind | IND_INDIRECTION)


def cycle(m, img):
    """The DONE word links back to the first indirection page: the pages swap back and forth."""
    ind = int(img.indirection_pages()[0])
    put(m.ram, list_words(m.ram, img)[-1][0], ind | IND_INDIRECTION)


def no_done(m, img):
    """The DONE word is gone: the walk reads on through zeros, past RAM and round again."""
    put(m.ram, list_words(m.ram, img)[-1][0], 0)


def past_ram(m, img):
    """The first indirection word points past RAM: all-ones words up to the 4 GiB wrap."""
    put(m.ram, int(img.indirection_pages()[0]), 2 * RAM | IND_INDIRECTION)


BEFORE = {"self-link": self_link, "cycle": cycle, "no-done": no_done, "past-ram": past_ram}


# ------------------------------------------------- a peer overwrites the data area (swap back)
def head_self_link(m, img):
    page = 0x70000
    put(m.ram, page, page | IND_INDIRECTION)
    put(m.ram, img.control_page + relocate.DATA_HEAD, page | IND_INDIRECTION)


def head_past_ram(m, img):
    put(m.ram, img.control_page + relocate.DATA_HEAD, 3 * RAM | IND_INDIRECTION)


def swap_unaligned(m, img):
    put(m.ram, img.control_page + relocate.DATA_PA_SWAP, img.swap_page + 0x234)


def swap_is_the_list(m, img):
    """The swap page is the list's own indirection page: the copies rewrite the list."""
    put(m.ram, img.control_page + relocate.DATA_PA_SWAP, int(img.indirection_pages()[0]))


def garbage(m, img):
    data = img.control_page + relocate.DATA_AREA
    m.ram[data:data + 0x24] = np.random.default_rng(5).integers(0, 256, 0x24, dtype=np.uint8)


DURING = {"head-self-link": head_self_link, "head-past-ram": head_past_ram,
          "swap-unaligned": swap_unaligned, "swap-is-the-list": swap_is_the_list,
          "garbage": garbage}


def run(engine, before=None, during=None, pages=3, budget=BUDGET, **kw):
    m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, engine=engine, **kw)
    m.kexec_load(DEST, [Segment(PEER, DEST, pages * 4096)], KEXEC_PRESERVE_CONTEXT)
    img = m.kexec_image
    if before:
        before(m, img)
    if during:
        m.cpu.on_port(CHECKPOINT, lambda port, size, value: during(m, img))
    t = time.perf_counter()
    try:
        result = m.kernel_kexec(max_steps=budget)
    except CPUFault as e:
        result = e
    return m, result, time.perf_counter() - t


def assert_same(a, b):
    (ma, ra, _), (mb, rb, _) = a, b
    assert type(ra) is type(rb) and str(ra) == str(rb)
    assert ma.state == mb.state
    assert np.array_equal(ma.ram, mb.ram)
    sa, sb = ma.cpu.get_state(), mb.cpu.get_state()
    assert [f for f in sa.dtype.names if f not in WORK and sa[f] != sb[f]] == []


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_corrupted_list_same_error_and_state(name):
    runs = [run(engine, before=BEFORE[name]) for engine in ENGINES]
    assert_same(*runs)
    m, err, seconds = runs[1]
    assert isinstance(err, StepLimit) and m.state != "kernel"      # the walk never ends
    assert seconds < 20


@pytest.mark.parametrize("name", sorted(DURING))
def test_corrupted_data_area_same_error_and_state(name):
    runs = [run(engine, during=DURING[name]) for engine in ENGINES]
    assert_same(*runs)
    assert isinstance(runs[1][1], CPUFault) and runs[1][0].state != "kernel"


def _flagged(page, flag):
    return page * 4096 | flag


#: words a damaged list may hold: links and pages inside and past RAM, any flag mix, zeros
WORDS = st.one_of(
    st.builds(_flagged, st.integers(0, RAM // 4096 - 1), st.integers(0, 15)),
    st.builds(_flagged, st.integers(RAM // 4096, (1 << 20) - 1), st.integers(0, 15)),
    st.sampled_from([0, IND_DONE, 0xFFFFFFFF]),
    st.integers(0, (1 << 32) - 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 6), WORDS), min_size=1, max_size=4),
       st.sampled_from([300, 3000, BUDGET]), st.booleans())
def test_randomly_damaged_lists(damage, budget, strict):
    """Any words written over the list: both engines, same outcome, same machine."""
    def corrupt(m, img):
        ind = int(img.indirection_pages()[0])
        for index, word in damage:
            put(m.ram, ind + 4 * index, word)
    assert_same(*(run(engine, before=corrupt, budget=budget, strict_bus=strict)
                  for engine in ENGINES))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 8), WORDS), min_size=1, max_size=4),
       st.sampled_from([3000, BUDGET]))
def test_randomly_damaged_data_areas(damage, budget):
    """Any words a peer writes over the data area: both engines, same outcome."""
    def corrupt(m, img):
        for index, word in damage:
            put(m.ram, img.control_page + relocate.DATA_AREA + 4 * index, word)
    assert_same(*(run(engine, during=corrupt, budget=budget) for engine in ENGINES))


@pytest.mark.parametrize("name", ["self-link", "past-ram"])
def test_corrupted_list_on_a_strict_bus(name):
    assert_same(*(run(engine, before=BEFORE[name], strict_bus=True) for engine in ENGINES))


@pytest.mark.parametrize("budget", [300, 1200, 5000, 20_000])
def test_a_budget_that_ends_inside_a_pass(budget):
    """A pass the emulated routine could not finish within the budget is left to the CPU;
    one it could is done natively and charged exactly: the budget ends at the same place."""
    assert_same(*(run(engine, pages=40, budget=budget) for engine in ENGINES))


def test_plan_pass_verdicts():
    ram = np.zeros(16 * 4096, dtype=np.uint8)
    put(ram, 0x1000, 0x3000 | 1)
    put(ram, 0x1004, 0x4000 | 8)
    put(ram, 0x1008, 0x2000 | IND_INDIRECTION)
    put(ram, 0x2000, IND_DONE)
    verdict, words, kinds = swap.plan_pass(ram, 0x1000 | 2, 0x5000)
    assert (verdict, words) == ("ok", 4)
    assert kinds == dict(destination=1, indirection=2, done=1, source=1, skipped=0)
    assert swap.plan_pass(ram, 0x1000 | 2, 0x5000, protect=[0x4abc])[0] == "hazard"
    assert swap.plan_pass(ram, 0x1000 | 2, 0x2000)[0] == "hazard"        # swap page = list page
    assert swap.plan_pass(ram, 0x1000 | 2, 0x5000, max_words=3)[0] == "no IND_DONE"
    put(ram, 0x2000, 0x1000 | IND_INDIRECTION)                      # a cycle
    assert swap.plan_pass(ram, 0x1000 | 2, 0x5000)[0] == "no IND_DONE"
    put(ram, 0x2000, 0x100000 | IND_INDIRECTION)                    # past RAM, then page 0
    assert swap.plan_pass(ram, 0x1000 | 2, 0x5000, strict_bus=True)[0] == "bus"
    put(ram, 0x0, 0x2004 | IND_INDIRECTION)             # ... links to the list's DONE word?
    assert swap.plan_pass(ram, 0x1000 | 2, 0x5000)[0] == "no IND_DONE"   # no: entering 0x2000 again
    put(ram, 0x0, 0x6000 | IND_INDIRECTION)
    put(ram, 0x6000, IND_DONE)
    verdict, words, kinds = swap.plan_pass(ram, 0x1000 | 2, 0x5000)
    assert verdict == "ok" and words == 4 + (1 << 32) // 4 - 0x100000 // 4 + 2
    assert kinds["destination"] == 1 + (1 << 32) // 4 - 0x100000 // 4


def test_a_huge_native_pass_stops_on_ctrl_c(tmp_path):
    """The C loop runs Python's signal handlers: SIGINT ends an endless copying walk."""
    script = textwrap.dedent("""
        import os, signal, threading, time
        import numpy as np
        from kjcore.swap import swap_pages
        ram = np.zeros(64 << 20, dtype=np.uint8)
        words = ram[0x1000:0x2000].view("<u4")
        words[0] = 0x100000 | 1
        words[1:1000] = [0x200000 + 0x1000 * i | 8 for i in range(999)]
        words[1000] = 0x1000 | 2            # back to the start: copies forever
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        t = time.monotonic()
        try:
            swap_pages(ram, 0x1000 | 2, 0x3000, "native")
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - t)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.startswith("interrupted"), out.stderr
    assert float(out.stdout.split()[1]) < 5


def test_an_interrupted_native_pass_leaves_the_machine_lost(monkeypatch):
    from kjcore import machine_kexec

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(machine_kexec, "swap_pass", interrupted)
    m, _, _ = run("emulated")
    assert m.state == "kernel"                      # the emulated engine never calls it
    m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, engine="native")
    m.kexec_load(DEST, [Segment(PEER, DEST, 4096)], KEXEC_PRESERVE_CONTEXT)
    with pytest.raises(KeyboardInterrupt):
        m.kernel_kexec()
    assert m.state == "lost"
