"""kexec jump on kjcore's CPU: SPEC §7, §8 and §12 invariants 7-13.

Every test runs the real relocation routine on the simulated CPU (no doubles).  Machines are
small (1 MiB, 64 KiB for the first kernel) so a jump costs well under a millisecond.
"""
import struct

import numpy as np
import pytest
from jump_world import (
    CALL_BACK,
    DEST,
    ENGINES,
    HLT,
    MODES,
    RAM,
    RESERVED,
    RET,
    UD2,
    P,
    asm,
    d32,
    jmp_short,
    load,
    machine,
    out_e9,
    reboot,
    state_diff,
)

import kjcore
from kjcore import (
    Segment,
    relocate,
)
from kjcore.constants import PAGE_OFFSET
from kjcore.cpu import CPUFault, Status, StepLimit, TripleFault
from kjcore.fuzz.oracle import PRESERVED_STATE, JumpOracle, preserved_mask
from kjcore.fuzz.payloads import random_payload
from kjcore.machine_kexec import ExecResult, JumpResult
from kjcore.pm import RecordingDevice


# ------------------------------------------------------------------ round trips (7, 8, 9, 11)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("exit", ["call", "ret"])
def test_round_trip_invariants(mode, engine, exit):
    m = machine(mode, engine)
    p = random_payload(np.random.default_rng(7), DEST, 3, n_ops=40, exit=exit,
                       checkpoint_port=0xEA)
    m.kexec_load(p.entry, p.segments(), P)
    img = m.kexec_image
    oracle = JumpOracle(m)
    pages = p.initial_pages()
    seen = []
    m.cpu.on_port(0xEA, lambda port, size, value: seen.append(
        bytes(m.ram[DEST:DEST + p.size])))
    for _ in range(3 if exit == "call" else 1):
        oracle.before()
        before_pages = bytes(pages)
        console, returned = p.run_round(pages, img.control_page, img.swap_page)
        seen.clear()
        assert reboot(m) == 0
        r = m.last_result
        assert isinstance(r, JumpResult) and m.state == "kernel"
        # invariant 7: the image finds its pages as it left them, and leaves them as modelled
        assert seen == [before_pages, bytes(pages)]
        assert r.debugcon == console and m.debugcon.endswith(console)
        assert r.pages_swapped == 2 * 3 and r.steps > 0
        oracle.check(p.image_pages(pages))                  # invariants 8, 9 and SPEC 8
        # invariant 11: the new start is the word at [ESP] on re-entry
        want = p.reentry if exit == "call" else oracle.expected_ret_start(p.image_pages(pages))
        assert r.start == r.eax == img.start == want
        assert m.kexec_image is img and img.preserve_context      # the exec kept the image


@pytest.mark.parametrize("mode", sorted(MODES))
def test_next_exec_enters_at_the_updated_start(mode):
    """Invariant 12: the peer's return address becomes its entry point."""
    code = asm(out_e9("E"), CALL_BACK, out_e9("R"), CALL_BACK)
    code += jmp_short(len(code), 9)                         # back to the "R" part
    m = machine(mode)
    img = load(m, code)
    outputs, starts = [], []
    for _ in range(4):
        assert reboot(m) == 0
        outputs.append(m.last_result.debugcon)
        starts.append(img.start - DEST)
    assert outputs == [b"E", b"R", b"R", b"R"] and m.debugcon == b"ERRR"
    assert starts == [9, 18, 18, 18]


def test_plain_ret_reads_the_word_after_the_swap_page():
    """SPEC 7.9: after ``ret`` ESP is swap + 4096; the routine reads the next page's first word.

    kjcore's allocator hands out runs of frames, so that page is the image's first indirection
    page here, whose first word is ``DEST | IND_DESTINATION``: the "re-entry point" a plain
    ``ret`` leaves is that word (faithful 2.6.27 behaviour).
    """
    m = machine()
    img = load(m, out_e9("x") + RET)
    after = relocate.return_point_after_ret(img.swap_page)
    assert after == img.swap_page + 4096
    assert after == int(img.indirection_pages()[0])
    oracle = JumpOracle(m).before()
    r = m.kernel_kexec()
    assert r.start == img.start == DEST | kjcore.IND_DESTINATION == oracle.expected_ret_start()
    assert r.debugcon == b"x"
    oracle.check()


