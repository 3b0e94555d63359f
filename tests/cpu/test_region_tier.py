"""The translation tier (regions with memory operands) forced on for every loop head.

Every random region program (region_gen.py) runs three ways from the same start state:
kjcore with the tier off, kjcore with ``jit_threshold = 1`` (a loop head compiled the
second time a branch goes back to it), and Unicorn.  The kjcore runs must agree on all
(status, steps, the state record, the trace ring, all of RAM); Unicorn on the general
registers, EIP, the arithmetic flags and memory.  World variants (a data page not present,
read-only under CR0.WP, supervisor-only at CPL 3, beyond RAM, in the ROM range, DS with a
base or a short limit) make the tier's side exits and refusals happen partway through the
loop; step budgets cut runs anywhere; code changed by the guest and by Python must never
run stale.  The planted-bug tests break the code generator on purpose (a wrong flag, a
missing TLB check) and show these suites report it.

The world: 1 MiB of RAM identity-mapped by 4 KiB pages (paging on, ring 0, flat segments),
``cpu_world.World``'s GDT, TSS and IDT (every handler a HLT at ``HANDLERS + 16 * vector``),
the stack below ``KSTACK``, the program's data at ``DATA``.
"""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from cpu_world import HANDLERS, KSTACK, World
from region_gen import (
    ARITH,
    CODE,
    DATA,
    PATCHES,
    loop_through_page,
    patching_loop,
    program_from,
    random_program,
)

from kjcore.cpu import Status, loopir, loopjit, regionrt
from kjcore.cpu import state as S

CASES = int(os.environ.get("KJCORE_REGION_CASES", "150"))
#: the programs of the default run (the variants and budget tests reuse the first ones, and
#: with them the regions compiled for them: compiling dominates the run time)
SEED = 12
RAM = 1 << 20
PD, PT = 0x20000, 0x21000
P, RW, US = 1, 2, 4
CR0_PG_PE_ET, CR0_WP = 0x80000011, 0x10000
UC_REGS = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")
PF_HANDLER_HLT = HANDLERS + 16 * 14 + 1             # EIP after the #PF handler's HLT


# ---------------------------------------------------------------- the three runs
def world(prog, variant=None, page=0, late=False):
    """A CPU in the world above with ``prog`` loaded.  ``variant`` changes data page
    ``page`` (0 = the first page of the data area) or the data segment: see VARIANTS;
    ``late``: not the PTE bit it takes away (:func:`take_away` does, later)."""
    w = World(RAM)
    pte = (np.arange(RAM >> 12, dtype=np.uint32) << 12) | (P | RW)
    w.put(PD, (PT | P | RW | US).to_bytes(4, "little"))
    w.put(DATA, prog.data)
    w.put(prog.at, prog.code)                       # (it may be in the data area)
    cpu = w.cpu
    for i, v in enumerate(prog.regs):
        cpu._s[i] = v
    cpu.eflags, cpu.eip, cpu.cr3, cpu.cr0 = prog.eflags, prog.at, PD, CR0_PG_PE_ET
    n = (DATA >> 12) + page
    if variant == "readonly":
        cpu.cr0 |= CR0_WP
    elif variant == "user":
        pte |= US
        w.to_ring3()                                # (the HLT at the end raises #GP)
    elif variant in ("bus", "strict_bus"):
        pte[n] = (RAM + 0x100000 + (page << 12)) | P | RW
        cpu.strict_bus = variant == "strict_bus"
    elif variant == "rom":
        cpu.rom = (n << 12, (n + 1) << 12)
    elif variant == "ds_base":
        cpu.load_segment("ds", 0x10, 0x1000, 0xFFFFFFFF, 0x93, 0xC)
    elif variant == "ds_limit":
        cpu.load_segment("ds", 0x10, 0, DATA + (page << 12) + 0x7FF, 0x93, 0x4)
    if variant in PTE_BITS and not late:
        pte[n] &= ~np.uint32(PTE_BITS[variant])
    w.put(PT, pte.view(np.uint8))
    return cpu


VARIANTS = ("absent", "readonly", "user", "bus", "strict_bus", "rom", "ds_base", "ds_limit")
#: the PTE bit a variant takes away from its page
PTE_BITS = {"absent": P, "readonly": RW, "user": US}


