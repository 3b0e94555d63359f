"""The opcode table: one row per opcode form, the single source of every decoder.

A *form* is an opcode (one byte, or ``0x0F`` and a second byte, written
``0x100 | byte``) and, where the instruction depends on it, the ModRM reg
field (``/r``).  Each row (:class:`Form`) says

* ``family``: the handler module that executes it (``core.py`` dispatches on
  it; the handler re-derives the operation from the opcode bits);
* ``modrm`` and ``imm``: whether a ModRM byte follows (``"reg"``: one whose
  mod field is ignored, both operands being registers: MOV to and from
  CRn/DRn, always three bytes) and which immediate
  (``b`` byte, ``w`` word, ``z`` word or dword by operand size, ``moffs``
  offset by address size, ``enter`` word and byte, ``far`` offset by operand
  size and a selector);
* ``lock``: LOCK is legal with a memory destination (else #UD);
* ``fast``: the fast path's class of the first byte when it runs the form
  with register operands, ``fast_mem``: it also runs the memory form;
* ``loop``: the translation tier compiles it: ``"reg"`` with ModRM mod 3 only,
  ``"mem"`` with a memory operand only (LEA), ``"any"`` with either (or no ModRM).

Everything else is derived from the rows at import time: the compiled
decoder's ``OP_FAMILY``/``OP_FLAGS`` (one entry per opcode: ModRM, immediate
kind, the reg fields LOCK is legal with), the fast path's first-byte tables
``FAST_CLASS``, ``FAST_LENGTH`` (of the register form) and ``MEMFORM``, and the
Python decoder :func:`decode_insn` that the translation tier and the tests use
for lengths and operands.  Numba freezes these arrays into the compiled code
as constants: after editing a row, clear ``NUMBA_CACHE_DIR``.

Opcodes without a row are #UD (family ``ud``); a form whose reg field has no
row goes to its opcode's family, whose handler raises #UD.
"""
from typing import NamedTuple

import numpy as np

FAMILY_NAMES = ("ud", "alu", "incdec", "stack", "jump", "grp5", "grp3", "shift", "mov",
                "string", "flags", "bcd", "bits", "cond", "atomic", "io", "int", "far",
                "sys", "fpu", "muldiv")
(F_UD, F_ALU, F_INCDEC, F_STACK, F_JUMP, F_GRP5, F_GRP3, F_SHIFT, F_MOV, F_STRING,
 F_FLAGS, F_BCD, F_BITS, F_COND, F_ATOMIC, F_IO, F_INT, F_FAR, F_SYS, F_FPU,
 F_MULDIV) = range(len(FAMILY_NAMES))

#: Immediate kinds of OP_FLAGS (I_GRP3: F6/F7, an immediate for /0 and /1 only).
IMM_KINDS = ("", "b", "w", "z", "moffs", "enter", "far", "grp3")
I_NONE, I_B, I_W, I_Z, I_MOFFS, I_ENTER, I_FAR, I_GRP3 = range(len(IMM_KINDS))
#: OP_FLAGS layout: bit 0 ModRM, bit 1 its mod field ignored (registers only),
#: bits 4-7 immediate kind, bits 8-15 the reg fields (bit r for /r) with which
#: LOCK is legal.
O_MODRM = 1
O_MODREG = 2
IMM_SHIFT = 4
LOCK_SHIFT = 8

#: Fast-path classes of a first byte (``fastpath.fast_exec_u`` switches on them).
#: Classes from "alui" on run in ``fastforms.fast_forms``.
FAST_CLASSES = ("none", "alu", "inc", "dec", "stack", "jcc", "0f", "movi", "grp1", "test",
                "movst", "movld", "lea", "f7", "nop", "jmp8", "loop", "jmp32", "callret",
                "alui", "shift", "imul", "byte")
(K_NONE, K_ALU, K_INC, K_DEC, K_STACK, K_JCC, K_0F, K_MOVI, K_GRP1, K_TEST, K_MOVST, K_MOVLD,
 K_LEA, K_F7, K_NOP, K_JMP8, K_LOOP, K_JMP32, K_CALLRET, K_ALUI, K_SHIFT, K_IMUL,
 K_BYTE) = range(len(FAST_CLASSES))

