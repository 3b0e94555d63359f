"""The opcode table (kjcore/cpu/isa.py) is consistent, and every decoder reads it.

The rows are unique; every entry of the compiled decoder's arrays and of the
fast path's first-byte table comes from a row; the lengths the table gives
agree with capstone's on random encodings of every form; the translation tier
compiles exactly the forms the table's ``loop`` column names.
"""
import random

import numpy as np
import pytest

from kjcore.cpu import CPU, Status, isa, loopjit
from kjcore.cpu.isa import FORMS, decode_insn, forms_of


def test_rows_are_unique_forms():
    seen = set()
    for f in FORMS:
        assert (f.op, f.reg) not in seen, f
        seen.add((f.op, f.reg))
        assert 0 <= f.op < 512 and f.op != 0x0F and f.op not in isa.PREFIXES, f
        assert f.reg is None or f.reg in range(8)
        assert f.imm in isa.IMM_KINDS and f.imm != "grp3"
        assert f.fast is None or f.fast in isa.FAST_CLASSES
        assert f.loop is None or f.loop in isa.LOOP_RULES
        assert f.loop in (None, "any") or f.modrm, f   # "reg" and "mem" need a ModRM
        assert f.reg is None or f.modrm, f
    for op in {f.op for f in FORMS}:
        regs = [f.reg for f in forms_of(op)]
        assert regs == [None] or None not in regs, hex(op)


def test_decoder_arrays_come_from_rows():
    ops = {f.op for f in FORMS}
    for op in range(512):
        assert (op in ops) == (isa.OP_FAMILY[op] != isa.F_UD or isa.OP_FLAGS[op] != 0), hex(op)
    for f in FORMS:
        fl = int(isa.OP_FLAGS[f.op])
        assert isa.OP_FAMILY[f.op] == f.family
        assert bool(fl & isa.O_MODRM) == bool(f.modrm)
        assert bool(fl & isa.O_MODREG) == (f.modrm == "reg")
        kind = (fl >> isa.IMM_SHIFT) & 15
        if kind == isa.I_GRP3:
            assert f.op in (0xF6, 0xF7) and (f.imm != "") == (f.reg < 2)
        else:
            assert isa.IMM_KINDS[kind] == f.imm
        regs = range(8) if f.reg is None else [f.reg]
        for r in regs:
            assert ((fl >> isa.LOCK_SHIFT) >> r) & 1 == f.lock, (f, r)


def test_fast_table_comes_from_rows():
    for b in range(256):
        rows = [f for f in FORMS if f.fast and (f.op == b or (f.op >> 8 and b == 0x0F))]
        assert isa.FAST_CLASSES[isa.FAST_CLASS[b]] == (rows[0].fast if rows else "none"), hex(b)
        assert isa.MEMFORM[b] == any(f.fast_mem for f in rows)
        if rows:
            # The register form, with room for the operand bytes the fast path
            # reads (its step loop guarantees 8 bytes of code window).
            code = bytes([b]) + bytes([0x80 if b == 0x0F else 0xC0 | (rows[0].reg or 0) << 3]) \
                + bytes(6)
            assert decode_insn(code).length == isa.FAST_LENGTH[b] <= 8
        else:
            assert isa.FAST_LENGTH[b] == 0


def test_fast_path_length_constants_cover_their_classes():
    """fastpath and fastforms compile one length constant per class (per byte for
    81/83, E8, the shifts and IMUL): every byte of the class must have that length."""
    length = isa.FAST_LENGTH
    by_class = {}
    for b in range(256):
        if isa.FAST_CLASS[b] not in (isa.K_NONE, isa.K_GRP1, isa.K_CALLRET, isa.K_SHIFT,
                                     isa.K_IMUL):
            by_class.setdefault(isa.FAST_CLASS[b], set()).add(length[b])
    assert all(len(v) == 1 for v in by_class.values()), by_class
    assert length[0x40] == length[0x48]                     # INC and DEC share N_INC
    assert length[0xD1] == length[0xD3]                     # shifts by 1 and CL share N_D1
    # F7's other rows (NOT, NEG) share one length, and so do the 0F xx forms with a ModRM.
    assert isa.fast_length(0xF7, 2) == isa.fast_length(0xF7, 3)
    assert {isa.fast_length(0x100 | b) for b in range(256) if isa.FAST_0F[b]} == {3}
    # Memory forms: the register form's ModRM replaced by the operand's bytes.
    assert {length[b] for b in range(256) if isa.MEMFORM[b] and b not in (0x0F, 0x83)} \
        == {length[0x8D]}