def test_plain_ret_reads_the_image_when_the_next_page_is_a_destination():
    """If the page after the swap page is one of the image's destinations, the word read at
    re-entry is the image's (the swap back has not happened yet)."""
    probe = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, alloc_seed=3)
    swap = load(probe, RET).swap_page
    target = swap + 4096
    m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, alloc_seed=3)
    code = asm(0xC7, 0x05, d32(target + 0x40), d32(0x0BADC0DE), RET)   # movl $v, target+0x40
    m.kexec_load(DEST, [Segment(code, DEST, 4096), Segment(d32(0x12345678), target, 4096)], P)
    if m.kexec_image.swap_page != swap:
        pytest.skip("the allocator chose another swap page for this layout")
    oracle = JumpOracle(m).before()
    r = m.kernel_kexec()
    assert r.start == 0x12345678 == oracle.expected_ret_start()
    left = bytearray(oracle.image_before(target))
    left[0x40:0x44] = d32(0x0BADC0DE)
    oracle.check({target: bytes(left)})


def test_trivial_payload_changes_nothing_but_the_bookkeeping():
    """Invariant 10 at machine level: swap out, ret, swap back -- sources hold the image."""
    m = machine()
    m.kexec_load(DEST, [Segment(bytes(range(256)) * 16 + RET, DEST + 0x3000, 0x2000),
                        Segment(RET, DEST, 0x1000), Segment(b"", DEST + 0x8000, 0)], P)
    oracle = JumpOracle(m).before()
    m.kernel_kexec()
    oracle.check()


# ------------------------------------------------------------------------ processor state (8)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_processor_state_is_restored_whatever_the_payload_did(mode, engine, monkeypatch):
    m = machine(mode, engine)
    cpu = m.cpu
    # A first kernel with distinctive values in everything SPEC 8 lists.
    cpu.ebx, cpu.esi, cpu.edi, cpu.ebp = 0xB0B0B0B0, 0x51515151, 0xD1D1D1D1, 0xC000FF00
    cpu.cr2 = 0xC0DE0000
    cpu.eflags = 0x2 | 0x1 | 0x80 | 0x800          # CF, SF, OF; IF off (kernel_kexec)
    cpu.ldtr.selector = 0x0
    before = cpu.get_state()
    # The payload scrambles every register, ESP included, sets DF and arbitrary flags.
    scramble = asm(*(asm(0xB8 + r, d32(0x11111111 * (r + 1))) for r in (0, 1, 2, 3, 5, 6, 7)),
                   0x68, d32(0xCD7), 0x9D,                 # push $flags; popf (DF set)
                   0x8D, 0xA4, 0x24, d32(-0x200 & 0xFFFFFFFF),   # lea -0x200(%esp), %esp
                   0xFD)                                   # std
    code = asm(0x8B, 0x04, 0x24,                           # mov (%esp), %eax
               0xA3, d32(DEST + 0x800), scramble,          # keep it, scramble
               0xA1, d32(DEST + 0x800), 0xFF, 0xD0)        # mov kept,%eax; call *%eax
    img = load(m, code)
    at_return = {}
    real = kjcore.machine.restore_processor_state

    def spy(c, saved):
        at_return.update(state=c.get_state())
        real(c, saved)
    monkeypatch.setattr(kjcore.machine, "restore_processor_state", spy)
    r = m.kernel_kexec()
    after = cpu.get_state()
    bad = [f for f in PRESERVED_STATE if after[f] != before[f]]
    assert not bad, bad
    # What the routine itself hands back, before the first kernel's restore_processor_state:
    # callee-saved registers, ESP and EFLAGS as at the call, EAX = the new start.
    regs = relocate.prepare_call(m.ram.copy(), m.first_kernel, img.head, DEST,
                                 img.control_page, img.swap_page, m.pae, True, m.fix_pae_return)
    got = at_return["state"]
    assert got["esp"] == regs["esp"] + 4                   # the return address was popped
    assert got["eip"] == m.first_kernel.return_address
    assert (got["ebx"], got["esi"], got["edi"], got["ebp"]) == (0, 0, 0, 0)
    assert got["eflags"] == regs["eflags"] and not got["eflags"] & 0x400
    assert (got["gdtr_limit"], got["idtr_limit"]) == (0, 0)     # as machine_kexec set them
    assert got["cs_sel"] == regs["cs_selector"] and got["ss_sel"] == regs["ss_selector"]
    assert got["cr0"] == before["cr0"] and got["cr3"] == before["cr3"]
    assert got["cr4"] == before["cr4"] and got["efer"] == before["efer"]
    assert got["eax"] == r.start == DEST + len(code)


