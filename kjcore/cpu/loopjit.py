"""Translation tier: hot regions of guest code compiled to host code with LLVM.

An interpreter pays for every instruction's decode and dispatch; a compiler
pays once.  When the step loop has seen a loop head (the target of a taken
backward branch, ``hotloop.py`` counts them) often enough, it stops with
``ST_JIT_REQUEST``; :func:`install` decodes the *region* there
(:func:`decode_region`: the basic blocks reachable from the head inside its
code page, nested loops, forward branches and called functions included, up to
the instructions the tier does not compile and the branches that leave), emits
LLVM IR for it (``regionir.py``, ``loopir.py``) with exact EFLAGS, and
compiles it with the LLVM that Numba already loads (llvmlite).  The step loop
then calls that code whenever a backward branch reaches the head, and again
when the code leaves by a backward branch to another compiled head (chaining).

The compiled code keeps the guest registers and flags in host registers and
goes to memory through the software TLB, inlined; whatever is not the plain
case -- a TLB miss, a permission the entry lacks, a page-crossing or ROM
access, a store into the region's own bytes, an instruction the tier does not
compile, the end of the step budget -- is a side exit: the registers, EFLAGS
and EIP of that instruction's start are written back and the interpreter
goes on from there (faults are delivered by the interpreter, precisely).
The code checks the region's bytes in RAM on every entry and refuses to run
if they changed, so code written by the guest, by Python or by a page swap
needs no other invalidation.  It does not depend on where the region is: EIP,
the linear address and the physical address come in as arguments.

Compiled code is kept per process, keyed by the region's bytes, in one MCJIT
engine; a CPU's table holds only addresses of it (never saved with a
machine).  When ``MAX_LOOPS`` regions are compiled, the engine and all its
code are dropped and ``generation`` counts up; ``CPU.run`` empties the
table of a CPU from an older generation (:func:`forget`) before it runs.
"""
from typing import NamedTuple

import llvmlite.binding as llvm

from . import regionrt
from .hotloop import LOOP16
from .isa import decode_insn, loop_compilable
from .regionir import emit
from .state import JIT, JIT_N, JIT_REQ, M32

#: Backward branches to one loop head before its region is compiled (LLVM takes a few
#: milliseconds; the interpreter runs a few million instructions meanwhile).
THRESHOLD = 4096
#: Most instructions decoded into one region.
MAX_INSNS = 512
#: Compiled regions kept at most.  Each costs about 45 KiB and two memory
#: mappings (the kernel allows 65 530 per process; LLVM aborts the process
#: when it cannot map more), so when this many are compiled the next one
#: throws them all away first, as QEMU flushes its translation cache.
MAX_LOOPS = 1024

# Decoded instructions: (kind, length, width, fields...); width: the operand size in bits
# (8, 16 or 32; LOOP: the address size, CX or ECX).  Operands: ("r", i) a register (8-bit:
# AL CL DL BL AH CH DH BH), ("m", base, index, scale, disp) memory (32-bit addressing, DS or
# SS by the base), ("i", value) an immediate.
#   ("alu", n, w, aop, dst, src)        aop as in the 0x00-0x3F opcodes
#   ("test", n, w, a, b)
#   ("inc"|"dec"|"not"|"neg", n, w, op)
#   ("mov", n, w, dst, src)
#   ("movx", n, w, reg, src, src width, signed)     MOVZX / MOVSX
#   ("lea", n, 32, reg, base, index, scale, disp)   base/index -1: none
#   ("shift", n, 32, op, dst, count)    C1/D1 /op (ROL ROR SHL SHR SAR), count 1-31
#   ("imul", n, w, reg, src, imm)       imm None: IMUL r, r/m
#   ("xchg", n, w, a, b)                registers
#   ("cbw"|"cwd"|"nop", n, w)
#   ("setcc", n, 8, cc, dst) / ("cmov", n, w, cc, reg, src)
#   ("jcc", n, w, cc, rel) / ("jmp", n, w, rel) / ("loop", n, w, rel)   rel: displacement
#   ("push"|"pop", n, 32, reg) / ("call", n, 32, rel) / ("ret", n, 32)    32-bit code only
#   ("movs", n, 32)                     REP MOVSD (F3 A5), a block of its own
#
# In 16-bit code (``code16``: a CS without the D bit, real mode included) the default
# operand and address sizes are 16 bits and 0x66 selects 32 (in 32-bit code it selects 16).
# Memory operands are compiled in 32-bit code only; LEA and the shifts with 32-bit
# operands and addresses; branches without a prefix.  A region in 16-bit code never wraps
# its IP: ``hotloop`` enters it only when it ends below the 64 KiB of its CS.
BRANCHES = ("jcc", "jmp", "loop", "call", "ret")
#: Instructions that push or pop (the stack must be 32-bit and flat).
STACK = {"push", "pop", "call", "ret"}


