"""The translation tier (loopjit.py, hotloop.py) against the interpreter.

Every case runs twice, once with ``cpu.jit`` on (loops compiled after one or
a few iterations) and once with it off, and the two runs must agree on the
status, the whole architectural state record, the step count and the whole
trace ring.  Random loops use every form the tier compiles (all ALU
operations with register and immediate operands, AL,Ib and eAX,Iz included,
INC/DEC, NOT/NEG, TEST, MOV, XCHG, LEA in every addressing shape, rotates and
shifts by constants, NOP) with every kind of branch back (Jcc
rel8/rel32 for all 16 conditions, JMP, LOOP), random registers and flags,
random step budgets (cut mid-iteration), and placements near a page end or
the CS limit.  Scenario tests cover code changed behind a compiled loop (by
Python and by the guest), breakpoints, paging and the decoder's refusals.
"""
import os
import random

import numpy as np
import pytest

from kjcore.cpu import CPU, Status, loopjit
from kjcore.cpu import state as S

CASES = int(os.environ.get("KJCORE_JIT_LOOPS", "800"))
CODE = 0x3000


def _imm32(rng):
    if rng.random() < 0.3:
        return rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF))
    return rng.getrandbits(32)


def _lea(rng, reg):
    mod = rng.randrange(3)
    rm = rng.randrange(8)
    out = bytes([mod << 6 | reg << 3 | rm])
    if rm == 4:
        out += bytes([rng.getrandbits(8)])             # any SIB: index 4 = none, base 5
    if mod == 1:
        out += bytes([rng.getrandbits(8)])
    elif mod == 2 or (mod == 0 and (rm == 5 or (rm == 4 and out[1] & 7 == 5))):
        out += _imm32(rng).to_bytes(4, "little")
    return b"\x8d" + out


def body_insn(rng):
    """One random instruction of a form the tier compiles."""
    r, w = rng.randrange(8), rng.randrange(8)
    k = rng.randrange(16)
    if k == 15:                                        # ALU/TEST on AL,Ib and eAX,Iz
        op = rng.choice([a << 3 | 4 for a in range(8)] + [a << 3 | 5 for a in range(8)]
                        + [0xA8, 0xA9])
        return bytes([op]) + (_imm32(rng).to_bytes(4, "little") if op & 1
                              else bytes([rng.getrandbits(8)]))
    if k < 3:
        aop = rng.randrange(8)
        return bytes([aop << 3 | rng.choice((1, 3)), 0xC0 | r << 3 | w])
    if k == 3:
        return b"\x83" + bytes([0xC0 | rng.randrange(8) << 3 | w, rng.getrandbits(8)])
    if k == 4:
        return (b"\x81" + bytes([0xC0 | rng.randrange(8) << 3 | w])
                + _imm32(rng).to_bytes(4, "little"))
    if k == 5:
        return bytes([rng.choice((0x40, 0x48)) + w])
    if k == 6:                                         # NOT / NEG
        return b"\xf7" + bytes([0xC0 | rng.choice((2, 3)) << 3 | w])
    if k == 7:
        return b"\x85" + bytes([0xC0 | r << 3 | w])
    if k == 8:
        return (b"\xf7" + bytes([0xC0 | rng.randrange(2) << 3 | w])
                + _imm32(rng).to_bytes(4, "little"))
    if k == 9:
        return bytes([0xB8 + w]) + _imm32(rng).to_bytes(4, "little")
    if k == 10:
        return bytes([rng.choice((0x89, 0x8B)), 0xC0 | r << 3 | w])
    if k == 11:
        return _lea(rng, w)
    if k == 12:                                        # ROL ROR SHL SHR SAL SAR by imm8 / by 1
        op = rng.choice((0, 1, 4, 5, 6, 7))
        if rng.random() < 0.7:
            count = rng.choice((0, 1, 2, 31, 32, 33, rng.getrandbits(8)))
            return b"\xc1" + bytes([0xC0 | op << 3 | w, count])
        return b"\xd1" + bytes([0xC0 | op << 3 | w])
    if k == 13:                                        # XCHG
        if rng.random() < 0.5:
            return b"\x87" + bytes([0xC0 | r << 3 | w])
        return bytes([0x91 + rng.randrange(7)])
    return b"\x90"


