"""The fast path (EIP/EFLAGS in registers, lazy flags) against the full decoder.

Random programs built from the fast-path forms (register and memory ALU,
INC/DEC, MOV, LEA, PUSH/POP, CALL, Jcc, JMP) mixed with flag consumers that
go through the slow path (SETcc, PUSHF, LAHF/SAHF, RCL, CMC/STC/CLC,
ADC r8) or stay on the fast path (Jcc, ADC/SBB, INC/DEC keeping CF) run
twice: once normally and once with the fast path switched off
(``state.NO_FAST``).  Both runs must agree on every register, EFLAGS, the
data and stack memory, the step counts and the trace ring — also when the
run is cut into random step-limit slices or stopped at breakpoints (so
EFLAGS is written back in the middle of a lazy sequence), with code
crossing a page boundary, with paging on, and with code patched by the
program itself.
"""
import random

import numpy as np
import pytest

from kjcore.cpu import CPU, Status
from kjcore.cpu import state as S

RAM = 1 << 20
DATA = 0x40000            # ESI points here; disp8 operands stay inside
STACK = 0x60000
PD = 0x70000
WRITABLE = (0, 1, 2, 3, 7)  # EAX ECX EDX EBX EDI (ESP stack, EBP loop counter, ESI data base)


def imm32(rng):
    r = rng.random()
    if r < 0.3:
        return rng.choice((0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                           0xFFFFFFFE, 0x80000001, 0x100))
    return rng.getrandbits(32)


def instr(rng, allow_jump=True):
    """One random instruction (bytes)."""
    w = rng.choice(WRITABLE)
    r = rng.randrange(8)
    k = rng.randrange(38)
    modrm_rr = lambda reg, rm: bytes([0xC0 | reg << 3 | rm])  # noqa: E731
    if k < 5:                                          # ALU r/r, both directions, all 8 ops
        aop = rng.randrange(8)
        if rng.random() < 0.5:
            return bytes([aop << 3 | 1]) + modrm_rr(r, w)       # op Ev, Gv: dst = rm
        return bytes([aop << 3 | 3]) + modrm_rr(w, r)           # op Gv, Ev: dst = reg
    if k < 7:                                          # 83 /aop ib, 81 /aop id
        aop = rng.randrange(8)
        if rng.random() < 0.6:
            return b"\x83" + modrm_rr(aop, w) + bytes([rng.getrandbits(8)])
        return b"\x81" + modrm_rr(aop, w) + imm32(rng).to_bytes(4, "little")
    if k < 9:                                          # INC/DEC
        return bytes([(0x40 if rng.random() < 0.5 else 0x48) + w])
    if k == 9:
        return b"\x85" + modrm_rr(r, w)
    if k == 10:
        return b"\xf7" + modrm_rr(rng.randrange(2), w) + imm32(rng).to_bytes(4, "little")
    if k == 11:
        return bytes([0xB8 + w]) + imm32(rng).to_bytes(4, "little")
    if k == 12:
        return b"\x89" + modrm_rr(r, w) if rng.random() < 0.5 else b"\x8b" + modrm_rr(w, r)
    if k < 16:                                         # memory forms through ESI + disp8
        d = bytes([rng.randrange(0, 0x7C, 4)])
        op = rng.choice((0x8B, 0x89, 0x03, 0x0B, 0x13, 0x1B, 0x23, 0x2B, 0x33, 0x3B, 0x39, 0x85,
                         0x83, 0x8D))
        reg = w if op in (0x8B, 0x03, 0x0B, 0x13, 0x1B, 0x23, 0x2B, 0x33, 0x8D) else r
        if op == 0x83:
            return b"\x83" + bytes([0x40 | 7 << 3 | 6]) + d + bytes([rng.getrandbits(8)])
        if op == 0x8D and rng.random() < 0.5:                   # LEA with SIB
            sib = rng.randrange(4) << 6 | rng.choice(WRITABLE) << 3 | 6
            return b"\x8d" + bytes([0x44 | reg << 3, sib]) + d
        return bytes([op, 0x40 | reg << 3 | 6]) + d
    if k == 16:                                        # PUSH r; POP w
        return bytes([0x50 + r, 0x58 + w])
    if k == 17:                                        # CALL next; POP w (return address)
        return b"\xe8\x00\x00\x00\x00" + bytes([0x58 + w])
    if k == 18:                                        # SETcc r8 (slow path reads flags)
        return bytes([0x0F, 0x90 + rng.randrange(16), 0xC0 + rng.choice((0, 1, 2, 3))])
    if k == 19:                                        # PUSHF; POP w (mask TF to keep runs plain)
        return (bytes([0x9C, 0x58 + w]) + b"\x81" + modrm_rr(4, w)
                + (0xFFFFFEFF).to_bytes(4, "little"))
    if k == 20:
        return rng.choice((b"\x9f", b"\x9e", b"\xf5", b"\xf9", b"\xf8"))   # LAHF SAHF CMC STC CLC
    if k == 21:                                        # RCL r,1 / ADC r8,r8 (slow path, read CF)
        if rng.random() < 0.5:
            return b"\xd1" + bytes([0xD0 + w])
        return b"\x12" + bytes([0xC0 | rng.randrange(4) << 3 | rng.randrange(4)])
    if k == 22:                                        # ADC/SBB r/r (fast path reads CF)
        if rng.random() < 0.5:
            return bytes([rng.choice((0x11, 0x19))]) + modrm_rr(r, w)
        return bytes([rng.choice((0x13, 0x1B))]) + modrm_rr(w, r)
    if k == 23:
        return b"\x90"
    if k >= 30:
        return gcc_form(rng, w, r)
    if allow_jump and k < 27:                          # Jcc / JMP forward over one instruction
        skip = instr(rng, allow_jump=False)
        cc = rng.randrange(16)
        j = rng.randrange(3)
        pre = b""
        if rng.random() < 0.6:                         # a flag producer right before the branch
            src = w if rng.random() < 0.4 else r   # equal operands: ZF=1, BE/LE hold, B/L do not
            rr = 0xC0 | src << 3 | w
            pre = rng.choice((bytes([0x39, rr]), bytes([0x29, rr]),
                              bytes([0x01, rr]), bytes([0x85, rr]),
                              bytes([0x40 + w]), bytes([0x48 + w]), bytes([0xF7, 0xD8 | w]),
                              b"\x25" + imm32(rng).to_bytes(4, "little"),
                              b"\x3d" + imm32(rng).to_bytes(4, "little"),
                              bytes([0xC1, 0xE0 | w, rng.randrange(33)]),
                              bytes([0x6B, 0xC0 | w << 3 | r, rng.getrandbits(8)]),
                              bytes([0x38, 0xC0 | rng.randrange(64)]),
                              b"\x83" + bytes([0xF8 | w, rng.choice((0, 1, 0x7F, 0x80, 0xFF))])))
        if j == 0:
            return pre + bytes([0x70 + cc, len(skip)]) + skip
        if j == 1:
            return pre + bytes([0x0F, 0x80 + cc]) + len(skip).to_bytes(4, "little") + skip
        return pre + bytes([0xEB, len(skip)]) + skip
    return bytes([(0x40 if rng.random() < 0.5 else 0x48) + w])


