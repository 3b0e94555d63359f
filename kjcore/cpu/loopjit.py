"""Hot-loop tier: register-only loops compiled to host code with LLVM.

A loop whose body is one straight run of register instructions ending in a
branch back to its first byte (``L: add eax,ecx; xor edx,eax; dec ecx; jnz L``)
is what an interpreter runs worst and what a compiler runs best.  When the
step loop has seen such a loop head often enough (``hotloop.py`` counts
backward branches), it stops with ``ST_JIT_REQUEST``; :func:`install`
decodes the loop from RAM, emits LLVM IR for it with exact EFLAGS, and
compiles it with the LLVM that Numba already loads (llvmlite).  The step
loop then calls that code at the loop head: it runs whole iterations of the
loop, keeps the guest registers and flags in host registers, and writes back
what the interpreter would have left: the eight general registers, EIP,
EFLAGS and the last ``TRACE_N`` entries of the trace ring.

Fidelity: the compiled loop runs only instructions that cannot fault and
touch no memory (the opcode table's ``loop`` column, ``isa.py``), each with
the interpreter's flag rules (``loopir.py`` writes the IR), and stops at the
step budget on an iteration boundary (the interpreter does the rest).
The code checks the loop's bytes in RAM on every entry and refuses to run
if they changed, so guest stores, DMA-like writes from Python and page swaps
need no invalidation.  It does not depend on where the loop is: EIP, the
linear address and the physical address come in as arguments.

Compiled code is kept per process, keyed by the loop's bytes, in one MCJIT
engine; a CPU's table holds only addresses of it (never saved with a
machine).  When ``MAX_LOOPS`` loops are compiled, the engine and all its
code are dropped and ``generation`` counts up; ``CPU.run`` empties the
table of a CPU from an older generation (:func:`forget`) before it runs.
"""
import llvmlite.binding as llvm

from .hotloop import LOOP16
from .isa import decode_insn, loop_compilable
from .loopir import emit
from .state import JIT, JIT_N, JIT_REQ, M32

#: Backward branches to one loop head before it is compiled (LLVM takes a few
#: milliseconds; the interpreter runs a few million instructions meanwhile).
THRESHOLD = 4096
#: Longest loop body compiled, in instructions.
MAX_INSNS = 64
#: Compiled loops kept at most.  Each costs about 45 KiB and two memory
#: mappings (the kernel allows 65 530 per process; LLVM aborts the process
#: when it cannot map more), so when this many are compiled the next one
#: throws them all away first, as QEMU flushes its translation cache.
MAX_LOOPS = 1024

# Decoded instructions: (kind, length, width, fields...); width: the operand size in bits
# (8, 16 or 32; LOOP: the address size, CX or ECX), a 16-bit result writes the low half
# only, an 8-bit one (the AL forms 04-3C and A8) the low byte.
#   ("alu", n, w, aop, dst, src, imm)   aop as in the 0x00-0x3F opcodes; src -1: imm
#   ("test", n, w, a, src, imm)         src -1: imm
#   ("inc"|"dec"|"not"|"neg", n, w, r)
#   ("mov", n, w, dst, src, imm)        src -1: imm
#   ("lea", n, 32, dst, base, index, scale, disp)   base/index -1: none (32-bit addressing)
#   ("shift", n, 32, op, r, count)      C1/D1 /op (ROL ROR SHL SHR SAR), count 1-31
#   ("xchg", n, w, a, b)
#   ("nop", n, w)                       also a shift by 0 (changes nothing, not even flags)
#   ("jcc", n, w, cc, rel) / ("jmp", n, w, rel) / ("loop", n, w, rel)   rel: displacement
#
# In 16-bit code (``code16``: a CS without the D bit, real mode included) the default
# operand and address sizes are 16 bits and 0x66 selects 32 (in 32-bit code it selects 16).
# Compiled: any operand size for the ALU (eAX,Iz included), INC/DEC, NOT/NEG, TEST, MOV,
# XCHG, and AL,Ib whatever the operand size; LEA and the
# shifts with 32-bit operands and addresses; branches without a prefix.  The loop never
# wraps its IP: ``hotloop`` enters it only when it ends below the 64 KiB of a 16-bit CS.