def take_away(cpu, variant, page):
    """Clear the PTE bit of ``variant`` for data page ``page`` now, and flush the TLB (as
    a kernel does after unmapping a page)."""
    a = PT + 4 * ((DATA >> 12) + page)
    v = int.from_bytes(cpu.ram[a:a + 4].tobytes(), "little") & ~PTE_BITS[variant]
    cpu.ram[a:a + 4] = np.frombuffer(v.to_bytes(4, "little"), np.uint8)
    cpu.flush_tlb()


class Run:
    """What one kjcore run left: status, steps, state record, trace ring, RAM, regions."""

    def __init__(self, cpu, status):
        self.status, self.steps = status, cpu.steps
        self.state = cpu.get_state()
        self.trace = cpu.trace(S.TRACE_N)
        self.ram = cpu.ram.copy()
        self.compiled = loopjit.compiled(cpu._s)


def run_kjcore(prog, jit, budgets=(10 ** 6,), variant=None, page=0, warm=False, late=None):
    """``prog`` with the tier off (``jit`` False) or forced on for every loop head
    (threshold 1), in runs of ``budgets`` steps one after the other; ``warm``: after a
    whole run and a return to the start state, RAM included (its regions compiled);
    ``late``: the variant's PTE bit taken away after that many steps."""
    cpu = world(prog, variant, page, late is not None)
    cpu.jit = jit
    cpu.jit_threshold = 1
    if warm:
        start, image = cpu.get_state(), cpu.ram.copy()
        cpu.run(10 ** 6)
        cpu.set_state(start)
        cpu.ram[:] = image
    if late is not None:
        cpu.run(late)
        take_away(cpu, variant, page)
    st = None
    for b in budgets:
        st = cpu.run(b)
    run = Run(cpu, st)
    run.steps = int(cpu.tsc)                        # all runs' steps (cpu.steps: the last)
    return run


def compare_runs(a, b):
    """Differences between two kjcore runs (empty: they agree on everything)."""
    diffs = [f"{k} {x} vs {y}" for k, x, y in (("status", a.status, b.status),
                                               ("steps", a.steps, b.steps)) if x != y]
    for name in a.state.dtype.names:
        if a.state[name] != b.state[name]:
            diffs.append(f"{name} {int(a.state[name]):#x} vs {int(b.state[name]):#x}")
    if not np.array_equal(a.trace, b.trace):
        diffs.append("trace ring differs")
    where = np.nonzero(a.ram != b.ram)[0]
    if len(where):
        diffs.append(f"RAM differs at {[hex(x) for x in where[:8]]}")
    return diffs


def run_unicorn(prog, count, variant=None, page=0):
    """Unicorn from the same start state, stopped in front of the HLT, after ``count``
    instructions or at an exception: (Uc, its vector or None)."""
    from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc
    from unicorn import x86_const as X

    cpu = world(prog, variant, page)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, RAM)
    uc.mem_write(0, cpu.ram.tobytes())
    uc.reg_write(X.UC_X86_REG_CR3, PD)
    uc.reg_write(X.UC_X86_REG_CR0, cpu.cr0)
    for r, v in zip(UC_REGS, prog.regs):
        uc.reg_write(getattr(X, f"UC_X86_REG_{r}"), v)
    uc.reg_write(X.UC_X86_REG_EFLAGS, prog.eflags)
    vector = []

    def intr(uc, intno, user):
        vector.append(intno)
        uc.emu_stop()
    uc.hook_add(UC_HOOK_INTR, intr)
    uc.emu_start(prog.at, prog.hlt, count=count)
    return uc, (vector[0] if vector else None)