class Block(NamedTuple):
    """A basic block: its offset in the region, its (offset, instruction) pairs, and the
    offset after it when it does not end in a branch (a block there, or an exit)."""
    start: int
    insns: list
    next: int


class Region(NamedTuple):
    """What :func:`decode_region` found, offsets relative to the head: the blocks, the
    bytes from the first instruction to the end of the last and the offset they start at
    (0 or below), whether it is 16-bit code, whether any instruction reaches memory and
    whether any uses the stack or ES (REP MOVSD), and the return sites of its CALLs
    (where a RET may land in the region)."""
    blocks: list
    code: bytes
    start: int
    code16: bool
    memory: bool
    stack: bool
    strings: bool
    returns: frozenset


def _signed(v, bits):
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def _decode_one(code, o, code16=False):
    """The instruction at ``code[o:]`` as a tuple (see above), or None.

    Which forms are compiled, and their lengths and operands, come from the
    opcode table (``isa.decode_insn``, the rows' ``loop`` column); this maps
    a decoded form to what ``loopir.lower`` needs.
    """
    ins = decode_insn(code, o, code32=not code16)
    if ins is not None and ins.form.loop == "rep":          # REP MOVSD, 32-bit code only
        ok = ins.prefixes == b"\xf3" and not code16 and ins.osz == ins.asz == 4
        return ("movs", ins.length, 32) if ok else None
    if ins is None or ins.prefixes not in (b"", b"\x66"):
        return None
    if not loop_compilable(ins._replace(prefixes=b"")):
        return None
    op, n, reg, imm = ins.form.op, ins.length, ins.reg, ins.imm
    w = 8 * ins.osz
    if ins.mod == 3:
        rm = ("r", ins.rm)
    elif code16 or ins.asz != 4:
        return None                                        # 16-bit addressing
    else:
        rm = ("m", ins.base, ins.index, ins.scale, ins.disp)
    g = ("r", reg)
    if op in BYTE_FORMS:
        w = 8
    if op < 0x40 and op & 7 in (4, 5) or op in (0xA8, 0xA9):   # AL,Ib and eAX,Iz
        x = ("i", imm)
        return ("test", n, w, ("r", 0), x) if op >= 0xA8 else ("alu", n, w, op >> 3, ("r", 0), x)
    if op < 0x40:                                          # ALU E,G / G,E
        return ("alu", n, w, op >> 3) + ((g, rm) if op & 2 else (rm, g))
    if op in (0x80, 0x81, 0x83):
        return ("alu", n, w, reg, rm, ("i", _signed(imm, 8) & M32 if op == 0x83 else imm))
    if op < 0x50:
        return ("inc" if op < 0x48 else "dec", n, w, ("r", op & 7))
    if op in (0x84, 0x85):
        return ("test", n, w, rm, g)
    if op in (0x86, 0x87):
        return ("xchg", n, w, g, rm)
    if 0x88 <= op <= 0x8B:
        return ("mov", n, w) + ((g, rm) if op & 2 else (rm, g))
    if op in (0xC6, 0xC7):
        return ("mov", n, w, rm, ("i", imm))
    if 0xB0 <= op < 0xC0:
        return ("mov", n, w, ("r", op & 7), ("i", imm))
    if op in (0xF6, 0xF7):
        return ("test", n, w, rm, ("i", imm)) if reg <= 1 else (("not", "neg")[reg - 2], n, w, rm)
    if op in (0xFE, 0xFF):
        return (("inc", "dec")[reg], n, w, rm)
    if 0x50 <= op < 0x60 or op in (0xC3, 0xE8):
        if code16 or ins.prefixes:
            return None                                    # 32-bit stack operations only
        if op == 0xC3:
            return ("ret", n, w)
        if op == 0xE8:
            return ("call", n, w, _signed(imm, 32))
        return ("push" if op < 0x58 else "pop", n, w, ("r", op & 7))
    if op == 0x90:
        return ("nop", n, w)
    if 0x90 < op < 0x98:
        return ("xchg", n, w, ("r", 0), ("r", op & 7))
    if op in (0x98, 0x99):
        return ("cbw" if op == 0x98 else "cwd", n, w)
    if op in (0x69, 0x6B, 0x1AF):
        if op == 0x1AF:
            return ("imul", n, w, reg, rm, None)
        return ("imul", n, w, reg, rm, _signed(imm, 8) & M32 if op == 0x6B else imm)
    if op in (0x1B6, 0x1B7, 0x1BE, 0x1BF):
        return ("movx", n, w, reg, rm, 8 if op & 1 == 0 else 16, op >= 0x1BE)
    if 0x140 <= op < 0x150:
        return ("cmov", n, w, op & 15, reg, rm)
    if 0x190 <= op < 0x1A0:
        return ("setcc", n, 8, op & 15, rm)
    if op in (0x8D, 0xC1, 0xD1):                           # 32-bit operands only
        if w != 32 or op == 0x8D and ins.asz != 4:
            return None
        if op == 0x8D:
            return ("lea", n, w, reg, ins.base, ins.index, ins.scale, ins.disp)
        count = imm & 31 if op == 0xC1 else 1
        if count:
            return ("shift", n, w, reg, rm, count)
        # a shift by 0 changes nothing, but of a memory operand it still reads it (and may
        # fault, or set the Accessed bit): the interpreter's
        return ("nop", n, w) if rm[0] == "r" else None
    if ins.prefixes:
        return None                                        # a branch with 0x66
    rel = _signed(imm, 8 if op in (0xEB, 0xE2) or op < 0x80 else w)
    if 0x70 <= op < 0x80 or 0x180 <= op < 0x190:
        return ("jcc", n, w, op & 15, rel)
    if op in (0xEB, 0xE9):
        return ("jmp", n, w, rel)
    return ("loop", n, 8 * ins.asz, rel)                   # E2, the last loop form


