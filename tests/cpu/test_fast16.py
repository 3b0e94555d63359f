"""The 16-bit fast path (kjcore/cpu/fast16.py) against Unicorn in 16-bit mode and against the
interpreter.

* Every form it covers, one instruction at a time with the fetch cache primed (the oracle's
  ``fast`` run), against Unicorn ``UC_MODE_16`` in real mode; each form must have been taken
  by the fast path (the decoder records ``D_START``, the fast path does not) in some cases.
* Random 16-bit programs of those forms mixed with flag consumers the interpreter runs
  (PUSHF, LAHF, SETcc, CMC, RCL) run with the fast path and without it (``NO_FAST``): the
  lazy 16-bit flags across instructions, PUSH/POP/CALL/RET, LOOP, stores into the code,
  code at the end of the 64 KiB segment, step-limit slices: registers, EFLAGS, memory, step
  counts and the trace ring agree.
"""
import random

import numpy as np
import pytest
from cpu_oracle import Oracle, gen_case

from kjcore.cpu import CPU, Status
from kjcore.cpu import state as S

FORMS = ([a << 3 | k for a in range(8) for k in (1, 3, 5)] + list(range(0x40, 0x60))
         + list(range(0x70, 0x80)) + [0x81, 0x83, 0x85, 0x88, 0x89, 0x8A, 0x8B, 0x8D, 0x90]
         + list(range(0xB0, 0xC0)) + [0xC3, 0xE2, 0xE8, 0xE9, 0xEB]
         + list(range(0x180, 0x190)))


@pytest.mark.parametrize("part", range(2))
def test_fast16_forms_against_unicorn(part):
    orc = Oracle(31 + part, code16=True, fast=True)
    data = np.frombuffer(random.Random(part).randbytes(0x20000), np.uint8).copy()
    fails, taken = [], {}
    for op in FORMS[part::2]:
        for _ in range(40):
            case = gen_case(orc.rng, op, code16=True)
            orc.cpu._s[S.D_START] = -7
            d = orc.run_case(case, data)
            if d is None:
                continue
            taken[op] = taken.get(op, 0) + (orc.cpu._s[S.D_START] == -7)
            if d:
                fails.append((case, d))
    assert not fails, "\n".join(f"{c!r}: {d}" for c, d in fails[:10])
    assert all(taken.get(op, 0) > 0 for op in FORMS[part::2]), [
        hex(op) for op in FORMS[part::2] if not taken.get(op, 0)]


CS_SEL, DS_SEL, SS_SEL = 0x1000, 0x3000, 0x5000
REGS = (0, 2, 3, 7)             # AX DX BX DI; CX counts, SI and BP point at data, SP the stack
BUDGET = 20000