def _encoding(rng, f, mod=None, prefixes=True):
    """A random encoding of form ``f``: prefixes 66/67 sometimes, a ModRM with
    the row's reg field (and mod ``mod`` if given), random bytes after."""
    pre = bytes(p for p in (0x66, 0x67) if prefixes and rng.random() < 0.3)
    op = bytes([0x0F, f.op & 0xFF]) if f.op >= 0x100 else bytes([f.op])
    tail = bytearray(rng.getrandbits(8) for _ in range(14))
    if f.modrm:
        m = tail[0]
        if f.reg is not None:
            m = (m & 0xC7) | f.reg << 3
        if mod is not None:
            m = (m & 0x3F) | mod << 6
        tail[0] = m
    return pre + op + bytes(tail)


def test_lengths_match_capstone():
    capstone = pytest.importorskip("capstone")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    rng = random.Random(10)
    compared = 0
    for f in FORMS:
        for _ in range(30):
            code = _encoding(rng, f)
            theirs = next(md.disasm(code, 0, 1), None)
            if theirs is None:
                continue            # e.g. LEA/LES with a register operand: capstone refuses
            ours = decode_insn(code)
            assert ours is not None and ours.form == f, code.hex()
            assert ours.length == theirs.size, (code.hex(), f.name, theirs.mnemonic)
            compared += 1
    assert compared > 0.8 * 30 * len(FORMS)


def test_mov_cr_ignores_mod():
    """0F 20-23: the mod field is ignored (SDM: MOV to/from control registers),
    so ``0F 20 05`` is ``mov ebp, cr0`` in three bytes, not a memory form."""
    ram = np.zeros(1 << 16, np.uint8)
    ram[0x1000:0x1008] = np.frombuffer(bytes.fromhex("0f2005f4909090f4"), np.uint8)
    cpu = CPU(ram)
    cpu.eip = 0x1000
    assert cpu.run(10) == Status.HLT
    assert cpu.eip == 0x1004 and cpu.ebp == cpu.cr0


def _loop_case(rng, f, mod, prefixes):
    """(code, expected): form ``f`` as a loop body ending in a branch back (a
    branch form is the branch itself), and whether the table says it compiles."""
    code = _encoding(rng, f, mod, prefixes)
    ins = decode_insn(code)
    if ins is None:
        return None
    insn = code[:ins.length]
    rule = f.loop
    # no prefix, but 0x66 (16-bit operands) on the forms other than branches, LEA, shifts
    # and the stack's; a RET alone never loops (it needs a CALL before it)
    operand16 = ins.prefixes == b"\x66" and f.family != isa.F_JUMP and f.op not in (
        0x8D, 0xC1, 0xD1, *range(0x50, 0x60))
    expected = (not ins.prefixes or operand16) and rule is not None and (
        rule == "any" or (rule == "reg") == (ins.mod == 3)) and f.op != 0xC3
    if f.family == isa.F_JUMP and rule is not None:
        width = 1 if f.imm == "b" else ins.osz        # the displacement ends the instruction
        rel = (-ins.length) & ((1 << 8 * width) - 1)
        code = insn[:-width] + rel.to_bytes(width, "little")
    else:
        code = insn + bytes([0x75, (-(len(insn) + 2)) & 0xFF])
    return code + bytes(16), expected


def test_loop_tier_compiles_exactly_the_loop_column():
    rng = random.Random(11)
    accepted = set()
    for f in FORMS:
        for mod in ((3, 0, 1, 2) if f.modrm else (None,)):
            for i in range(4):
                case = _loop_case(rng, f, mod, prefixes=i % 2 == 1)
                if case is None:
                    continue
                code, expected = case
                got = loopjit.decode_region(code) is not None
                assert got == expected, (code.hex(), f)
                if got:
                    accepted.add((f.op, f.reg))
    assert accepted == {(f.op, f.reg) for f in FORMS if f.loop} - {(0xC3, None)}