#: Opcodes whose operands are bytes whatever the operand size.
BYTE_FORMS = frozenset([8 * i + k for i in range(8) for k in (0, 2, 4)]
                       + [0x80, 0x84, 0x86, 0x88, 0x8A, 0xA8, 0xC6, 0xF6, 0xFE]
                       + list(range(0xB0, 0xB8)))


def _explore(code, head, code16):
    """Decode every instruction reachable from ``code[head]`` without leaving ``code``
    (its page; 16-bit code: nor going below the head): (index -> instruction, block
    leaders, return sites: the instructions after the CALLs)."""
    low = head if code16 else 0
    decoded, leaders, returns, work = {}, {head}, set(), [head]
    while work and len(decoded) < MAX_INSNS:
        o = work.pop()
        if o in decoded:
            leaders.add(o)
            continue
        while o not in decoded and len(decoded) < MAX_INSNS:
            ins = _decode_one(code, o, code16)
            if ins is None:
                break
            decoded[o] = ins
            if ins[0] == "movs":                           # a block of its own
                leaders.update((o, o + ins[1]))
            o += ins[1]
            if ins[0] in BRANCHES:
                if ins[0] == "ret":
                    break                                  # where to: known at run time
                target = o + ins[-1]
                if low <= target < len(code):
                    leaders.add(target)
                    work.append(target)
                if ins[0] == "call":
                    returns.add(o)
                if ins[0] != "jmp":
                    leaders.add(o)
                    work.append(o)
                break
        else:
            if o in decoded:
                leaders.add(o)                             # two paths join here
    return decoded, leaders, returns


def decode_region(code, head=0, code16=False):
    """The region at ``code[head]`` (``code``: its page; in 16-bit code with ``code16``):
    a :class:`Region`, or None if no loop through the head compiles."""
    decoded, leaders, returns = _explore(code, head, code16)
    blocks, loops = [], False
    for start in sorted(leaders):
        if start not in decoded:
            continue                                       # an exit: not compiled there
        insns, o = [], start
        while o in decoded and (o == start or o not in leaders):
            ins = decoded[o]
            insns.append((o - head, ins))
            o += ins[1]
            if ins[0] == "movs":
                break
            if ins[0] in BRANCHES:
                loops |= ins[0] != "ret" and o + ins[-1] == head
                break
        blocks.append(Block(start - head, insns, o - head))
    if not loops or head not in decoded:
        return None
    lo = min(decoded)
    hi = max(o + ins[1] for o, ins in decoded.items())
    kinds = {ins[0] for ins in decoded.values()}
    stack, strings = bool(kinds & STACK), "movs" in kinds
    memory = stack or strings or any(
        isinstance(x, tuple) and x[0] == "m" for ins in decoded.values() for x in ins)
    return Region(blocks, bytes(code[lo:hi]), lo - head, code16, memory, stack, strings,
                  frozenset(r - head for r in returns))