LOOP_RULES = ("reg", "mem", "any")
PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))


class Form(NamedTuple):
    """One opcode form (see the module docstring for the columns)."""
    op: int
    reg: object          # None, or the ModRM reg field 0-7
    name: str
    family: int
    modrm: object        # False, True or "reg"
    imm: str
    lock: bool
    fast: object         # None or a FAST_CLASSES name
    fast_mem: bool
    loop: object         # None or a LOOP_RULES name


def _forms():
    rows = []

    def row(ops, name, family, modrm=False, imm="", lock=False, fast=None, fast_mem=False,
            loop=None):
        """One form per opcode of ``ops``, whatever the reg field."""
        for op in ops:
            rows.append(Form(op, None, name, family, modrm, imm, lock, fast, fast_mem, loop))

    def group(op, names, family, imm="", lock=(), fast=None, fast_regs=range(8), fast_mem=(),
              loop=()):
        """A ModRM group: ``names[r]`` for /r (None: no form); the other arguments
        name the reg fields a property holds for."""
        for r, name in enumerate(names):
            if name is not None:
                rows.append(Form(op, r, name, family, True, imm(r) if callable(imm) else imm,
                                 r in lock, fast if r in fast_regs else None, r in fast_mem,
                                 "any" if r in loop else None))

    alu = ("ADD", "OR", "ADC", "SBB", "AND", "SUB", "XOR", "CMP")
    for i, n in enumerate(alu):
        b = 8 * i
        byte = None if n in ("ADC", "SBB") else "byte"
        row([b], f"{n} Eb,Gb", F_ALU, True, lock=n != "CMP", fast=byte, loop="any")
        row([b + 1], f"{n} Ev,Gv", F_ALU, True, lock=n != "CMP", fast="alu",
            fast_mem=n == "CMP", loop="any")
        row([b + 2], f"{n} Gb,Eb", F_ALU, True, fast=byte, loop="any")
        row([b + 3], f"{n} Gv,Ev", F_ALU, True, fast="alu", fast_mem=True, loop="any")
        row([b + 4], f"{n} AL,Ib", F_ALU, imm="b", loop="any")
        row([b + 5], f"{n} eAX,Iz", F_ALU, imm="z", fast="alui", loop="any")
    for op, n in ((0x06, "PUSH ES"), (0x07, "POP ES"), (0x0E, "PUSH CS"), (0x16, "PUSH SS"),
                  (0x17, "POP SS"), (0x1E, "PUSH DS"), (0x1F, "POP DS")):
        row([op], n, F_STACK)
    for op, n in ((0x27, "DAA"), (0x2F, "DAS"), (0x37, "AAA"), (0x3F, "AAS")):
        row([op], n, F_BCD)
    row(range(0x40, 0x48), "INC r", F_INCDEC, fast="inc", loop="any")
    row(range(0x48, 0x50), "DEC r", F_INCDEC, fast="dec", loop="any")
    row(range(0x50, 0x58), "PUSH r", F_STACK, fast="stack", loop="any")
    row(range(0x58, 0x60), "POP r", F_STACK, fast="stack", loop="any")
    row([0x60], "PUSHA", F_STACK)
    row([0x61], "POPA", F_STACK)
    row([0x62], "BOUND Gv,Ma", F_INT, True)
    row([0x63], "ARPL Ew,Gw", F_SYS, True)
    row([0x68], "PUSH Iz", F_STACK, imm="z")
    row([0x69], "IMUL Gv,Ev,Iz", F_MULDIV, True, "z", fast="imul", loop="any")
    row([0x6A], "PUSH Ib", F_STACK, imm="b")
    row([0x6B], "IMUL Gv,Ev,Ib", F_MULDIV, True, "b", fast="imul", loop="any")
    for op, n in ((0x6C, "INSB"), (0x6D, "INS"), (0x6E, "OUTSB"), (0x6F, "OUTS")):
        row([op], n, F_STRING)
    row(range(0x70, 0x80), "Jcc Jb", F_JUMP, imm="b", fast="jcc", loop="any")
    for op, imm in ((0x80, "b"), (0x81, "z"), (0x82, "b"), (0x83, "b")):
        w = "Eb" if op & 1 == 0 else "Ev"
        i = {"b": "Ib", "z": "Iz"}[imm]
        fast = "grp1" if op in (0x81, 0x83) else None
        group(op, [f"{n} {w},{i}" for n in alu], F_ALU, imm, lock=range(7), fast=fast,
              fast_mem=(7,) if op == 0x83 else (), loop=range(8) if op != 0x82 else ())
    row([0x84], "TEST Eb,Gb", F_ALU, True, fast="byte", loop="any")
    row([0x85], "TEST Ev,Gv", F_ALU, True, fast="test", fast_mem=True, loop="any")
    row([0x86], "XCHG Eb,Gb", F_MOV, True, lock=True, loop="reg")
    row([0x87], "XCHG Ev,Gv", F_MOV, True, lock=True, loop="reg")
    row([0x88], "MOV Eb,Gb", F_MOV, True, fast="byte", fast_mem=True, loop="any")
    row([0x89], "MOV Ev,Gv", F_MOV, True, fast="movst", fast_mem=True, loop="any")
    row([0x8A], "MOV Gb,Eb", F_MOV, True, fast="byte", fast_mem=True, loop="any")
    row([0x8B], "MOV Gv,Ev", F_MOV, True, fast="movld", fast_mem=True, loop="any")
    row([0x8C], "MOV Ev,Sw", F_MOV, True)
    row([0x8D], "LEA Gv,M", F_MOV, True, fast="lea", loop="mem")
    row([0x8E], "MOV Sw,Ew", F_MOV, True)
    row([0x8F], "POP Ev", F_STACK, True)
    row([0x90], "NOP", F_MOV, fast="nop", loop="any")
    row(range(0x91, 0x98), "XCHG eAX,r", F_MOV, loop="any")
    row([0x98], "CBW/CWDE", F_MOV, loop="any")
    row([0x99], "CWD/CDQ", F_MOV, loop="any")
    for op, n in ((0x9E, "SAHF"), (0x9F, "LAHF")):
        row([op], n, F_MOV)
    row([0x9A], "CALL Ap", F_FAR, imm="far")
    row([0x9B], "WAIT", F_FPU)
    row([0x9C], "PUSHF", F_STACK)
    row([0x9D], "POPF", F_STACK)
    for op, n in ((0xA0, "MOV AL,Ob"), (0xA1, "MOV eAX,Ov"), (0xA2, "MOV Ob,AL"),
                  (0xA3, "MOV Ov,eAX")):
        row([op], n, F_MOV, imm="moffs")
    for op, n in ((0xA4, "MOVSB"), (0xA5, "MOVS"), (0xA6, "CMPSB"), (0xA7, "CMPS"),
                  (0xAA, "STOSB"), (0xAB, "STOS"), (0xAC, "LODSB"), (0xAD, "LODS"),
                  (0xAE, "SCASB"), (0xAF, "SCAS")):
        row([op], n, F_STRING)
    row([0xA8], "TEST AL,Ib", F_ALU, imm="b", loop="any")
    row([0xA9], "TEST eAX,Iz", F_ALU, imm="z", fast="alui", loop="any")
    row(range(0xB0, 0xB8), "MOV r8,Ib", F_MOV, imm="b", loop="any")
    row(range(0xB8, 0xC0), "MOV r,Iz", F_MOV, imm="z", fast="movi", loop="any")
    shifts = ("ROL", "ROR", "RCL", "RCR", "SHL", "SHR", "SAL", "SAR")
    by_const = (0, 1, 4, 5, 6, 7)                        # compiled: not RCL/RCR
    group(0xC0, [f"{n} Eb,Ib" for n in shifts], F_SHIFT, "b")
    group(0xC1, [f"{n} Ev,Ib" for n in shifts], F_SHIFT, "b", fast="shift", loop=by_const)
    row([0xC2], "RET Iw", F_JUMP, imm="w")
    row([0xC3], "RET", F_JUMP, fast="callret", loop="any")
    row([0xC4], "LES Gv,Mp", F_FAR, True)
    row([0xC5], "LDS Gv,Mp", F_FAR, True)
    row([0xC6], "MOV Eb,Ib", F_MOV, True, "b", loop="any")
    row([0xC7], "MOV Ev,Iz", F_MOV, True, "z", loop="any")
    row([0xC8], "ENTER Iw,Ib", F_STACK, imm="enter")
    row([0xC9], "LEAVE", F_STACK)
    row([0xCA], "RETF Iw", F_FAR, imm="w")
    row([0xCB], "RETF", F_FAR)
    row([0xCC], "INT3", F_INT)
    row([0xCD], "INT Ib", F_INT, imm="b")
    row([0xCE], "INTO", F_INT)
    row([0xCF], "IRET", F_INT)
    group(0xD0, [f"{n} Eb,1" for n in shifts], F_SHIFT)
    group(0xD1, [f"{n} Ev,1" for n in shifts], F_SHIFT, fast="shift", loop=by_const)
    group(0xD2, [f"{n} Eb,CL" for n in shifts], F_SHIFT)
    group(0xD3, [f"{n} Ev,CL" for n in shifts], F_SHIFT, fast="shift")
    row([0xD4], "AAM Ib", F_BCD, imm="b")
    row([0xD5], "AAD Ib", F_BCD, imm="b")
    row([0xD7], "XLAT", F_MOV)
    row(range(0xD8, 0xE0), "ESC (x87)", F_FPU, True)
    row([0xE0], "LOOPNE Jb", F_JUMP, imm="b")
    row([0xE1], "LOOPE Jb", F_JUMP, imm="b")
    row([0xE2], "LOOP Jb", F_JUMP, imm="b", fast="loop", loop="any")
    row([0xE3], "JECXZ Jb", F_JUMP, imm="b")
    for op, n in ((0xE4, "IN AL,Ib"), (0xE5, "IN eAX,Ib"), (0xE6, "OUT Ib,AL"),
                  (0xE7, "OUT Ib,eAX")):
        row([op], n, F_IO, imm="b")
    row([0xE8], "CALL Jz", F_JUMP, imm="z", fast="callret", loop="any")
    row([0xE9], "JMP Jz", F_JUMP, imm="z", fast="jmp32", loop="any")
    row([0xEA], "JMP Ap", F_FAR, imm="far")
    row([0xEB], "JMP Jb", F_JUMP, imm="b", fast="jmp8", loop="any")
    for op, n in ((0xEC, "IN AL,DX"), (0xED, "IN eAX,DX"), (0xEE, "OUT DX,AL"),
                  (0xEF, "OUT DX,eAX")):
        row([op], n, F_IO)
    row([0xF4], "HLT", F_SYS)
    row([0xF5], "CMC", F_FLAGS)
    grp3 = ("TEST", "TEST", "NOT", "NEG", "MUL", "IMUL", "DIV", "IDIV")   # /1: TEST alias
    group(0xF6, [f"{n} Eb" + (",Ib" if r < 2 else "") for r, n in enumerate(grp3)], F_GRP3,
          lambda r: "b" if r < 2 else "", lock=(2, 3), loop=range(4))
    group(0xF7, [f"{n} Ev" + (",Iz" if r < 2 else "") for r, n in enumerate(grp3)], F_GRP3,
          lambda r: "z" if r < 2 else "", lock=(2, 3), fast="f7", fast_regs=range(4),
          loop=range(4))
    for op, n in ((0xF8, "CLC"), (0xF9, "STC"), (0xFA, "CLI"), (0xFB, "STI"), (0xFC, "CLD"),
                  (0xFD, "STD")):
        row([op], n, F_FLAGS)
    group(0xFE, ["INC Eb", "DEC Eb"], F_GRP5, lock=(0, 1), loop=(0, 1))
    group(0xFF, ["INC Ev", "DEC Ev", "CALL Ev", "CALLF Mp", "JMP Ev", "JMPF Mp", "PUSH Ev"],
          F_GRP5, lock=(0, 1), loop=(0, 1))

    t = 0x100
    group(t + 0x00, ["SLDT Ew", "STR Ew", "LLDT Ew", "LTR Ew", "VERR Ew", "VERW Ew"], F_SYS)
    group(t + 0x01, ["SGDT Ms", "SIDT Ms", "LGDT Ms", "LIDT Ms", "SMSW Ew", None, "LMSW Ew",
                     "INVLPG M"], F_SYS)
    row([t + 0x02], "LAR Gv,Ew", F_SYS, True)
    row([t + 0x03], "LSL Gv,Ew", F_SYS, True)
    for op, n in ((0x06, "CLTS"), (0x08, "INVD"), (0x09, "WBINVD"), (0x0B, "UD2"),
                  (0x30, "WRMSR"), (0x31, "RDTSC"), (0x32, "RDMSR"), (0xA2, "CPUID")):
        row([t + op], n, F_SYS)
    row(range(t + 0x18, t + 0x20), "NOP Ev (hint)", F_MOV, True)
    for op, n in ((0x20, "MOV Rd,Cd"), (0x21, "MOV Rd,Dd"), (0x22, "MOV Cd,Rd"),
                  (0x23, "MOV Dd,Rd")):
        row([t + op], n, F_SYS, "reg")
    row(range(t + 0x40, t + 0x50), "CMOVcc Gv,Ev", F_COND, True, loop="any")
    row(range(t + 0x80, t + 0x90), "Jcc Jz", F_JUMP, imm="z", fast="0f", loop="any")
    row(range(t + 0x90, t + 0xA0), "SETcc Eb", F_COND, True, loop="any")
    for op, n in ((0xA0, "PUSH FS"), (0xA1, "POP FS"), (0xA8, "PUSH GS"), (0xA9, "POP GS")):
        row([t + op], n, F_STACK)
    row([t + 0xA3], "BT Ev,Gv", F_BITS, True)
    row([t + 0xA4], "SHLD Ev,Gv,Ib", F_SHIFT, True, "b")
    row([t + 0xA5], "SHLD Ev,Gv,CL", F_SHIFT, True)
    row([t + 0xAB], "BTS Ev,Gv", F_BITS, True, lock=True)
    row([t + 0xAC], "SHRD Ev,Gv,Ib", F_SHIFT, True, "b")
    row([t + 0xAD], "SHRD Ev,Gv,CL", F_SHIFT, True)
    row([t + 0xAF], "IMUL Gv,Ev", F_MULDIV, True, fast="0f", loop="any")
    row([t + 0xB0], "CMPXCHG Eb,Gb", F_ATOMIC, True, lock=True)
    row([t + 0xB1], "CMPXCHG Ev,Gv", F_ATOMIC, True, lock=True)
    row([t + 0xB2], "LSS Gv,Mp", F_FAR, True)
    row([t + 0xB3], "BTR Ev,Gv", F_BITS, True, lock=True)
    row([t + 0xB4], "LFS Gv,Mp", F_FAR, True)
    row([t + 0xB5], "LGS Gv,Mp", F_FAR, True)
    row([t + 0xB6], "MOVZX Gv,Eb", F_MOV, True, fast="0f", fast_mem=True, loop="any")
    row([t + 0xB7], "MOVZX Gv,Ew", F_MOV, True, fast="0f", fast_mem=True, loop="any")
    group(t + 0xBA, [None, None, None, None, "BT Ev,Ib", "BTS Ev,Ib", "BTR Ev,Ib",
                     "BTC Ev,Ib"], F_BITS, "b", lock=(5, 6, 7))
    row([t + 0xBB], "BTC Ev,Gv", F_BITS, True, lock=True)
    row([t + 0xBC], "BSF Gv,Ev", F_BITS, True)
    row([t + 0xBD], "BSR Gv,Ev", F_BITS, True)
    row([t + 0xBE], "MOVSX Gv,Eb", F_MOV, True, fast="0f", fast_mem=True, loop="any")
    row([t + 0xBF], "MOVSX Gv,Ew", F_MOV, True, fast="0f", fast_mem=True, loop="any")
    row([t + 0xC0], "XADD Eb,Gb", F_ATOMIC, True, lock=True)
    row([t + 0xC1], "XADD Ev,Gv", F_ATOMIC, True, lock=True)
    group(t + 0xC7, [None, "CMPXCHG8B Mq"], F_ATOMIC, lock=(1,))
    row(range(t + 0xC8, t + 0xD0), "BSWAP r", F_BITS)
    return tuple(rows)