def random_loop(rng):
    """(loop bytes, byte length) ending in a branch back to its first byte, then HLT."""
    body = b"".join(body_insn(rng) for _ in range(rng.randrange(0, 10)))
    cc = rng.randrange(16)
    if rng.random() < 0.25:
        body += b"\x49"                                 # dec ecx; jnz
        cc = 5
    k = rng.randrange(5)
    if k == 0:
        n = len(body) + 2
        code = body + bytes([0x70 + cc, (-n) & 0xFF])
    elif k == 1:
        n = len(body) + 6
        code = body + bytes([0x0F, 0x80 + cc]) + ((-n) & 0xFFFFFFFF).to_bytes(4, "little")
    elif k == 2:
        n = len(body) + 2
        code = body + bytes([0xE2, (-n) & 0xFF])
    elif k == 3:
        n = len(body) + 2
        code = body + bytes([0xEB, (-n) & 0xFF])
    else:
        n = len(body) + 5
        code = body + b"\xe9" + ((-n) & 0xFFFFFFFF).to_bytes(4, "little")
    return code + b"\xf4"


def run_both(setup, max_steps, threshold=1, runs=1):
    """Run ``setup(cpu)``-prepared CPUs with the tier on and off; returns the
    CPU that had it on, after asserting both agree."""
    out = []
    for jit in (True, False):
        ram = np.zeros(1 << 16, np.uint8)
        cpu = CPU(ram)
        cpu.jit = jit
        cpu.jit_threshold = threshold
        setup(cpu)
        sts = [cpu.run(max_steps) for _ in range(runs)]
        out.append((cpu, sts))
    (a, sa), (b, sb) = out
    assert sa == sb
    assert a.steps == b.steps
    ra, rb = a.get_state(), b.get_state()
    for name in ra.dtype.names:
        assert ra[name] == rb[name], name
    assert np.array_equal(a.trace(S.TRACE_N), b.trace(S.TRACE_N))
    assert np.array_equal(a.ram, b.ram)
    return a


def test_random_loops_match_interpreter():
    rng = random.Random(1234)
    hits = 0
    for case in range(CASES):
        code = random_loop(rng)
        where = rng.random()
        if where < 0.15:                                # last bytes of the page (or across it)
            at = CODE + 4096 - len(code) + rng.randrange(-8, 4)
        else:
            at = CODE + rng.randrange(0, 4096 - len(code))
        limit = None
        if rng.random() < 0.1:                          # CS limit close to the loop's end
            limit = at + len(code) + rng.randrange(-3, 12)
        regs = [rng.getrandbits(32) for _ in range(8)]
        regs[1] = rng.choice((rng.randrange(1, 40), rng.randrange(1, 5000), regs[1]))
        flags = 0x2 | (rng.getrandbits(12) & S.ARITH)
        budget = rng.randrange(1, 40000)

        def setup(cpu):
            cpu.ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
            for i, v in enumerate(regs):
                cpu._s[i] = v
            cpu.eflags = flags
            cpu.eip = at
            if limit is not None:
                cpu.load_segment("cs", 0x08, 0, limit, 0x9B | S.A_DB)
        cpu = run_both(setup, budget, threshold=rng.choice((1, 2, 5)))
        hits += len(cpu.compiled_loops) > 0
    # Many loops are compiled (the rest ran too few iterations or did not fit).
    assert hits > CASES // 3


@pytest.mark.slow
def test_random_loops_long():
    """``KJCORE_JIT_LOOPS=100000 pytest -m slow -k loops_long`` for a long run (it
    also fills the code cache many times over: see test_full_code_cache_is_thrown_away)."""
    test_random_loops_match_interpreter()


ALU_LOOP = bytes.fromhex("01c831c283eb034975f6") + b"\xf4"   # add/xor/sub/dec/jnz; hlt


def _alu_setup(cpu, at=CODE, ecx=100000):
    cpu.ram[at:at + len(ALU_LOOP)] = np.frombuffer(ALU_LOOP, np.uint8)
    cpu.eip = at
    cpu.ecx = ecx


def test_compiled_loop_runs_and_writes_back():
    cpu = run_both(_alu_setup, 10 ** 7)
    assert len(cpu.compiled_loops) == 1
    assert cpu.eip == CODE + len(ALU_LOOP) and cpu.steps == 5 * 100000 + 1