def gcc_form(rng, w, r):
    """One of the forms of fastforms.py (gcc's common ones beside the first switch's)."""
    k = rng.randrange(9)
    d = bytes([rng.randrange(0, 0x7C)])                 # [esi + disp8], any alignment
    if k == 0:                                         # ALU eAX, imm32 (all 8) / TEST eAX
        op = rng.choice([a << 3 | 5 for a in range(8)] + [0xA9])
        return bytes([op]) + imm32(rng).to_bytes(4, "little")
    if k == 1:                                         # shifts/rotates by 1, imm8, CL
        m = 0xC0 | rng.randrange(8) << 3 | w
        op = rng.choice((0xD1, 0xC1, 0xD3))
        if op == 0xC1:
            return bytes([op, m, rng.choice((0, 1, 2, 7, 31, 32, 33, rng.getrandbits(8)))])
        return bytes([op, m])
    if k == 2:                                         # NOT / NEG
        return bytes([0xF7, 0xC0 | rng.choice((2, 3)) << 3 | w])
    if k == 3:                                         # IMUL r, r, imm8/imm32; IMUL r, r
        m = bytes([0xC0 | w << 3 | r])
        c = rng.randrange(3)
        if c == 0:
            return b"\x6b" + m + bytes([rng.getrandbits(8)])
        if c == 1:
            return b"\x69" + m + imm32(rng).to_bytes(4, "little")
        return b"\x0f\xaf" + m
    if k == 4:                                         # MOVZX/MOVSX from a register
        return bytes([0x0F, rng.choice((0xB6, 0xB7, 0xBE, 0xBF)), 0xC0 | w << 3 | r])
    if k == 5:                                         # ... and from memory
        return bytes([0x0F, rng.choice((0xB6, 0xB7, 0xBE, 0xBF)), 0x40 | w << 3 | 6]) + d
    if k == 6:                                         # byte ALU/TEST/MOV on registers
        op = rng.choice((0x00, 0x02, 0x08, 0x0A, 0x20, 0x22, 0x28, 0x2A, 0x30, 0x32, 0x38, 0x3A,
                         0x84, 0x88, 0x8A))
        return bytes([op, 0xC0 | rng.randrange(64)])
    if k == 7:                                         # byte store / load
        return bytes([rng.choice((0x88, 0x8A)), 0x40 | rng.randrange(8) << 3 | 6]) + d
    return bytes([0xD3, 0xC0 | rng.randrange(8) << 3 | w])     # by CL: counts 0 to 31