#: Every opcode form, in opcode order.
FORMS = _forms()
_BY_OP = tuple(tuple(f for f in FORMS if f.op == op) for op in range(512))


def forms_of(op):
    """The rows of opcode ``op`` (0x100 | second byte for 0F xx)."""
    return list(_BY_OP[op])


def _one(rows, column):
    """The value of ``column`` shared by ``rows`` (a row table error otherwise)."""
    values = {getattr(f, column) for f in rows}
    if len(values) != 1:
        raise ValueError(f"opcode {rows[0].op:#x}: rows disagree on {column}: {values}")
    return values.pop()


def _imm_kind(rows):
    """I_* of an opcode's rows: their common immediate, or I_GRP3 (F6/F7)."""
    by_reg = {f.reg: f.imm for f in rows}
    if len(set(by_reg.values())) == 1:
        return IMM_KINDS.index(rows[0].imm)
    if all((by_reg[r] != "") == (r < 2) for r in by_reg) and rows[0].op in (0xF6, 0xF7):
        return I_GRP3
    raise ValueError(f"opcode {rows[0].op:#x}: immediates differ by reg field")


def _decoder_tables():
    """OP_FAMILY and OP_FLAGS (512 entries: one-byte opcodes, then 0F xx)."""
    fam = np.zeros(512, np.int64)
    flags = np.zeros(512, np.int64)
    for op in sorted({f.op for f in FORMS}):
        rows = forms_of(op)
        fam[op] = _one(rows, "family")
        modrm = _one(rows, "modrm")
        locks = 0
        for f in rows:
            if f.lock:
                locks |= 0xFF if f.reg is None else 1 << f.reg
        if locks and not modrm:
            raise ValueError(f"opcode {op:#x}: LOCK without a memory operand")
        flags[op] = ((O_MODRM if modrm else 0) | (O_MODREG if modrm == "reg" else 0)
                     | (_imm_kind(rows) << IMM_SHIFT) | (locks << LOCK_SHIFT))
    return fam, flags