def _signed(v, bits):
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def _decode_one(code, o, code16=False):
    """The instruction at ``code[o:]`` as a tuple (see above), or None.

    Which forms are compiled, and their lengths and operands, come from the
    opcode table (``isa.decode_insn``, the rows' ``loop`` column); this maps
    a decoded form to what ``_lower`` needs.
    """
    ins = decode_insn(code, o, code32=not code16)
    if ins is None or ins.prefixes not in (b"", b"\x66"):
        return None
    if not loop_compilable(ins._replace(prefixes=b"")):
        return None
    op, n, reg, rm, imm = ins.form.op, ins.length, ins.reg, ins.rm, ins.imm
    w = 8 * ins.osz
    if op < 0x40 and op & 7 in (4, 5) or op in (0xA8, 0xA9):   # AL,Ib and eAX,Iz
        w = w if op & 1 else 8
        return ("test", n, w, 0, -1, imm) if op >= 0xA8 else ("alu", n, w, op >> 3, 0, -1, imm)
    if op < 0x40:                                          # ALU Ev,Gv / Gv,Ev
        dst, src = (reg, rm) if op & 2 else (rm, reg)
        return ("alu", n, w, op >> 3, dst, src, 0)
    if op in (0x81, 0x83):
        return ("alu", n, w, reg, rm, -1, _signed(imm, 8) & M32 if op == 0x83 else imm)
    if op < 0x50:
        return ("inc" if op < 0x48 else "dec", n, w, op & 7)
    if 0xB8 <= op < 0xC0:
        return ("mov", n, w, op & 7, -1, imm)
    if op in (0x89, 0x8B):
        return ("mov", n, w, rm, reg, 0) if op == 0x89 else ("mov", n, w, reg, rm, 0)
    if op == 0x85:
        return ("test", n, w, rm, reg, 0)
    if op == 0xF7:
        return ("test", n, w, rm, -1, imm) if reg <= 1 else (("not", "neg")[reg - 2], n, w, rm)
    if op == 0x90:
        return ("nop", n, w)
    if op == 0x87:
        return ("xchg", n, w, reg, rm)
    if 0x90 < op < 0x98:
        return ("xchg", n, w, 0, op & 7)
    if op in (0x8D, 0xC1, 0xD1):                           # 32-bit operands only
        if w != 32 or op == 0x8D and ins.asz != 4:
            return None
        if op == 0x8D:
            return ("lea", n, w, reg, ins.base, ins.index, ins.scale, ins.disp)
        count = imm & 31 if op == 0xC1 else 1
        return ("shift", n, w, reg, rm, count) if count else ("nop", n, w)
    if ins.prefixes:
        return None                                        # a branch with 0x66
    rel = _signed(imm, 8 if op in (0xEB, 0xE2) or op < 0x80 else w)
    if 0x70 <= op < 0x80 or 0x180 <= op < 0x190:
        return ("jcc", n, w, op & 15, rel)
    if op in (0xEB, 0xE9):
        return ("jmp", n, w, rel)
    return ("loop", n, 8 * ins.asz, rel)                   # E2, the last loop form


def decode_loop(code, code16=False):
    """Decode a loop at the start of ``code`` (16-bit code with ``code16``): straight-line
    instructions of the supported forms, the last a branch whose target is offset 0.

    Returns (instructions, length in bytes) or None if ``code`` does not
    start with such a loop.
    """
    out, o = [], 0
    while len(out) < MAX_INSNS:
        ins = _decode_one(code, o, code16)
        if ins is None:
            return None
        out.append(ins)
        o += ins[1]
        if ins[0] in ("jcc", "jmp", "loop"):
            return (out, o) if o + ins[-1] == 0 else None
    return None


class _Compiler:
    """One MCJIT engine for the process; compiled loops by their bytes."""

    def __init__(self):
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self.tm)
        self.code = {}
        # A short pipeline: the allocas become SSA values, the flags nobody
        # reads inside the loop sink to its exit.  (The full -O2 pipeline
        # gives the same loops and takes twice as long.)
        self.pb = llvm.create_pass_builder(self.tm, llvm.create_pipeline_tuning_options(2))
        self.passes = llvm.create_new_function_pass_manager()
        for add in ("sroa", "instruction_combine", "simplify_cfg", "sinking",
                    "instruction_combine", "dead_code_elimination"):
            getattr(self.passes, f"add_{add}_pass")()

    def compile(self, insns, key):
        """Address of the compiled loop ``insns`` (from :func:`decode_loop`);
        ``key`` is (its bytes, whether it is 16-bit code)."""
        if key not in self.code:
            name = f"loop{len(self.code)}"
            mod = llvm.parse_assembly(str(emit(insns, key[0], name)))
            mod.verify()
            self.passes.run(mod.get_function(name), self.pb)
            self.engine.add_module(mod)
            self.engine.finalize_object()
            self.code[key] = self.engine.get_function_address(name)
        return self.code[key]


_compiler = None
#: Counts the times all compiled code was thrown away (see MAX_LOOPS).
generation = 0


def _table(s):
    """A CPU's hot-loop table (state.JIT) as rows of (key, code, length, count)."""
    return s[JIT:JIT + 4 * JIT_N].reshape(-1, 4)


def compiled(s):
    """(physical address, length in bytes) of the loops a CPU runs compiled."""
    return sorted(((int(k) - 1) & ~LOOP16, int(n)) for k, fn, n, _ in _table(s)
                  if k and fn > 0)


def forget(s):
    """Empty a CPU's hot-loop table: its addresses point into code that is gone."""
    _table(s)[:] = 0


def install(s, ram):
    """Answer ``ST_JIT_REQUEST``: compile the loop at the requested loop head
    and record the outcome in the CPU's hot-loop table (-1: not a compilable
    loop; it is not asked for again while the entry stays).  If the code
    cache is full, this CPU's table is emptied first (the caller records the
    new ``generation`` for it)."""
    global _compiler, generation
    k = int(s[JIT_REQ])
    key = int(s[k]) - 1
    p, code16 = key & ~LOOP16, bool(key & LOOP16)
    code = ram[p:min(ram.shape[0], (p | 0xFFF) + 1)].tobytes()
    found = decode_loop(code, code16)
    if found is None:
        s[k + 1] = -1
        return
    insns, blen = found
    code = (code[:blen], code16)
    if _compiler is None:
        _compiler = _Compiler()
    elif code not in _compiler.code and len(_compiler.code) >= MAX_LOOPS:
        _compiler = _Compiler()                # the old engine and its code are freed
        generation += 1
        forget(s)
        s[k] = key + 1
    s[k + 1] = _compiler.compile(insns, code)
    s[k + 2] = blen