@pytest.mark.parametrize("budget", [1, 4, 5, 6, 23, 4099, 20001, 499999, 500000, 500001])
def test_step_budget_cut_mid_iteration(budget):
    run_both(_alu_setup, budget)


def test_default_threshold_and_off_switch():
    ram = np.zeros(1 << 16, np.uint8)
    cpu = CPU(ram)
    _alu_setup(cpu, ecx=loopjit.THRESHOLD // 2)
    cpu.run(10 ** 7)
    assert len(cpu.compiled_loops) == 0                          # not hot enough
    _alu_setup(cpu, ecx=4 * loopjit.THRESHOLD)
    cpu.jit = False
    cpu.run(10 ** 7)
    assert len(cpu.compiled_loops) == 0
    cpu.jit = True
    _alu_setup(cpu, ecx=4 * loopjit.THRESHOLD)
    cpu.run(10 ** 7)
    assert len(cpu.compiled_loops) == 1


def test_code_changed_from_python_is_not_run():
    def setup(cpu):
        _alu_setup(cpu)
        cpu.run(10 ** 7)                                # compiles the loop
        cpu.ram[CODE + 6] = 7                           # sub ebx,3 -> sub ebx,7
        _alu_setup(cpu)
        cpu.ram[CODE + 6] = 7
    cpu = run_both(setup, 10 ** 7)
    assert len(cpu.compiled_loops) == 1                           # the new bytes, compiled afresh


def test_code_patched_by_the_guest():
    # outer: mov ecx,5000; inner: add eax,ecx; loop inner; add byte [imm],1... the
    # guest rewrites the inner loop's ADD into other operations between rounds.
    inner = CODE + 5
    prog = (b"\xb9\x88\x13\x00\x00"                    # mov ecx, 5000
            + b"\x01\xc8\xe2\xfc"                       # inner: add eax,ecx; loop inner
            + b"\x80\x05" + inner.to_bytes(4, "little") + b"\x08"   # add byte [inner], 8
            + b"\x4b\x75\xed\xf4")                      # dec ebx; jnz start; hlt

    def setup(cpu):
        cpu.ram[CODE:CODE + len(prog)] = np.frombuffer(prog, np.uint8)
        cpu.eip = CODE
        cpu.ebx = 6                                     # ADD OR ADC SBB AND SUB
    cpu = run_both(setup, 10 ** 7)
    assert len(cpu.compiled_loops) >= 1 and cpu.eip == CODE + len(prog)


def test_breakpoint_in_a_compiled_loop():
    def setup(cpu):
        _alu_setup(cpu)
        cpu.run(20000)                                  # compiled and running
        cpu.breakpoints.add(CODE + 7)                   # the DEC
    cpu = run_both(setup, 10 ** 7, runs=3)
    assert cpu.eip == CODE + 7


def test_paging_trace_holds_linear_addresses():
    """Code at linear 0x400000 + CODE in a page backed by another physical page."""
    lin = 0x400000 + CODE
    phys = 0x8000

    def setup(cpu):
        ram = cpu.ram
        pd, pt = 0x1000, 0x2000
        ram[pd:pd + 4] = np.frombuffer((pt | 3).to_bytes(4, "little"), np.uint8)
        ram[pd + 4:pd + 8] = np.frombuffer((pt | 3).to_bytes(4, "little"), np.uint8)  # 4 MiB+
        ram[pt + 4 * (CODE >> 12):pt + 4 * (CODE >> 12) + 4] = np.frombuffer(
            (phys | 3).to_bytes(4, "little"), np.uint8)
        cpu.cr3 = pd
        cpu.cr0 = 0x80000011
        ram[phys:phys + len(ALU_LOOP)] = np.frombuffer(ALU_LOOP, np.uint8)
        cpu.eip = lin
        cpu.ecx = 50000
    cpu = run_both(setup, 10 ** 7)
    assert cpu.compiled_loops == [(phys, 10)]
    assert set(cpu.trace(5)) <= {lin + o for o in (0, 2, 4, 7, 8, 10)}


@pytest.mark.parametrize("code", [
    b"\x67\x01\xc8\x75\xfb",            # address-size prefix
    b"\x01\xc8\x66\x75\xfa",            # a branch with the operand-size prefix
    b"\x66\x8d\x00\x75\xfb",            # LEA with 16-bit operands
    b"\x01\xc8\x75\x00",                # branch that does not go back to the head
    b"\xd3\xe0\x75\xfc",                # shift by CL: not a compiled form
    b"\xd1\xd0\x75\xfc",                # RCL: not a compiled form
    b"\x01\xc8\xc3",                    # no branch back
    b"\x01\xc8" * 520 + b"\xe9\xeb\xfb\xff\xff",   # longer than MAX_INSNS
    b"\x66\x8b\x06\x75\xfb",            # memory operand, 16-bit addressing (code16 below)
])
def test_decoder_refuses(code):
    assert loopjit.decode_region(code + bytes(16), code16=code[:1] == b"\x66") is None


def test_decoder_needs_no_look_ahead():
    """Lengths come from the opcode table: a loop that ends where the bytes
    given end (the page end) is decoded; one cut inside an instruction is not."""
    assert loopjit.decode_region(b"\x01\xc8\x49\x75\xfb") is not None
    assert loopjit.decode_region(b"\x81\xc0\x01\x00") is None


def test_decoder_accepts_lea_forms():
    found = loopjit.decode_region(b"\x8d\x44\x88\x05" + b"\x8d\x04\x25\x10\x00\x00\x00"
                                  + b"\x8d\x80\x00\x01\x00\x00" + b"\xeb\xed" + bytes(8))
    assert found is not None
    assert len(found.code) == 19 and not found.memory
    insns = [i for _, i in found.blocks[0].insns]
    assert insns[0][2:] == (32, 0, 0, 1, 2, 5)       # eax = eax + ecx*4 + 5
    assert insns[1][2:] == (32, 0, -1, -1, 0, 0x10)  # eax = 0x10 (no base, no index)


def test_decoder_accepts_accumulator_forms():
    """gcc's CRC-32 bit loop (and eax,imm32) and the AL,Ib forms, 8-bit with or without
    0x66."""
    crc = bytes.fromhex("89c183e001d1e9f7d8252083b8ed31c84a75ed")
    found = loopjit.decode_region(crc + b"\xf4" * 8)                 # HLT: an exit
    insns = [i for _, i in found.blocks[0].insns]
    assert len(found.code) == 19 and insns[4] == ("alu", 5, 32, 4, ("r", 0), ("i", 0xEDB88320))
    found = loopjit.decode_region(b"\x3c\x80\x66\x04\x7f\xa8\x01\x66\xa9\x34\x12\x75\xf3")
    insns = [i for _, i in found.blocks[0].insns]
    assert [i[:3] for i in insns[:4]] == [("alu", 2, 8), ("alu", 3, 8), ("test", 2, 8),
                                          ("test", 4, 16)]


# ---------------------------------------------------------------- 16-bit code
def body_insn16(rng):
    """One random instruction of 16-bit code: 16-bit operands, or 32-bit with 0x66."""
    wide = rng.random() < 0.3
    r, w = rng.randrange(8), rng.randrange(8)
    imm = (_imm32(rng) & (0xFFFFFFFF if wide else 0xFFFF)).to_bytes(4 if wide else 2, "little")
    k = rng.randrange(13)
    if k == 12:                                        # ALU/TEST on AL,Ib and eAX,Iz
        op = rng.choice([a << 3 | 4 for a in range(8)] + [a << 3 | 5 for a in range(8)]
                        + [0xA8, 0xA9])
        out = bytes([op]) + (imm if op & 1 else bytes([rng.getrandbits(8)]))
    elif k < 3:
        out = bytes([rng.randrange(8) << 3 | rng.choice((1, 3)), 0xC0 | r << 3 | w])
    elif k == 3:
        out = b"\x83" + bytes([0xC0 | rng.randrange(8) << 3 | w, rng.getrandbits(8)])
    elif k == 4:
        out = b"\x81" + bytes([0xC0 | rng.randrange(8) << 3 | w]) + imm
    elif k == 5:
        out = bytes([rng.choice((0x40, 0x48)) + w])
    elif k == 6:                                       # NOT / NEG / TEST imm
        out = b"\xf7" + bytes([0xC0 | rng.choice((2, 3)) << 3 | w])
        if rng.random() < 0.3:
            out = b"\xf7" + bytes([0xC0 | w]) + imm
    elif k == 7:
        out = bytes([rng.choice((0x85, 0x89, 0x8B, 0x87)), 0xC0 | r << 3 | w])
    elif k == 8:
        out = bytes([0xB8 + w]) + imm
    elif k == 9:                                       # shifts: 32-bit operands only
        out = b"\xc1" + bytes([0xC0 | rng.choice((0, 1, 4, 5, 7)) << 3 | w,
                               rng.choice((1, 3, 15, 16, 31))])
    elif k == 10:
        out = bytes([0x91 + rng.randrange(7)])
    else:
        out = b"\x90"
    return (b"\x66" if wide else b"") + out


def random_loop16(rng):
    """A loop of 16-bit code ending in a branch back to its first byte (rel8, rel16, LOOP
    on CX, JMP), then HLT."""
    body = b"".join(body_insn16(rng) for _ in range(rng.randrange(0, 10)))
    if rng.random() < 0.3:
        body += b"\x49"                                 # dec cx
    cc = 5 if body.endswith(b"\x49") else rng.randrange(16)
    k = rng.randrange(4)
    if k == 0:
        code = body + bytes([0x70 + cc, (-(len(body) + 2)) & 0xFF])
    elif k == 1:
        code = body + bytes([0x0F, 0x80 + cc]) + ((-(len(body) + 4)) & 0xFFFF).to_bytes(2, "little")
    elif k == 2:
        code = body + bytes([0xE2, (-(len(body) + 2)) & 0xFF])
    else:
        code = body + b"\xe9" + ((-(len(body) + 3)) & 0xFFFF).to_bytes(2, "little")
    return code + b"\xf4"


def test_random_16bit_loops_match_interpreter():
    """Real-mode loops (16-bit operands, 0x66 for 32, CX for LOOP): with the tier and
    without, placed anywhere in the segment, near its 64 KiB end and its limit."""
    rng = random.Random(1616)
    hits = 0
    for case in range(CASES // 2):
        code = random_loop16(rng)
        where = rng.random()
        if where < 0.2:                                 # the last bytes of the 64 KiB
            at = 0x10000 - len(code) + rng.randrange(-4, 1)
        else:
            at = CODE + rng.randrange(0, 4096 - len(code))
        limit = at + len(code) + rng.randrange(-3, 12) if rng.random() < 0.1 else 0xFFFF
        regs = [rng.getrandbits(32) for _ in range(8)]
        regs[1] = rng.choice((rng.randrange(1, 40), rng.randrange(1, 5000), regs[1]))
        flags = 0x2 | (rng.getrandbits(12) & S.ARITH)
        budget = rng.randrange(1, 40000)

        def setup(cpu):
            cpu.reset()
            cpu.ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
            for i, v in enumerate(regs):
                cpu._s[i] = v
            cpu.eflags = flags
            cpu.load_segment("cs", 0, 0, min(limit, 0xFFFF), 0x93)
            cpu.eip = at
        cpu = run_both(setup, budget, threshold=rng.choice((1, 2, 5)))
        hits += len(cpu.compiled_loops) > 0
    assert hits > CASES // 8


def test_real_mode_loop_is_compiled_and_keyed_apart_from_32_bit_code():
    # mov cx,0xffff; L: add ax,cx; xor dx,ax; add eax,ebx (0x66); dec cx; jnz L; hlt
    code = bytes.fromhex("b9ffff01c831c26601d84975f6f4")

    def setup(cpu):
        cpu.reset()
        cpu.ram[CODE:CODE + len(code)] = np.frombuffer(code, np.uint8)
        cpu.load_segment("cs", 0, 0, 0xFFFF, 0x93)
        cpu.eip, cpu.ebx = CODE, 0x12345
    cpu = run_both(setup, 10 ** 7)
    assert cpu.compiled_loops == [(CODE + 3, 10)] and cpu.ecx == 0
    assert cpu.eip == CODE + len(code) and cpu.steps == 1 + 5 * 0xFFFF + 1


@pytest.mark.parametrize("bits", [32, 16])
def test_random_loops_against_unicorn(bits):
    """The tier's results checked by an independent emulator too (Unicorn in 32-bit mode,
    and in 16-bit mode for real-mode loops): Unicorn runs the same number of instructions;
    registers, EIP and the defined flags agree (AF is undefined after AND/OR/XOR/TEST:
    masked in loops that have one)."""
    unicorn = pytest.importorskip("unicorn")
    from unicorn import x86_const as X
    regs_uc = (X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
               X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)
    rng = random.Random(99)
    ram = np.zeros(1 << 16, np.uint8)
    checked = 0
    while checked < 150:
        code = random_loop(rng) if bits == 32 else random_loop16(rng)
        found = loopjit.decode_region(code + bytes(16), code16=bits == 16)
        if found is None:
            continue                # a form the tier refuses (a 16-bit shift)
        offsets, insns = zip(*found.blocks[0].insns)
        if any(code[o] == 0xF7 and (code[o + 1] >> 3) & 7 == 1 for o in offsets):
            continue                # Unicorn refuses the F7 /1 alias of TEST (test_unicorn_bugs.py)
        at = CODE + rng.randrange(0, 4096 - len(code))
        regs = [rng.getrandbits(32) for _ in range(8)]
        regs[1] = rng.randrange(1, 3000)
        flags = 0x2 | (rng.getrandbits(12) & S.ARITH)
        ram[:] = 0
        ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
        cpu = CPU(ram)
        cpu.jit_threshold = 1
        if bits == 16:
            cpu.reset()
            cpu.load_segment("cs", 0, 0, 0xFFFF, 0x93)
        for i, v in enumerate(regs):
            cpu._s[i] = v
        cpu.eflags, cpu.eip = flags, at
        st = cpu.run(rng.randrange(1000, 20000))
        if not cpu.compiled_loops:
            continue
        checked += 1
        uc = unicorn.Uc(unicorn.UC_ARCH_X86,
                        unicorn.UC_MODE_32 if bits == 32 else unicorn.UC_MODE_16)
        uc.mem_map(0, 1 << 16)
        uc.mem_write(0, ram.tobytes())
        for r, v in zip(regs_uc, regs):
            uc.reg_write(r, v)
        uc.reg_write(X.UC_X86_REG_EFLAGS, flags)
        hlt = at + len(code) - 1
        assert st in (Status.HLT, Status.STEP_LIMIT), (st, code.hex())
        uc.emu_start(at, hlt, count=cpu.steps - (st == Status.HLT))
        assert [uc.reg_read(r) for r in regs_uc] == [cpu._s[i] for i in range(8)], code.hex()
        assert uc.reg_read(X.UC_X86_REG_EIP) + (st == Status.HLT) == cpu.eip   # EIP past HLT
        logic = any(i[0] == "test" or (i[0] == "alu" and i[3] in (1, 4, 6)) for i in insns)
        mask = S.ARITH & ~(S.AF if logic else 0)
        assert uc.reg_read(X.UC_X86_REG_EFLAGS) & mask == cpu.eflags & mask, code.hex()


def test_full_code_cache_is_thrown_away(monkeypatch):
    """Past MAX_LOOPS compiled loops the code cache is emptied; a CPU that had
    addresses into it forgets them before it runs again (a stale address
    would crash the process), and results stay the interpreter's."""
    monkeypatch.setattr(loopjit, "MAX_LOOPS", 1)
    # L: add ebx,imm32 (immediates no other test uses); add eax,ecx; dec ecx; jnz L; hlt
    loops = [bytes.fromhex(f"81c3{imm}01c84975f5f4") for imm in ("5aa50ff0", "5ba50ff0")]
    gen = loopjit.generation

    def on(code):
        c = CPU(np.zeros(1 << 16, np.uint8))
        c.jit_threshold = 1
        c.ram[CODE:CODE + 12] = np.frombuffer(code, np.uint8)
        c.eip, c.ecx = CODE, 20000
        c.run(10 ** 6)
        assert c.compiled_loops
        return c

    a = on(loops[0])                                    # holds the first loop's address
    on(loops[1])                                        # compiling it empties the cache
    a.eip, a.ecx = CODE, 20000
    a.step()
    assert a.compiled_loops == []                       # forgotten before it ran
    a.run(10 ** 6)                                      # (compiled afresh)
    assert a.eax == 2 * (20000 * 20001 // 2) & 0xFFFFFFFF and a.compiled_loops

    def setup(cpu):
        cpu.ram[CODE:CODE + 12] = np.frombuffer(loops[1], np.uint8)
        cpu.eip, cpu.ecx = CODE, 20000
    cpu = run_both(setup, 10 ** 6)
    assert cpu.compiled_loops
    assert loopjit.generation >= gen + 2