#: Family (F_*) of each opcode, and its flag word (O_MODRM, I_* << IMM_SHIFT,
#: reg-field LOCK mask << LOCK_SHIFT).  Frozen into ``decode.decode``.
OP_FAMILY, OP_FLAGS = _decoder_tables()


def _imm_bytes(kind, osz, asz):
    return {"": 0, "b": 1, "w": 2, "z": osz, "moffs": asz, "enter": 3, "far": osz + 2}[kind]


def fast_length(op, reg=None):
    """Length of the register form of opcode ``op`` (/``reg``) in 32-bit code without
    prefixes."""
    f = next(f for f in _BY_OP[op] if f.reg is None or f.reg == reg)
    return (2 if op >> 8 else 1) + bool(f.modrm) + _imm_bytes(f.imm, 4, 4)


def _fast_tables():
    """FAST_CLASS, FAST_LENGTH, MEMFORM by first byte; FAST_0F by second byte of 0F xx."""
    cls = np.zeros(256, np.int8)
    length = [0] * 256
    mem = np.zeros(256, np.bool_)
    second = np.zeros(256, np.bool_)
    for b in range(256):
        rows = [f for f in FORMS if f.fast is not None and (f.op == b or f.op >> 8 and b == 0x0F)]
        if not rows:
            continue
        cls[b] = FAST_CLASSES.index(_one(rows, "fast"))
        length[b] = fast_length(rows[0].op, rows[0].reg)
        mem[b] = any(f.fast_mem for f in rows)
    for f in FORMS:
        if f.fast is not None and f.op >> 8 and f.modrm:
            second[f.op & 0xFF] = True
    return cls, tuple(length), mem, second