def instr(rng, depth=0):
    """One random 16-bit instruction or short idiom (bytes)."""
    w = rng.choice(REGS)
    r = rng.randrange(8)
    o = b"\x66" if rng.random() < 0.3 else b""
    imm = rng.getrandbits(32 if o else 16).to_bytes(4 if o else 2, "little")
    k = rng.randrange(20)
    if k < 4:                                          # ALU r/r both directions, eAX imm
        aop = rng.randrange(8)
        if k == 3:
            return o + bytes([aop << 3 | 5]) + imm
        if rng.random() < 0.5:
            return o + bytes([aop << 3 | 1, 0xC0 | r << 3 | w])
        return o + bytes([aop << 3 | 3, 0xC0 | w << 3 | r])
    if k < 6:                                          # 81 / 83 on a register
        aop = rng.randrange(8)
        if rng.random() < 0.5:
            return o + bytes([0x83, 0xC0 | aop << 3 | w, rng.getrandbits(8)])
        return o + bytes([0x81, 0xC0 | aop << 3 | w]) + imm
    if k == 6:
        return o + bytes([rng.choice((0x40, 0x48)) + w])
    if k < 10:                                         # memory: [si+d8], [bp+di] (SS), [si+d16]
        aop = rng.randrange(8)
        op = rng.choice((0x89, 0x8B, 0x88, 0x8A, aop << 3 | 1, aop << 3 | 3, 0x85, 0x8D, 0x83))
        reg = w if op in (0x8B, 0x8D) or op & 0x0F == 3 else r
        if op == 0x8A:
            reg = rng.choice((0, 1, 2, 3, 4, 5))
        form = rng.randrange(3)
        if form == 0:
            ea = bytes([0x40 | reg << 3 | 4, rng.randrange(0, 0x7C)])
        elif form == 1:
            ea = bytes([0x00 | reg << 3 | 3])
        else:
            ea = bytes([0x80 | reg << 3 | 4]) + rng.randrange(0, 0x100).to_bytes(2, "little")
        if op == 0x83:
            ea = bytes([ea[0] & 0xC7 | aop << 3]) + ea[1:] + bytes([rng.getrandbits(8)])
        seg = rng.choice((b"", b"", b"\x36", b"\x3e"))
        return seg + o + bytes([op]) + ea
    if k == 10:                                        # PUSH r; POP w
        return o + bytes([0x50 + r]) + o + bytes([0x58 + w])
    if k == 11:                                        # CALL next; POP w
        return b"\xe8\x00\x00" + bytes([0x58 + w])
    if k == 12:                                        # slow-path flag consumers
        return rng.choice((b"\x9c" + bytes([0x58 + w]), b"\x9f", b"\xf5",
                           bytes([0x0F, 0x90 + rng.randrange(16), 0xC0 + rng.randrange(4)]),
                           bytes([0xD1, 0xD0 + w]), bytes([0x12, 0xC0 | rng.randrange(64)])))
    if k == 13:
        return b"\x90" if rng.random() < 0.5 else bytes([0xB8 + w]) + imm[:2]
    if depth == 0 and k < 18:                          # a flag producer, then Jcc/JMP forward
        skip = instr(rng, 1)
        pre = rng.choice((bytes([0x39, 0xC0 | w << 3 | r]), bytes([0x29, 0xC0 | r << 3 | w]),
                          bytes([0x01, 0xC0 | r << 3 | w]), bytes([0x85, 0xC0 | r << 3 | w]),
                          o + bytes([0x40 + w]), o + bytes([0x48 + w]),
                          bytes([0x83, 0xF8 | w, rng.choice((0, 1, 0x7F, 0x80, 0xFF))]),
                          b"\x66\x3d" + imm[:2] + imm[:2]))
        cc = rng.randrange(16)
        j = rng.randrange(3)
        if j == 0:
            return pre + bytes([0x70 + cc, len(skip)]) + skip
        if j == 1:
            return pre + bytes([0x0F, 0x80 + cc]) + len(skip).to_bytes(2, "little") + skip
        return pre + bytes([0xEB, len(skip)]) + skip
    return bytes([0x48 + w])


def program(rng, n):
    """mov cx,iters; L: body; loop L (or dec cx; jnz L, rel16); hlt."""
    body = b"".join(instr(rng) for _ in range(n))
    if rng.random() < 0.5:
        tail = b"\xe2" + bytes([(-(len(body) + 2)) & 0xFF]) if len(body) < 120 else None
    else:
        tail = None
    if tail is None:
        tail = b"\x49\x0f\x85" + ((-(len(body) + 5)) & 0xFFFF).to_bytes(2, "little")
    return b"\xb9" + rng.randrange(1, 9).to_bytes(2, "little") + body + tail + b"\xf4"


def machine(code, ip, seed, fast):
    ram = np.zeros(1 << 20, np.uint8)
    ram[(CS_SEL << 4) + ip:(CS_SEL << 4) + ip + len(code)] = np.frombuffer(code, np.uint8)
    ram[DS_SEL << 4:(DS_SEL << 4) + 0x400] = np.frombuffer(
        np.random.default_rng(seed).bytes(0x400), np.uint8)
    cpu = CPU(ram)
    cpu.reset()
    for name, sel in (("cs", CS_SEL), ("ds", DS_SEL), ("es", DS_SEL), ("ss", SS_SEL)):
        cpu.load_segment(name, sel, sel << 4, 0xFFFF, 0x93)
    r2 = random.Random(seed)
    for i in range(8):
        cpu._s[i] = r2.getrandbits(32)
    cpu.esi, cpu.ebp, cpu.esp = 0x100, 0x200, 0x8000
    cpu.edi = r2.randrange(0, 0x80)
    cpu.eflags = 2 | (r2.getrandbits(12) & 0x8D5)
    cpu.eip = ip
    cpu.jit = False
    cpu._s[S.NO_FAST] = 0 if fast else 1
    return cpu


