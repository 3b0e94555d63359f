"""The step loop's side of the translation tier (``loopjit.py``).

After every taken backward branch the fast path asks :func:`loop_head` about
the target, inlined (most backward branches go to loops that are not
compiled, and a call there cost the interpreter up to 30%).  It looks the
target up in the CPU's hot-loop table (``state.JIT``, direct-mapped by
physical address): a new loop head gets an entry, a counting one counts,
and one that reaches ``s[JIT_HOT]`` asks Python to compile the region there
(the run stops with ``ST_JIT_REQUEST``).  A compiled region is entered through
:func:`enter_loop` when it fits in the fast path's code window and no code
stop (breakpoint, code hook) lies inside it: compiled code does not check them,
and every way out leads back to a loop that does.  Nothing here runs with
``s[NO_JIT]`` set.

16-bit code (real mode, or a CS without the D bit) runs ``fast16.py``'s fast
path, which asks :func:`loop_head` after its taken backward branches; the step
loop asks :func:`loop16` after each decoded instruction that went backward.
Its loop heads are keyed ``physical address | LOOP16`` (the same bytes decode
differently in 32-bit code), and a region is entered only when it ends below
the 64 KiB of the segment and inside its limit, so the compiled code never has
to wrap IP.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import inline_kernel, kernel
from .lazyflags import flags_of
from .state import (
    A_DB,
    BP,
    CS,
    D_FPAGE,
    D_FPHYS,
    EFLAGS,
    EIP,
    JIT,
    JIT_HOT,
    JIT_N,
    JIT_REQ,
    M32,
    NBP,
    NO_JIT,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    SEG,
)

#: loop_head's answer when Python has to compile the loop first.
REQUEST = -1
#: set in the hot-loop table key of a loop head in 16-bit code (above any physical address)
LOOP16 = 1 << 40


@intrinsic
def _call(typingctx, fn, s, ram, p, eip, lin, f, budget, tslot, ramsize):
    """Call compiled region code at address ``fn`` (see ``regionir.emit``)."""
    i64 = types.int64

    def codegen(context, builder, sig, args):
        sa = context.make_array(sig.args[1])(context, builder, args[1])
        ra = context.make_array(sig.args[2])(context, builder, args[2])
        t64 = ir.IntType(64)
        fnty = ir.FunctionType(t64, [sa.data.type, ra.data.type] + [t64] * 7)
        ptr = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(ptr, [sa.data, ra.data] + list(args[3:]))
    return i64(i64, s, ram, i64, i64, i64, i64, i64, i64, i64), codegen


@inline_kernel
def _stops_in(s, lo, hi):
    """Whether a code stop (breakpoint, code hook) meets linear [lo, hi): compiled code
    checks none, so a region runs only where no stop can be reached inside it."""
    for i in range(s[NBP]):
        if s[BP + 2 * i] < hi and s[BP + 2 * i + 1] >= lo:
            return True
    return False


@inline_kernel
def loop_head(s, p):
    """A taken backward branch to physical address ``p``: the offset in ``s``
    of its table entry if the loop there is compiled, REQUEST, or 0."""
    if s[NO_JIT] != 0:
        return 0
    k = JIT + 4 * ((p ^ (p >> 8) ^ (p >> 16)) & (JIT_N - 1))
    if s[k] != p + 1:
        s[k] = p + 1
        s[k + 1] = 0
        s[k + 2] = 0
        s[k + 3] = 1
        return 0
    fn = s[k + 1]
    if fn > 0:
        return k
    if fn == 0:
        s[k + 3] += 1
        if s[k + 3] >= s[JIT_HOT]:
            s[JIT_REQ] = k
            return REQUEST
    return 0


@kernel("i", "sriiiiiiiiiiii")
def enter_loop(s, ram, k, p, eip, lin, fl, la, lb, lr, budget, tslot, room, back):
    """Run the compiled region of table entry ``k`` at offset ``eip`` in CS
    (linear ``lin``, physical ``p``; the code window holds ``room`` bytes from
    there and ``back`` bytes before it); ``fl, la, lb, lr``: the fast path's lazy
    EFLAGS.

    Returns the instructions it ran (it has written the registers, EIP,
    EFLAGS and the trace ring; slot ``tslot`` is its first step's), or 0.
    """
    after, before = s[k + 2] & 0xFFFF, s[k + 2] >> 16
    if after > room or before > back or _stops_in(s, lin - before, lin + after):
        return 0
    r = _call(s[k + 1], s, ram, p, eip, lin, flags_of(fl & M32, fl >> 32, la, lb, lr),
              budget, tslot, ram.shape[0])
    if r < 0:                                  # the region's bytes changed: count afresh
        s[k] = 0
        return 0
    return r


@kernel("i", "sriii")
def loop16(s, ram, start, budget, tslot):
    """After a decoded instruction at offset ``start`` of 16-bit code that left IP below
    it: count, request or run the loop at the new CS:IP (as the fast path does for 32-bit
    code).  Returns the steps a compiled loop ran (0: none) or REQUEST."""
    eip = s[EIP]
    cs = SEG + 4 * CS
    if eip >= start or s[cs + S_ATTR] & A_DB:
        return 0
    lin = (s[cs + S_BASE] + eip) & M32
    if s[D_FPAGE] != lin >> 12:
        return 0
    p = s[D_FPHYS] + (lin & 0xFFF)
    k = loop_head(s, p | LOOP16)
    if k == REQUEST:
        return REQUEST
    if k == 0:
        return 0
    room = min(s[cs + S_LIMIT] + 1 - eip, 0xFFFF - eip)
    return enter_loop(s, ram, k, p, eip, lin, s[EFLAGS], 0, 0, 0, budget, tslot, room, 0)