#: The fast path's tables by first byte: its class (K_*; K_NONE: not handled),
#: the length of the register form of its first row in 32-bit code without prefixes
#: (0: not handled; other rows: :func:`fast_length`), and whether the memory form of
#: some row runs on the fast path; FAST_0F: the 0F xx forms with a ModRM that
#: ``fastforms.fast_forms`` runs (the other 0F rows of the fast column are Jcc).
FAST_CLASS, FAST_LENGTH, MEMFORM, FAST_0F = _fast_tables()


class Insn(NamedTuple):
    """One decoded instruction (:func:`decode_insn`)."""
    form: Form
    length: int
    prefixes: bytes
    osz: int             # operand size in bytes
    asz: int             # address size in bytes
    mod: int             # 3 without a ModRM byte
    reg: int
    rm: int
    base: int            # memory operand: base and index registers (-1: none),
    index: int           # scale (shift count) and displacement (unsigned, asz bytes)
    scale: int
    disp: int
    imm: int             # immediate, unsigned (ENTER: the word; far pointer: the offset)
    imm2: int            # ENTER's byte, a far pointer's selector


#: 16-bit addressing: (base, index) registers of ModRM rm (rm 6 with mod 0: disp16 alone).
_RM16 = ((3, 6), (3, 7), (5, 6), (5, 7), (6, -1), (7, -1), (5, -1), (3, -1))