def program(rng, body_len=None, iters=None):
    """mov ebp,iters; L: body; dec ebp; jnz L (rel32); hlt."""
    body = b"".join(instr(rng) for _ in range(body_len or rng.randrange(3, 25)))
    loop_back = -(len(body) + 1 + 6)
    return (b"\xbd" + (iters or rng.randrange(1, 12)).to_bytes(4, "little") + body + b"\x4d"
            + b"\x0f\x85" + (loop_back & 0xFFFFFFFF).to_bytes(4, "little") + b"\xf4")


def machine(rng, code, at, paging, fast, seed):
    ram = np.zeros(RAM, np.uint8)
    ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
    ram[DATA:DATA + 256] = np.frombuffer(np.random.default_rng(seed).bytes(256), np.uint8)
    cpu = CPU(ram)
    r2 = random.Random(seed)
    for i, name in enumerate(S.REG_NAMES):
        setattr(cpu, name, imm32(r2))
    cpu.esp = STACK
    cpu.esi = DATA
    cpu.eflags = 0x2 | (r2.getrandbits(12) & 0x8D5)
    if paging:
        ram[PD:PD + 4] = np.frombuffer((0x83).to_bytes(4, "little"), np.uint8)   # 4 MiB identity
        cpu.cr3 = PD
        cpu.cr4 = cpu.cr4 | S.CR4_PSE
        cpu.cr0 = cpu.cr0 | S.CR0_PG
    cpu.eip = at
    cpu._s[S.NO_FAST] = 0 if fast else 1
    return cpu


def snapshot(cpu):
    st = cpu.get_state()
    regs = tuple(int(st[n]) for n in (*S.REG_NAMES, "eip", "eflags", "tsc"))
    return (regs, cpu.ram[DATA:DATA + 256].tobytes(), cpu.ram[STACK - 64:STACK].tobytes(),
            cpu.trace(64))


def run_both(rng, code, at, paging, seed, slices=None, bps=()):
    out = []
    limits = []                    # the fast run's stopping points, replayed without it
    for fast in (True, False):
        cpu = machine(rng, code, at, paging, fast, seed)
        cpu.breakpoints = set(bps)
        trail = []
        for _ in range(10_000):
            if fast:
                st = cpu.run(slices.pop(0) if slices else 100_000)
            else:
                st = cpu.run(limits.pop(0) if limits else 100_000)
            trail.append((st, cpu.steps, snapshot(cpu)))
            if st == Status.HLT:
                break
            assert st in (Status.STEP_LIMIT, Status.BREAK), st
        if fast:
            limits = [t[1] if t[0] == Status.STEP_LIMIT else 100_000 for t in trail]
        out.append(trail)
    return out


@pytest.mark.parametrize("seed", range(60))
def test_random_programs(seed):
    rng = random.Random(seed)
    code = program(rng)
    at = rng.choice((0x1000, 0x1FF0 - rng.randrange(40), 0x2ABC))    # some cross a page edge
    paging = seed % 3 == 0
    fast, slow = run_both(rng, code, at, paging, seed)
    assert fast == slow


@pytest.mark.parametrize("seed", range(40))
def test_step_limit_slices(seed):
    """Runs cut after random numbers of steps: EFLAGS written back mid-sequence."""
    rng = random.Random(1000 + seed)
    code = program(rng, iters=rng.randrange(2, 6))
    at = 0x1000 + rng.randrange(0, 0x1000)
    slices = [rng.randrange(1, 7) for _ in range(400)]
    fast, slow = run_both(rng, code, at, seed % 2 == 0, seed, slices=slices)
    assert fast == slow


@pytest.mark.parametrize("seed", range(30))
def test_breakpoints(seed):
    """Breakpoints inside the body stop both paths at the same place and state."""
    rng = random.Random(2000 + seed)
    code = program(rng, iters=rng.randrange(2, 5))
    at = 0x3000
    # breakpoints at instruction starts: collect them from a traced run
    cpu = machine(rng, code, at, False, False, seed)
    assert cpu.run(100_000) == Status.HLT
    starts = sorted(set(cpu.trace(S.TRACE_N)))
    bps = rng.sample(starts, min(len(starts), rng.randrange(1, 4)))
    fast, slow = run_both(rng, code, at, False, seed, bps=bps)
    assert fast == slow
    assert any(t[0] == Status.BREAK for t in fast) or at in bps