class _Compiler:
    """One MCJIT engine for the process; compiled regions by their bytes."""

    def __init__(self):
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self.tm)
        self.code = {}
        # A short pipeline: the allocas become SSA values, the flags nobody
        # reads inside the region sink to its exits.  (The full -O2 pipeline
        # makes the gcc programs 15-25 % faster and takes twice as long; code
        # generation at -O0 takes half as long and runs two to three times slower.)
        self.pb = llvm.create_pass_builder(self.tm, llvm.create_pipeline_tuning_options(2))
        self.passes = llvm.create_new_function_pass_manager()
        for add in ("sroa", "instruction_combine", "simplify_cfg", "sinking",
                    "instruction_combine", "dead_code_elimination"):
            getattr(self.passes, f"add_{add}_pass")()
        self.addresses = self._add(regionrt.module(), regionrt.TYPES)

    def _add(self, module, names):
        """Optimise and compile an IR module; the addresses of its functions ``names``."""
        mod = llvm.parse_assembly(str(module))
        mod.verify()
        for fn in mod.functions:
            if not fn.is_declaration:
                self.passes.run(fn, self.pb)
        # LLVM's register coalescer fails an assertion, aborting the process, on some
        # regions' partial-register code ("Instruction is reading nonexistent value";
        # tracking sub-register liveness instead trips another one): code generation runs
        # without it.  The option is process-wide, so it is set around this compile only.
        llvm.set_option("kjcore", "-join-liveintervals=false")
        try:
            self.engine.add_module(mod)
            self.engine.finalize_object()
        finally:
            llvm.set_option("kjcore", "-join-liveintervals=true")
        return {name: self.engine.get_function_address(name) for name in names}

    def compile(self, region):
        """Address of the compiled ``region`` (from :func:`decode_region`)."""
        key = _key(region)
        if key not in self.code:
            name = f"region{len(self.code)}"
            self.code[key] = self._add(emit(region, name, self.addresses), [name])[name]
        return self.code[key]


def _key(region):
    """What compiled code is shared by: the bytes, where the head is in them, 16-bit."""
    return region.code, region.start, region.code16


_compiler = None
#: Counts the times all compiled code was thrown away (see MAX_LOOPS).
generation = 0


def _table(s):
    """A CPU's hot-loop table (state.JIT) as rows of (key, code, length, count)."""
    return s[JIT:JIT + 4 * JIT_N].reshape(-1, 4)


def compiled(s):
    """(physical address, length in bytes) of the regions a CPU runs compiled."""
    return sorted((((int(k) - 1) & ~LOOP16) - (int(n) >> 16), (int(n) & 0xFFFF) + (int(n) >> 16))
                  for k, fn, n, _ in _table(s) if k and fn > 0)


def forget(s):
    """Empty a CPU's hot-loop table: its addresses point into code that is gone."""
    _table(s)[:] = 0


def install(s, ram):
    """Answer ``ST_JIT_REQUEST``: compile the region at the requested loop head
    and record the outcome in the CPU's hot-loop table (-1: no compilable
    region; it is not asked for again while the entry stays).  If the code
    cache is full, this CPU's table is emptied first (the caller records the
    new ``generation`` for it)."""
    global _compiler, generation
    k = int(s[JIT_REQ])
    key = int(s[k]) - 1
    p, code16 = key & ~LOOP16, bool(key & LOOP16)
    page = p & ~0xFFF
    region = decode_region(ram[page:min(ram.shape[0], page + 4096)].tobytes(), p - page,
                           code16)
    if region is None:
        s[k + 1] = -1
        return
    if _compiler is None:
        _compiler = _Compiler()
    elif _key(region) not in _compiler.code and len(_compiler.code) >= MAX_LOOPS:
        _compiler = _Compiler()                # the old engine and its code are freed
        generation += 1
        forget(s)
        s[k] = key + 1
    s[k + 1] = _compiler.compile(region)
    s[k + 2] = (len(region.code) + region.start) | -region.start << 16   # after | before << 16