def _le(code, o, n):
    return int.from_bytes(code[o:o + n], "little") if o + n <= len(code) else None


def _address(code, o, mod, rm, asz):
    """(base, index, scale, disp, offset after the operand) of a ModRM memory operand,
    or None if ``code`` ends first."""
    index, scale, dsize = -1, 0, (0, 1, asz)[mod]
    if asz == 2:
        base, index = _RM16[rm]
        if mod == 0 and rm == 6:
            base, dsize = -1, 2
    elif rm == 4:
        if o >= len(code):
            return None
        sib = code[o]
        o += 1
        base, index, scale = sib & 7, (sib >> 3) & 7, sib >> 6
        index = -1 if index == 4 else index
        if base == 5 and mod == 0:
            base, dsize = -1, 4
    elif rm == 5 and mod == 0:
        base, dsize = -1, 4
    else:
        base = rm
    disp = _le(code, o, dsize)
    if disp is None:
        return None
    if dsize == 1 and disp & 0x80:
        disp = (disp - 0x100) & ((1 << 8 * asz) - 1)
    return base, index, scale, disp, o + dsize


def decode_insn(code, o=0, code32=True):
    """The instruction at ``code[o:]`` (bytes), decoded from the table: an
    :class:`Insn`, or None if it has no row (#UD) or ``code`` ends first.

    The compiled decoder (``decode.decode``) reads the same rows through
    ``OP_FAMILY``/``OP_FLAGS``; this one serves the translation tier and tests.
    """
    start = o
    dflt = 4 if code32 else 2
    osz = asz = dflt
    while o < len(code) and code[o] in PREFIXES:
        if code[o] == 0x66:
            osz = 6 - dflt
        elif code[o] == 0x67:
            asz = 6 - dflt
        o += 1
    if o - start > 14 or o >= len(code):
        return None
    prefixes = bytes(code[start:o])
    op = code[o]
    o += 1
    if op == 0x0F:
        if o >= len(code):
            return None
        op = 0x100 | code[o]
        o += 1
    rows = _BY_OP[op]
    if not rows:
        return None
    mod, reg, rm, base, index, scale, disp = 3, 0, 0, -1, -1, 0, 0
    if rows[0].modrm:
        if o >= len(code):
            return None
        m = code[o]
        o += 1
        mod, reg, rm = m >> 6, (m >> 3) & 7, m & 7
        if rows[0].modrm == "reg":
            mod = 3
        elif mod != 3:
            a = _address(code, o, mod, rm, asz)
            if a is None:
                return None
            base, index, scale, disp, o = a
    form = next((f for f in rows if f.reg is None or f.reg == reg), None)
    if form is None:
        return None
    imm = imm2 = 0
    n = _imm_bytes(form.imm, osz, asz)
    if n:
        first = {"enter": 2, "far": osz}.get(form.imm, n)
        imm, imm2 = _le(code, o, first), _le(code, o + first, n - first)
        if imm is None or imm2 is None:
            return None
    o += n
    if o - start > 15:
        return None
    return Insn(form, o - start, prefixes, osz, asz, mod, reg, rm, base, index, scale, disp,
                imm, imm2)


def loop_compilable(insn):
    """The translation tier compiles this decoded instruction: its row's ``loop``
    rule allows its ModRM form, and it has no prefix."""
    rule = insn.form.loop
    if insn.prefixes or rule is None:
        return False
    return rule == "any" or (rule == "reg") == (insn.mod == 3)