def test_self_modifying_code():
    """A loop patches the immediate of a MOV it executes next (fast path, no stale decode)."""
    at = 0x5000
    # mov ebp,5; L: mov ebx,imm32 (at L); add ebx,ebp... patch imm via [esi+0] with ESI = L+1
    body = bytes.fromhex(
        "bb78563412"        # L: mov ebx, 0x12345678
        "01d8"              # add eax, ebx
        "8d4301"            # lea eax, [ebx+1]
        "8906"              # mov [esi], eax      (patches the immediate of the MOV at L)
        "4d"                # dec ebp
        "75f1")             # jnz L
    code = b"\xbd\x05\x00\x00\x00" + body + b"\xf4"
    res = []
    for fast in (True, False):
        ram = np.zeros(RAM, np.uint8)
        ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
        cpu = CPU(ram)
        cpu.esi = at + 5 + 1
        cpu.eip = at
        cpu._s[S.NO_FAST] = 0 if fast else 1
        assert cpu.run(1000) == Status.HLT
        res.append((cpu.eax, cpu.ebx, cpu.eflags, cpu.steps, cpu.trace(40)))
    assert res[0] == res[1]
    assert res[0][1] == 0x12345678 + 4         # each pass added one


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 11, 1000])
def test_bench_loop_counts(n):
    """The ALU loop of the benchmark, stopped after n steps and resumed one step at a time."""
    code = b"\xb9" + (50).to_bytes(4, "little") + bytes.fromhex("01c831c283eb034975f6f4")
    states = []
    for fast in (True, False):
        ram = np.zeros(RAM, np.uint8)
        ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
        cpu = CPU(ram)
        cpu.eip = 0x1000
        cpu.eax, cpu.ebx, cpu.edx = 0x7FFFFFF0, 5, 0x80000000
        cpu._s[S.NO_FAST] = 0 if fast else 1
        seen = []
        st = cpu.run(n)
        seen.append((st, cpu.steps, cpu.eip, cpu.eflags, cpu.eax, cpu.ebx, cpu.ecx, cpu.edx))
        while st != Status.HLT:
            st = cpu.step()
            seen.append((st, cpu.steps, cpu.eip, cpu.eflags, cpu.eax, cpu.ebx, cpu.ecx, cpu.edx))
        seen.append(cpu.trace(300))
        states.append(seen)
    assert states[0] == states[1]


VALUES = (0, 1, 0x7F, 0x80, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE)
PRODUCERS = (
    b"\x39\xd8", b"\x29\xd8", b"\x01\xd8", b"\x21\xd8", b"\x09\xd8", b"\x31\xd8", b"\x85\xd8",
    b"\x39\xc3", b"\x83\xf8\x80", b"\x83\xf8\x01", b"\x3b\x06",                # cmp eax,[esi]
    b"\x39\xd8\x40", b"\x39\xc3\x48", b"\x85\xc0\x40",      # INC/DEC keep CF of a lazy CMP/TEST
    b"\x39\xd8\x13\xc3", b"\x39\xc3\x1b\xc3",                # ADC/SBB read a lazy CF
    b"\x39\xd8\x13\x06",                                     # ADC eax,[esi] reads a lazy CF
)


@pytest.mark.parametrize("producer", PRODUCERS, ids=lambda p: p.hex())
def test_every_condition(producer):
    """Each producer x every Jcc x boundary operands: the branch taken and the flags
    (PUSHF through the slow path) agree with the full decoder."""
    code = bytearray()
    for a in VALUES:
        for b in VALUES:
            for cc in range(16):
                code += (b"\xb8" + a.to_bytes(4, "little") + b"\xbb" + b.to_bytes(4, "little")
                         + b"\x89\x1e" + producer)                  # mov [esi], ebx
                if cc & 1:
                    code += bytes([0x0F, 0x80 + cc]) + (1).to_bytes(4, "little")
                else:
                    code += bytes([0x70 + cc, 1])
                code += b"\x41\x51\x50\x9c"              # inc ecx; push ecx; push eax; pushf
    code += b"\xf4"
    at, stack = 0x100000, 0x400000
    out = []
    for fast in (True, False):
        ram = np.zeros(4 << 20, np.uint8)
        ram[at:at + len(code)] = np.frombuffer(bytes(code), np.uint8)
        cpu = CPU(ram)
        cpu.esp, cpu.esi, cpu.ecx, cpu.eip = stack, DATA, 0, at
        cpu._s[S.NO_FAST] = 0 if fast else 1
        assert cpu.run(10 ** 6) == Status.HLT
        out.append((cpu.steps, cpu.eflags, ram[stack - 0x100000:stack].tobytes()))
    assert out[0] == out[1]