# ----------------------------------------------------------------------------- engines (13)
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("seed", range(4))
def test_engines_leave_identical_ram_and_cpu_state(mode, seed):
    exit = ("call", "ret", "mixed", "call")[seed]
    ms = [machine(mode, engine) for engine in ENGINES]
    p = random_payload(np.random.default_rng(100 + seed), DEST, 4, n_ops=60, exit=exit)
    for m in ms:
        m.kexec_load(p.entry, p.segments(), P)
    assert np.array_equal(ms[0].ram, ms[1].ram)
    for _ in range(2):
        results = [m.kernel_kexec() for m in ms]
        assert results[0].start == results[1].start
        assert results[0].debugcon == results[1].debugcon
        assert results[0].pages_swapped == results[1].pages_swapped
        assert np.array_equal(ms[0].ram, ms[1].ram)
        assert state_diff(ms[0].cpu.get_state(), ms[1].cpu.get_state()) == []
        if p.returns_with_ret(p.counter(ms[0].ram[ms[0].kexec_image.source_pages()[0]:])):
            break


def test_native_engine_swaps_outside_the_cpu_and_counts_the_same_steps(monkeypatch):
    """The native engine really does the swap passes outside the CPU, and charges the budget
    what the routine's passes cost on the CPU (kjcore.relocate.swap_pages_steps)."""
    from kjcore import machine_kexec
    calls = []
    monkeypatch.setattr(machine_kexec, "swap_pass",
                        lambda *a: calls.append(a) or kjcore.swap.swap_pass(*a))
    steps = []
    for engine in ENGINES:
        m = machine(engine=engine)
        load(m, RET, pages=8)
        steps.append(m.kernel_kexec().steps)
    assert len(calls) == 2 and steps[0] == steps[1]


# ------------------------------------------------------------------------- PAE (SPEC 7.10)
@pytest.mark.parametrize("nx", [False, True])
@pytest.mark.parametrize("engine", ENGINES)
def test_pae_faithful_routine_triple_faults_on_the_way_back(nx, engine):
    m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, pae=True, nx=nx, engine=engine)
    img = load(m, out_e9("p") + RET)
    oracle = JumpOracle(m).before()
    with pytest.raises(TripleFault) as e:
        m.kernel_kexec()
    tf = e.value
    msg = str(tf)
    assert "PAE" in msg and "CR4" in msg and "fix_pae_return" in msg and "7.10" in msg
    assert tf.vector == 14                                 # the fetch page-faults
    assert tf.eip == img.control_page + relocate.PAGING_ON_RETURN_OFFSET
    assert tf.state["cr0"] & 0x80000000 and tf.state["cr4"] == 0
    assert tf.state["cr3"] == m.first_kernel.kexec_pgd
    assert m.state == "lost" and m.debugcon == b"p"
    # The swap back happened before paging was turned on: RAM is the first kernel's again.
    mask = preserved_mask(m, img, stack_top=oracle.call_esp - PAGE_OFFSET)    # + the pushes
    assert np.array_equal(m.ram[mask], oracle.ram_before[mask])
    with pytest.raises(RuntimeError, match="restore"):
        m.kernel_kexec()