def compare_unicorn(prog, run, uc, vector):
    """Differences between a kjcore run and Unicorn: general registers, EIP, the
    arithmetic flags, the data area, the code pages and the stack page.  A run that ended
    in the #PF handler is compared with Unicorn stopped at the fault: CR2, the registers
    (ESP before the push), the EIP kjcore pushed; not EFLAGS, which Unicorn does not bring
    up to date when an instruction faults (unicorn-engine/unicorn#2373)."""
    from unicorn import x86_const as X

    s, ram, diffs = run.state, run.ram, []
    esp, eip = int(s["esp"]), int(s["eip"])
    faulted = run.status == Status.HLT and eip == PF_HANDLER_HLT
    if faulted:
        frame = np.frombuffer(ram[esp:esp + 16].tobytes(), "<u4")   # error code, EIP, CS, EFLAGS
        esp, eip = esp + 16, int(frame[1])
        if vector != 14 or uc.reg_read(X.UC_X86_REG_CR2) != int(s["cr2"]):
            diffs.append(f"#PF: unicorn vector {vector} CR2 {uc.reg_read(X.UC_X86_REG_CR2):#x}"
                         f", kjcore CR2 {int(s['cr2']):#x}")
    elif run.status == Status.HLT:
        eip -= 1                                    # Unicorn stops in front of the HLT
    for r in UC_REGS:
        a = esp if r == "ESP" else int(s[r.lower()])
        b = uc.reg_read(getattr(X, f"UC_X86_REG_{r}"))
        if a != b:
            diffs.append(f"{r} kjcore={a:#x} unicorn={b:#x}")
    if eip != uc.reg_read(X.UC_X86_REG_EIP):
        diffs.append(f"EIP kjcore={eip:#x} unicorn={uc.reg_read(X.UC_X86_REG_EIP):#x}")
    a, b = int(s["eflags"]) & ARITH, uc.reg_read(X.UC_X86_REG_EFLAGS) & ARITH
    if a != b and not faulted:
        diffs.append(f"EFLAGS kjcore={a:#x} unicorn={b:#x} (differ in {a ^ b:#x})")
    for lo, hi in ((DATA, DATA + prog.data_size), (CODE, CODE + 0x2000),
                   (KSTACK - 0x1000, KSTACK - (16 if faulted else 0))):
        um = np.frombuffer(bytes(uc.mem_read(lo, hi - lo)), np.uint8)
        where = np.nonzero(um != ram[lo:hi])[0]
        if len(where):
            diffs.append(f"memory differs at {[hex(lo + x) for x in where[:8]]}")
    return diffs


def three_ways(prog, unicorn=True, variant=None, page=0, late=None, budget=10 ** 6):
    """Run ``prog`` with the tier off, forced on, and on Unicorn: (differences, tier run,
    interpreter run).  Unicorn is compared with both kjcore runs: an independent check of
    the tier as well.  ``late``: see :func:`run_kjcore` (Unicorn is not run then)."""
    off = run_kjcore(prog, False, (budget,), variant, page, late=late)
    on = run_kjcore(prog, True, (budget,), variant, page, late=late)
    diffs = compare_runs(off, on)
    if unicorn:
        uc, vector = run_unicorn(prog, off.steps, variant, page)
        for name, run in (("interpreter", off), ("tier", on)):
            diffs += [f"unicorn vs {name}: {d}" for d in compare_unicorn(prog, run, uc, vector)]
    return diffs, on, off


def suite(seed, count, variant=None, unicorn=True, stop_at_first=False, late=False):
    """Random programs ``count`` from ``seed`` three ways: (failures as (program,
    differences), programs whose loop ran compiled, programs that ended in a fault (#PF,
    #GP or #SS before the HLT) or a bus error).
    ``late``: the variant's page is taken away after a random number (1-300) of steps."""
    rng, when = random.Random(seed), random.Random(seed + 1)
    fails, compiled, faulted = [], 0, 0
    for _ in range(count):
        prog = random_program(rng)
        page = rng.randrange(prog.data_size >> 12)
        at = when.randrange(1, 300) if late else None
        diffs, on, off = three_ways(prog, unicorn and not late, variant, page, at)
        compiled += bool(on.compiled) and prog.mem_insns > 0
        vec, eip = int(off.state["fault_vec"]), int(off.state["fault_eip"])
        faulted += off.status == Status.BUS_ERROR or vec in (12, 13, 14) and eip != prog.hlt
        if diffs:
            fails.append((prog, diffs))
            if stop_at_first:
                break
    return fails, compiled, faulted


