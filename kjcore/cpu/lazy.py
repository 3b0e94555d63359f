"""Kernels called through a table of entry points, each compiled on its own and on first use.

``core.dispatch`` hands every decoded instruction to its family handler (``op_mov``,
``op_string``, ``op_fpu``, ...); ``core.run`` decodes (``trace.decode_traced``), delivers
exceptions (``interrupts.raise_exception``) and hands 16-bit code to ``fast16.run16``.
Called directly, each of them is compiled again into its caller (Numba links a callee's
whole module into the caller, then optimises and compiles the result: the family handlers
were compiled three times, alone, in ``dispatch`` and in ``run``), and a cold start compiled
all of them, the FPU, BCD and 16-bit ones included, before the first instruction.

Instead the caller reads the kernel's entry point from a per-process table of addresses
(:data:`_entry`, an LLVM symbol the compiled code links against, so code loaded from
Numba's cache finds it too) and calls it there.  An empty entry stops the run with
``ST_COMPILE_REQUEST`` (``s[JIT_REQ]`` names the slot) before anything is done: the decoder
and exception delivery are asked for before a run's first step, a family handler or the
16-bit fast path before the instruction that needs it (after its code stop was checked; the
run restarts there later, as it does after a port Python answers).  ``CPU.run`` calls
:func:`install`, which compiles the kernel (or loads it from the cache) and fills its entry,
then resumes.  Each of these kernels is thus compiled once, on its own, and only when the
guest needs it; what it computes is unchanged.
"""
import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .alu import op_alu, op_grp3, op_incdec
from .atomic import op_atomic
from .bcd import op_bcd
from .bits import op_bits
from .cond import op_cond
from .far import op_far
from .fast16 import run16
from .flagops import op_flags
from .fpu import op_fpu
from .interrupts import op_int, raise_exception
from .io import op_io
from .isa import (
    F_ALU,
    F_ATOMIC,
    F_BCD,
    F_BITS,
    F_COND,
    F_FAR,
    F_FLAGS,
    F_FPU,
    F_GRP3,
    F_GRP5,
    F_INCDEC,
    F_INT,
    F_IO,
    F_JUMP,
    F_MOV,
    F_MULDIV,
    F_SHIFT,
    F_STACK,
    F_STRING,
    F_SYS,
)
from .jump import op_grp5, op_jump
from .mov import op_mov
from .muldiv import op_muldiv
from .shift import op_shift
from .stack import op_stack
from .state import JIT_REQ
from .string import op_string
from .system import op_sys
from .trace import decode_traced

#: slots of the 16-bit fast path, the decoder and exception delivery; the family handlers'
#: slots are their numbers (``isa.F_*``)
RUN16, DECODE, RAISE = F_MULDIV + 1, F_MULDIV + 2, F_MULDIV + 3
#: the kernel of each slot
KERNELS = {F_MOV: op_mov, F_ALU: op_alu, F_JUMP: op_jump, F_STACK: op_stack,
           F_INCDEC: op_incdec, F_GRP5: op_grp5, F_STRING: op_string, F_SHIFT: op_shift,
           F_GRP3: op_grp3, F_MULDIV: op_muldiv, F_COND: op_cond, F_BITS: op_bits,
           F_ATOMIC: op_atomic, F_FLAGS: op_flags, F_SYS: op_sys, F_FAR: op_far,
           F_INT: op_int, F_IO: op_io, F_BCD: op_bcd, F_FPU: op_fpu, RUN16: run16,
           DECODE: decode_traced, RAISE: raise_exception}
#: the family handlers' slots end here
NFAM = RUN16
#: the slots a kexec jump always needs (measured: the jump of ``benchmarks/bench_startup.py``
#: requests these and no others): a cold start compiles them ahead, with ``core.run``
#: (``warmup.py``), on both cores
EVERY_JUMP = (DECODE, RAISE, F_MOV, F_ALU, F_JUMP, F_STACK, F_GRP5, F_STRING, F_GRP3, F_SYS)

#: the name compiled code knows the table by
_SYMBOL = "kjcore_lazy_entry"
#: entry point of each slot's kernel in this process, 0 until :func:`install` fills it
_entry = np.zeros(max(KERNELS) + 1, np.int64)
llvm.add_symbol(_SYMBOL, _entry.ctypes.data)


@intrinsic
def entry(typingctx, slot):
    """The address of slot ``slot``'s kernel (0: not compiled yet)."""
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        table = builder.module.globals.get(_SYMBOL)
        if table is None:
            table = ir.GlobalVariable(builder.module, i64, _SYMBOL)   # external: the symbol
        return builder.load(builder.gep(table, [args[0]]))
    return types.int64(types.int64), codegen


def _call(context, builder, sig, args):
    """Call the kernel at address ``args[0]`` with its arguments ``args[1:]``, as Numba
    calls a compiled function (an exception it raises propagates as from a direct call)."""
    fnty = context.call_conv.get_function_type(sig.return_type, sig.args[1:])
    callee = builder.inttoptr(args[0], fnty.as_pointer())
    status, res = context.call_conv.call_function(builder, callee, sig.return_type,
                                                  sig.args[1:], args[1:])
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return res


@intrinsic
def call_sr(typingctx, fn, s, ram):
    """``op_*(s, ram)`` at address ``fn``."""
    return types.int64(fn, s, ram), _call


@intrinsic
def call_src(typingctx, fn, s, ram, con):
    """``op_io(s, ram, con)`` at address ``fn``."""
    return types.int64(fn, s, ram, con), _call


@intrinsic
def call_srqc(typingctx, fn, s, ram, ram64, con):
    """``op_string(s, ram, ram64, con)`` at address ``fn``."""
    return types.int64(fn, s, ram, ram64, con), _call


@intrinsic
def call_decode(typingctx, fn, s, ram, start):
    """``trace.decode_traced(s, ram, start)`` at address ``fn``."""
    return types.int64(fn, s, ram, start), _call


@intrinsic
def call_raise(typingctx, fn, s, ram, vec, err, soft):
    """``interrupts.raise_exception(s, ram, vec, err, soft)`` at address ``fn``."""
    return types.int64(fn, s, ram, vec, err, soft), _call


@intrinsic
def call_run16(typingctx, fn, s, ram, budget, tslot, stop_first):
    """``fast16.run16(s, ram, budget, tslot, stop_first)`` at address ``fn``."""
    return types.UniTuple(types.int64, 2)(fn, s, ram, budget, tslot, stop_first), _call


def install(s):
    """Answer ``ST_COMPILE_REQUEST``: compile (or load from the cache) the kernel of slot
    ``s[JIT_REQ]`` and fill its entry."""
    compile_entry(int(s[JIT_REQ]))


def compile_entry(slot):
    """Compile slot ``slot``'s kernel, if not yet, and record its entry point."""
    if _entry[slot]:
        return
    disp = KERNELS[slot]
    args = disp.kernel_signature.args
    disp.compile(args)
    cres = disp.overloads[args]
    _entry[slot] = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


def compiled():
    """The slots whose kernels this process has compiled or loaded."""
    return sorted(k for k in KERNELS if _entry[k])