def run_both(code, ip, seed, slices):
    """The program on the fast path and on the interpreter, in one run of BUDGET steps or in
    random step-limit slices (EFLAGS written back in the middle of a lazy sequence)."""
    out = []
    for fast in (True, False):
        cpu = machine(code, ip, seed, fast)
        rng = random.Random(seed)
        sts, steps = [], 0
        while steps < BUDGET and (not sts or sts[-1] == Status.STEP_LIMIT):
            sts.append(cpu.run(rng.randrange(1, 40) if slices else BUDGET))
            steps += cpu.steps
        st = cpu.get_state()
        regs = [int(st[n]) for n in (*S.REG_NAMES, "eip", "eflags")]
        out.append((sts, regs, steps, cpu.ram.tobytes(), cpu.trace(64)))
    return out


@pytest.mark.parametrize("slices", [False, True])
def test_fast16_programs_match_the_interpreter(slices):
    rng = random.Random(16 + slices)
    for i in range(150):
        code = program(rng, rng.randrange(3, 20))
        a, b = run_both(code, rng.choice((0x100, 0x7F0, 0xFFF0 - len(code))), i, slices)
        assert a[0] == b[0] and a[1] == b[1], (code.hex(), a[1], b[1])
        assert a[2:] == b[2:], code.hex()


def test_fast16_sees_stores_into_its_code():
    # mov ax,7; mov [0x108],ax (the fast path's store patches the next instruction's
    # immediate: DS = CS); mov bx,1 -> 7; hlt
    code = bytes.fromhex("b80700 89060801 bb0100 f4")
    for fast in (True, False):
        cpu = machine(code, 0x100, 1, fast)
        cpu.load_segment("ds", CS_SEL, CS_SEL << 4, 0xFFFF, 0x93)
        cpu.run(1)                                     # prime the fetch cache
        assert cpu.run(100) == Status.HLT and cpu.ebx & 0xFFFF == 7


def test_fast16_stops_at_breakpoints_without_leaving_the_fast_path():
    """Breakpoints (jumps always have some: the routine's own stops) keep 16-bit code on the
    fast path: the run stops before the breakpoint's instruction, no instruction decoded."""
    code = b"\x40" * 40 + b"\xf4"                      # inc ax x 40; hlt
    cpu = machine(code, 0x100, 1, True)
    cpu.eax = 0
    cpu.run(1)                                         # prime the fetch cache
    cpu.breakpoints = {(CS_SEL << 4) + 0x100 + 30}
    cpu._s[S.D_START] = -7
    assert cpu.run(1000) == Status.BREAK
    assert (cpu.eip, cpu.eax & 0xFFFF, cpu.steps) == (0x100 + 30, 30, 29)
    assert cpu._s[S.D_START] == -7                     # the fast path ran all 29
    assert cpu.run(1000) == Status.HLT and cpu.eax & 0xFFFF == 40   # resumed past it


def test_fast16_breakpoints_match_the_interpreter():
    """Random programs with breakpoints on random instructions, resumed after each stop:
    the same stops, registers, memory and step counts with and without the fast path."""
    rng = random.Random(1616)
    for i in range(60):
        code = program(rng, rng.randrange(3, 20))
        ip = 0x100
        bps = {(CS_SEL << 4) + ip + rng.randrange(len(code)) for _ in range(3)}
        out = []
        for fast in (True, False):
            cpu = machine(code, ip, i, fast)
            cpu.breakpoints = set(bps)
            stops, steps = [], 0
            while steps < BUDGET and len(stops) < 200:
                st = cpu.run(BUDGET)
                steps += cpu.steps
                stops.append((st, cpu.eip))
                if st != Status.BREAK:
                    break
            regs = [int(cpu.get_state()[n]) for n in (*S.REG_NAMES, "eip", "eflags")]
            out.append((stops, regs, steps, cpu.ram.tobytes()))
        assert out[0] == out[1], code.hex()
