"""16-bit code segments: an instruction in a 16-bit code segment must behave
exactly like the same instruction with the operand- and address-size
prefixes toggled in a 32-bit code segment (SDM vol. 1, 3.6: the D flag only
selects the default sizes).

Both sides run on kjcore (the 32-bit side is the one checked against Unicorn
by test_oracle.py), from the same random states, with CS based at the code
so that EIP stays small; registers, EIP, flags, memory and faults must agree.
"""
import random

import numpy as np
from cpu_oracle import CODE, DATA, RAM, gen_case, user_opcodes

from kjcore.cpu import CPU, Status

PREFIXES = (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0, 0xF2, 0xF3)


def toggle_sizes(code):
    i = 0
    pre = []
    while code[i] in PREFIXES + (0x66, 0x67):
        pre.append(code[i])
        i += 1
    out = [b for b in pre if b not in (0x66, 0x67)]
    if 0x66 not in pre:
        out.append(0x66)
    if 0x67 not in pre:
        out.append(0x67)
    return bytes(out) + code[i:]


def run(code, regs, eflags, data, code32):
    ram = np.zeros(RAM, np.uint8)
    ram[:DATA] = data
    ram[CODE:CODE + len(code)] = np.frombuffer(code, np.uint8)
    cpu = CPU(ram)
    access = 0x9B | (0xC00 if code32 else 0x800)
    cpu.load_segment("cs", 0x08, CODE - 0x8000, 0xFFFF, access)
    cpu._s[:8] = regs
    cpu.eip = 0x8000
    cpu.eflags = eflags
    st = cpu.run(1)
    return st, cpu


def test_16bit_code_matches_prefixed_32bit_code():
    rng = random.Random(16)
    # CALL pushes the (length-dependent) return address: compared elsewhere.
    ops = [op for op in user_opcodes() if op not in (0xE8, 0xFF)]
    data = np.frombuffer(random.Random(3).randbytes(DATA), np.uint8).copy()
    checked = 0
    for _ in range(4000):
        case = gen_case(rng, rng.choice(ops))
        code16 = toggle_sizes(case.code)          # same effective operand/address sizes
        st32, a = run(case.code, case.regs, case.eflags, data, True)
        st16, b = run(code16, case.regs, case.eflags, data, False)
        assert st16 == st32, case
        if st32 == Status.TRIPLE_FAULT:
            assert a.fault[:2] == b.fault[:2], case
            continue
        checked += 1
        assert list(a._s[:8]) == list(b._s[:8]), (case, code16.hex())
        assert a.eflags == b.eflags, (case, code16.hex())
        # EIP: the 16-bit form is longer or shorter by the prefixes it gained/lost.
        d = len(code16) - len(case.code)
        assert a.eip == b.eip or (a.eip + d - b.eip) & 0xFFFF == 0, (case, code16.hex())
        assert np.array_equal(a.ram[:DATA], b.ram[:DATA]), case
    assert checked > 2000
