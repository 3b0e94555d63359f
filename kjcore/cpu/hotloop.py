"""The step loop's side of the hot-loop tier (``loopjit.py``).

The fast path calls :func:`hot_loop` after every taken backward branch.  It
looks the target up in the CPU's hot-loop table (``state.JIT``, direct-mapped
by physical address): a new loop head gets an entry, a counting one counts,
and one that reaches ``s[JIT_HOT]`` asks Python to compile it (the run
stops with ``ST_JIT_REQUEST``).  A compiled loop is called through its
address when it fits in the fast path's code window.  Nothing here runs with
breakpoints set (the compiled loop does not check them) or with
``s[NO_JIT]`` set.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .fastpath import flags_of
from .jit import kernel
from .state import JIT, JIT_HOT, JIT_N, JIT_REQ, M32, NBP, NO_JIT

#: hot_loop's answer when Python has to compile the loop first.
REQUEST = -1


@intrinsic
def _call(typingctx, fn, s, ram, p, eip, lin, f, budget, tslot):
    """Call compiled loop code at address ``fn`` (see ``loopjit._emit``)."""
    i64 = types.int64

    def codegen(context, builder, sig, args):
        sa = context.make_array(sig.args[1])(context, builder, args[1])
        ra = context.make_array(sig.args[2])(context, builder, args[2])
        t64 = ir.IntType(64)
        fnty = ir.FunctionType(t64, [sa.data.type, ra.data.type] + [t64] * 6)
        ptr = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(ptr, [sa.data, ra.data] + list(args[3:]))
    return i64(i64, s, ram, i64, i64, i64, i64, i64, i64), codegen


@kernel("i", "sriiiiiiiiii")
def hot_loop(s, ram, p, eip, lin, fl, la, lb, lr, budget, tslot, room):
    """A taken backward branch to offset ``eip`` in CS (linear ``lin``, physical
    ``p``; ``room`` bytes of the code window from there).

    ``fl, la, lb, lr``: the fast path's lazy EFLAGS.  Returns the instructions
    the compiled loop ran (it has written the registers, EIP, EFLAGS and the
    trace ring; slot ``tslot`` is its first step's), 0 if none ran, or
    REQUEST.
    """
    if s[NBP] > 0 or s[NO_JIT] != 0:
        return 0
    k = JIT + 4 * ((p ^ (p >> 8) ^ (p >> 16)) & (JIT_N - 1))
    if s[k] != p + 1:
        s[k] = p + 1
        s[k + 1] = 0
        s[k + 2] = 0
        s[k + 3] = 1
        return 0
    fn = s[k + 1]
    if fn == 0:
        s[k + 3] += 1
        if s[k + 3] < s[JIT_HOT]:
            return 0
        s[JIT_REQ] = k
        return REQUEST
    if fn < 0 or s[k + 2] > room:
        return 0
    r = _call(fn, s, ram, p, eip, lin, flags_of(fl & M32, fl >> 32, la, lb, lr), budget, tslot)
    if r < 0:                                  # the loop's bytes changed: count afresh
        s[k] = 0
        return 0
    return r