# ---------------------------------------------------------------- random programs
def test_random_regions_three_ways():
    """Tier off, tier forced on and Unicorn agree on random region programs, and most of
    them really ran a compiled region with memory operands."""
    pytest.importorskip("unicorn")
    fails, compiled, _ = suite(SEED, CASES)
    assert not fails, fails[:3]
    assert compiled > CASES * 0.6


@pytest.mark.slow
def test_random_regions_long():
    """``pytest -m slow -k regions_long``: 2000 other programs, and 600 with each variant,
    early and late (scaled by ``KJCORE_REGION_CASES`` / 150)."""
    pytest.importorskip("unicorn")
    fails, compiled, _ = suite(SEED + 1, 2000 * CASES // 150)
    assert not fails, fails[:3]
    for v in VARIANTS:
        fails, _, _ = suite(SEED + 2, 600 * CASES // 150, v, unicorn=v == "absent")
        assert not fails, (v, fails[:3])
    for v in PTE_BITS:
        fails, _, _ = suite(SEED + 2, 600 * CASES // 150, v, late=True)
        assert not fails, (v, "late", fails[:3])


@pytest.mark.parametrize("variant", VARIANTS)
def test_random_regions_in_a_changed_world(variant):
    """A data page not present, read-only (CR0.WP), supervisor-only at CPL 3, beyond RAM
    (with and without ``strict_bus``) or in the ROM range, or DS with a base or a short
    limit: the tier's side exits and refusals leave every fault, dropped write and bus
    error to the interpreter, with the same state and step count (and the #PF as Unicorn
    raises it, for a page not present: ``shl word [m], 0`` on a read-only page is a #PF on
    Unicorn and does not access memory on kjcore)."""
    unicorn = variant == "absent"
    if unicorn:
        pytest.importorskip("unicorn")
    fails, compiled, faulted = suite(SEED, CASES // 3, variant, unicorn)
    assert not fails, fails[:3]
    if variant not in ("bus", "rom", "ds_base"):
        assert faulted > CASES // 30                # the world change mattered


@pytest.mark.parametrize("variant", sorted(PTE_BITS))
def test_random_regions_lose_a_page_partway(variant):
    """The page's PTE loses its present, writable or user bit (and the TLB is flushed)
    after 1-300 steps, mostly while a compiled region runs: the region leaves each access
    to the page to the interpreter, which raises the #PF there."""
    fails, compiled, faulted = suite(SEED, CASES // 3, variant, late=True)
    assert not fails, fails[:3]
    assert faulted > CASES // 15


def test_random_regions_rewrite_their_code():
    """Programs that live in their data area, many of their memory operands on their own
    loop: stores into a region's own bytes leave it by a side exit, and the rewritten code
    runs as the interpreter runs it, whatever it does (20 000 steps at most)."""
    rng = random.Random(SEED)
    rewritten = compiled = 0
    for _ in range(CASES // 4):
        prog = random_program(rng, DATA + rng.randrange(0xC00), rewrite=True)
        diffs, on, off = three_ways(prog, False, budget=20_000)
        assert not diffs, (prog, diffs)
        rewritten += bytes(off.ram[prog.at:prog.at + len(prog.code)]) != prog.code
        compiled += bool(on.compiled)
    assert rewritten > CASES // 12 and compiled > CASES // 12


@pytest.mark.parametrize("store", [False, True])
@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("variant", ["absent", "readonly", "user"])
def test_precise_fault_partway(store, width, variant):
    """The loop reaches a page it may not access after 32 iterations: with the tier and
    without, the same #PF (CR2, error code, the EIP and EFLAGS pushed), registers and step
    count, with the region compiled and run for the iterations before (and for a page not
    present, the #PF, registers and memory Unicorn has: a page-crossing store writes
    nothing)."""
    prog = loop_through_page(store, width)
    if variant == "absent":
        pytest.importorskip("unicorn")
    diffs, on, off = three_ways(prog, variant == "absent", variant=variant, page=1)
    assert not diffs, diffs
    if variant == "readonly" and not store:
        assert int(off.state["eip"]) == prog.hlt + 1            # reads are allowed
        return
    s = off.state
    assert int(s["eip"]) == PF_HANDLER_HLT and DATA + 0x1000 <= int(s["cr2"]) <= DATA + 0x1002
    assert off.steps > 31 * 6 and on.compiled


@pytest.mark.parametrize("variant", ["bus", "strict_bus", "rom"])
def test_beyond_ram_and_rom_partway(variant):
    """Loads from beyond RAM read all ones, stores there and into ROM are dropped,
    ``strict_bus`` stops the run with BUS_ERROR: the same with the tier."""
    for store in (False, True):
        diffs, on, off = three_ways(loop_through_page(store), unicorn=False, variant=variant,
                                    page=1)
        assert not diffs, diffs
        assert (off.status == Status.BUS_ERROR) == (variant == "strict_bus")


# ---------------------------------------------------------------- step budgets
def _short_program():
    """The first random program (seed 7) with memory operands, an inner loop and 100-400
    steps."""
    rng = random.Random(7)
    while True:
        prog = random_program(rng)
        if prog.mem_insns >= 4 and b"\x75" in prog.code:
            steps = run_kjcore(prog, False).steps
            if 100 <= steps <= 400:
                return prog, steps


@pytest.mark.parametrize("warm", [True, False])
def test_every_step_budget(warm):
    """A run cut after every possible number of steps, and resumed after the cut: the same
    state with the tier forced on as without (a compiled region stops exactly at the
    budget, inside a block too); ``warm``: with the regions compiled before the run."""
    prog, steps = _short_program()
    for b in range(1, steps + 1):
        for budgets in ((b,), (b, steps)):
            d = compare_runs(run_kjcore(prog, False, budgets, warm=warm),
                             run_kjcore(prog, True, budgets, warm=warm))
            assert not d, (b, budgets, prog, d)


def test_random_step_budgets():
    """Random programs (some faulting partway) cut at random budgets, in one to four runs."""
    rng, choices = random.Random(SEED), random.Random(77)
    for _ in range(CASES // 3):
        prog = random_program(rng)
        page = rng.randrange(prog.data_size >> 12)
        variant = choices.choice((None, None, "absent"))
        full = run_kjcore(prog, False, variant=variant, page=page).steps
        budgets = [choices.randrange(1, full + 2) for _ in range(choices.randrange(1, 5))]
        d = compare_runs(run_kjcore(prog, False, budgets, variant, page),
                         run_kjcore(prog, True, budgets, variant, page))
        assert not d, (budgets, variant, page, prog, d)


# ---------------------------------------------------------------- code that changes
@pytest.mark.parametrize("later", [True, False])
@pytest.mark.parametrize("patch", sorted(PATCHES))
def test_region_patches_its_own_code(patch, later):
    """A store into the region's own bytes leaves the compiled code for the interpreter
    (a side exit), and the next iteration runs the new bytes, as the interpreter does."""
    prog = patching_loop(PATCHES[patch], later)
    diffs, on, off = three_ways(prog, unicorn=False)
    assert not diffs, diffs
    assert off.status == Status.HLT and int(off.state["eip"]) == prog.hlt + 1
    assert off.steps == 2 + 40 * 4 + 1
    if patch == "mov imm":                          # the same bytes after the first store
        assert on.compiled


def test_code_changed_from_python_between_runs():
    """Code rewritten from Python (``cpu.ram``) while a region of it is compiled, between
    two runs and in the middle of a run: never run stale."""
    prog = loop_through_page(False, 4, n=200)
    add = prog.code.index(b"\x01\xd0")                          # add eax, edx -> sub / xor
    out = []
    for jit in (False, True):
        cpu = world(prog)
        cpu.jit, cpu.jit_threshold = jit, 1
        cpu.run(500)
        for op in (0x29, 0x31, 0x01):
            cpu.ram[prog.at + add] = op
            cpu.run(300)
        cpu.eip, cpu.ecx, cpu.esi = prog.at, 0, 0                 # from the start, changed
        cpu.ram[prog.at + add] = 0x21
        cpu.run(10 ** 6)
        out.append(Run(cpu, None))
    assert not compare_runs(*out)
    assert out[1].compiled


def test_compile_request_on_the_last_step_of_a_budget():
    """The third trip round the loop is the 7th step: a run of 7 steps stops there."""
    cpu = world(program_from(bytes.fromhex("b805000000" "83c301" "48" "75fa" "f4")))
    cpu.jit_threshold = 1
    assert cpu.run(7) == Status.STEP_LIMIT and cpu.eip == CODE + 5


# ---------------------------------------------------------------- planted bugs
def test_planted_wrong_flag_is_caught(monkeypatch):
    """A code generator that inverts CF after SUB (CMP, NEG) in compiled code only: the
    random suite reports it, against the interpreter and against Unicorn."""
    pytest.importorskip("unicorn")
    alu = loopir.alu

    def sub_with_cf_inverted(b, fl, aop, a, x):
        r = alu(b, fl, aop, a, x)
        if aop in (5, 7):
            fl.cf = b.not_(fl.cf)
        return r
    monkeypatch.setattr(loopir, "alu", sub_with_cf_inverted)
    monkeypatch.setattr(loopjit, "_compiler", None)       # compile afresh, with the bug
    fails, _, _ = suite(SEED, CASES, stop_at_first=True)
    assert fails
    diffs = fails[0][1]
    assert any(d.startswith("unicorn vs tier") for d in diffs), diffs
    assert not any(d.startswith("unicorn vs interpreter") for d in diffs), diffs


def test_planted_missing_tlb_check_is_caught(monkeypatch):
    """A code generator whose memory accesses skip the TLB lookup and its permission check
    (the shared walk, ``regionrt``, built as if paging were off; the world is
    identity-mapped, so only faults are missed): the fault suites report it."""
    monkeypatch.setattr(regionrt, "CR0_PG", 0)
    monkeypatch.setattr(loopjit, "_compiler", None)       # compile afresh, with the bug
    prog = loop_through_page(True, 1)
    diffs, on, off = three_ways(prog, unicorn=False, variant="absent", page=1)
    assert int(off.state["eip"]) == PF_HANDLER_HLT and int(on.state["eip"]) == prog.hlt + 1
    assert diffs
    for variant in sorted(PTE_BITS):
        fails, _, _ = suite(SEED, CASES // 3, variant, stop_at_first=True, late=True)
        assert fails, variant


# ---------------------------------------------------------------- tier bugs found
@pytest.mark.parametrize("code", [
    # seed 13, program 760, reduced: until the step budget moved onto the edges
    "66850d9e240100" "0fbe847764f8ffff" "7e03" "49" "75fd" "660fbe0595000100"
    "8a87f1fcffff" "75dc" "f4",
    # seed 1, program 683 (from its loop head): until sub-register liveness was tracked
    "ff847be1dfffffb9060000000fafb3f805000083e90177f40f47f0892d6f2501007d0a0fb6edf79c3bda"
    "04000066f7147d57030100f7d5ffc58ae38a04fdd124010033b47b0cf2ffff66ffc20fbe84bb3bdbffff"
    "83c3084f75a6" "f4"])
def test_regions_that_aborted_llvm(code):
    """Long random runs: LLVM aborted the process compiling these regions (RegisterCoalescer:
    "Instruction is reading nonexistent value").  Compiled in a child process."""
    child = ("from kjcore.cpu import loopjit\n"
             f"r = loopjit.decode_region(bytes.fromhex('{code}') + bytes(64))\n"
             "assert r is not None and r.memory\n"
             "loopjit._Compiler().compile(r)\n")
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr[-300:]


@pytest.mark.parametrize("variant", [None, "absent"])
def test_memory_shift_by_zero_in_a_region(variant):
    """``shl dword [esi], 0`` first runs in the fifth iteration, compiled: the interpreter
    reads its operand (the page walk sets the PTE's Accessed bit, or raises #PF for a page
    not present), so the region must too (long random run, seed 13, program 246)."""
    code = ("b905000000" "be00000100"           # mov ecx, 5; mov esi, DATA
            "83f901" "7503"                     # L: cmp ecx, 1; jne M
            "c12600"                            # shl dword [esi], 0
            "e2f6" "f4")                        # M: loop L; hlt
    diffs, on, off = three_ways(program_from(bytes.fromhex(code)), False, variant)
    assert on.compiled
    assert not diffs, diffs