@pytest.mark.parametrize("nx", [False, True])
def test_pae_fix_round_trips_repeatedly(nx):
    m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, pae=True, nx=nx,
                       fix_pae_return=True)
    code = asm(0xFF, 0x05, d32(DEST + 0x800), out_e9("+"), CALL_BACK)     # incl; out; call
    code += jmp_short(len(code), 0)
    img = load(m, code)
    oracle = JumpOracle(m)
    for n in range(1, 6):
        oracle.before()
        reboot(m)
        page = bytearray(oracle.image_before(DEST))
        page[0x800:0x804] = d32(n)
        oracle.check({DEST: bytes(page)})
    assert m.debugcon == b"+" * 5 and img.start == DEST + 15


# ---------------------------------------------------------------- non-preserve path (7.7)
@pytest.mark.parametrize("mode", ["2level", "pae", "pae-nx"])
def test_plain_kexec_enters_with_zeroed_registers_and_paging_off(mode):
    m = machine(mode, fix_pae_return=False) if mode != "2level" else machine()
    m.devices = [RecordingDevice("disk")]
    img = load(m, out_e9("N") + HLT, flags=0)
    r = m.kernel_kexec()
    assert isinstance(r, ExecResult) and r.status == Status.HLT
    assert m.state == "image" and m.debugcon == b"N" and r.debugcon == b"N"
    cpu = m.cpu
    assert r.eip == cpu.eip == DEST + 5                    # after the hlt
    assert (cpu.ebx, cpu.ecx, cpu.edx, cpu.esi, cpu.edi, cpu.ebp) == (0,) * 6
    assert cpu.eax == ord("N")                             # the payload's own mov
    assert cpu.esp == img.control_page + 4096              # top of the control page
    assert not cpu.cr0 & 0x80000000 and cpu.cr0 & 1 and cpu.cr3 == 0
    assert not cpu.eflags & 0x200
    assert cpu.gdtr.limit == 0 and cpu.idtr.limit == 0
    assert bytes(m.ram[DEST:DEST + 5]) == out_e9("N") + HLT   # the image is in place
    assert m.pm_log == ["reboot notifiers", "device shutdown", "machine shutdown"]
    assert m.devices[0].calls == ["shutdown()"]
    with pytest.raises(RuntimeError):
        m.kernel_kexec()


def test_plain_kexec_registers_at_entry():
    """A payload that stores every GPR at entry: all zero (EAX through EBP)."""
    store = asm(*(asm(0x89, 0x05 | r << 3, d32(DEST + 0x800 + 4 * r)) for r in range(8)))
    m = machine()
    img = load(m, store + HLT, flags=0)
    m.kernel_kexec()
    regs = struct.unpack("<8I", bytes(m.ram[DEST + 0x800:DEST + 0x820]))
    assert regs[:4] == (0, 0, 0, 0) and regs[5:] == (0, 0, 0)
    assert regs[4] == img.control_page + 4096


def test_plain_kexec_step_budget():
    m = machine()
    load(m, b"\xeb\xfe", flags=0)                          # jmp .
    r = m.kernel_kexec(max_steps=5000)
    assert r.status == Status.STEP_LIMIT and r.steps == 5000 and m.state == "image"


# ------------------------------------------------------------ faulting payloads (SPEC 7.10)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_faulting_payload_triple_faults_and_restore_brings_the_machine_back(mode, engine):
    m = machine(mode, engine)
    good = out_e9("g") + CALL_BACK + jmp_short(9, 0)
    load(m, good)
    snap = m.snapshot()
    load(m, out_e9("u") + UD2)
    with pytest.raises(TripleFault) as e:
        m.kernel_kexec()
    tf = e.value
    assert tf.vector == 6 and tf.eip == DEST + 4 and tf.state["eip"] == DEST + 4
    assert "triple fault" in str(tf) and tf.state["cr0"] & 0x80000000 == 0
    assert m.state == "lost" and m.debugcon == b"u"
    # inspectable: the image is still in its destination, registers are readable
    assert bytes(m.ram[DEST:DEST + 6]) == out_e9("u") + UD2
    assert m.cpu.cr3 == 0 and m.cpu.idtr.limit == 0
    with pytest.raises(RuntimeError):
        reboot(m)
    m.restore(snap)
    assert m.state == "kernel" and np.array_equal(m.ram, snap.ram)
    oracle = JumpOracle(m).before()
    assert reboot(m) == 0 and m.last_result.debugcon == b"g"
    oracle.check()


def test_payload_writing_outside_its_pages_is_only_caught_by_the_invariant():
    """Writing the first kernel's memory is not a fault: it is lost RAM (hardware does it)."""
    m = machine()
    victim = 0x30000
    load(m, asm(0xC7, 0x05, d32(victim), d32(0xDEADBEEF), RET))
    oracle = JumpOracle(m).before()
    m.kernel_kexec()
    with pytest.raises(AssertionError, match="invariant 8"):
        oracle.check()


def test_halting_preserve_payload_and_step_limit():
    m = machine()
    load(m, HLT)
    snap = m.snapshot()
    with pytest.raises(CPUFault, match="halted"):
        m.kernel_kexec()
    assert m.state == "image"
    m.restore(snap)
    load(m, b"\xeb\xfe")
    with pytest.raises(StepLimit):
        m.kernel_kexec(max_steps=10_000)


# ------------------------------------------------------- engines agree on failures too (13)
def _failed_jump(engine, code, segments=(), **kw):
    m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, engine=engine, **kw)
    m.kexec_load(DEST, [Segment(code, DEST, 0x2000), *segments], P)
    with pytest.raises(CPUFault) as e:
        m.kernel_kexec()
    return m, e.value


@pytest.mark.parametrize("code, kw", [
    (RET, dict(pae=True)),                                  # the faithful PAE return
    (UD2, dict()),
    (UD2, dict(pae=True, nx=True, fix_pae_return=True)),
])
def test_engines_agree_after_a_triple_fault(code, kw):
    (a, ea), (b, eb) = (_failed_jump(engine, code, **kw) for engine in ENGINES)
    assert type(ea) is type(eb) is TripleFault and str(ea) == str(eb)
    assert np.array_equal(a.ram, b.ram)
    assert state_diff(a.cpu.get_state(), b.cpu.get_state()) == []
    assert state_diff(ea.state, eb.state) == []


def test_engines_agree_on_a_destination_past_ram():
    """Destinations need not be RAM (SPEC 4.1): reads float high, writes are dropped."""
    past = [Segment(b"abc", 2 * RAM, 0x1000)]
    ms = []
    for engine in ENGINES:
        m = kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, engine=engine)
        m.kexec_load(DEST, [Segment(RET, DEST, 0x1000), *past], P)
        src = int(m.kexec_image.source_pages()[1])
        m.kernel_kexec()
        assert bytes(m.ram[src:src + 0x1000]) == b"\xff" * 0x1000    # swapped with the bus
        ms.append(m)
    assert np.array_equal(ms[0].ram, ms[1].ram)
    assert state_diff(ms[0].cpu.get_state(), ms[1].cpu.get_state()) == []


def test_engines_agree_on_a_strict_bus_violation():
    # The native engine leaves a pass that would touch memory past RAM to the CPU, so both
    # stop at the same faulting REP MOVS with the same partial copies.
    past = [Segment(b"abc", 2 * RAM, 0x1000)]
    (a, ea), (b, eb) = (_failed_jump(engine, RET, past, strict_bus=True) for engine in ENGINES)
    assert a.state == b.state == "lost"
    assert np.array_equal(a.ram, b.ram)
    assert state_diff(a.cpu.get_state(), b.cpu.get_state()) == []
    assert str(ea) == str(eb)
