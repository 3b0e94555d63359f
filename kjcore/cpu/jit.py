"""``kernel``: ``njit(cache=True)`` with exactly one compiled version per function.

Numba otherwise specialises a callee for every literal argument it is
called with (``read_mem(s, ram, SS, off, 4)`` and ``..., 2)`` become two
compilations); across the CPU that tripled the cold compile.  A kernel
drops literal types at its call sites, so it compiles once, lazily: a warm
process loads only the entry points from the cache, not every helper.

Each kernel also declares its signature as short codes (checked by the
tests against what Numba inferred):

``s`` state vector (int64[::1]), ``r`` RAM (uint8[::1]), ``q`` RAM as
uint64[::1], ``c`` console buffer (uint8[::1]), ``i`` int64, ``b`` bool.
Returns: ``i``, ``b``, ``v`` (nothing), ``ii``/``iii`` (int tuples),
``biii``/``biiiii`` (bool + three or five ints).
"""
from numba import njit, types

_ARG = {
    "s": types.Array(types.int64, 1, "C"),
    "r": types.Array(types.uint8, 1, "C"),
    "q": types.Array(types.uint64, 1, "C"),
    "c": types.Array(types.uint8, 1, "C"),
    "i": types.int64,
    "b": types.boolean,
}
_RET = {
    "i": types.int64,
    "b": types.boolean,
    "v": types.none,
    "ii": types.UniTuple(types.int64, 2),
    "iii": types.UniTuple(types.int64, 3),
    "biii": types.Tuple((types.boolean, types.int64, types.int64, types.int64)),
    "biiiii": types.Tuple((types.boolean,) + (types.int64,) * 5),
}


def _unliteral_call_template(disp):
    base = disp.get_call_template

    def get_call_template(args, kws):
        return base(tuple(types.unliteral(a) for a in args), kws)
    disp.get_call_template = get_call_template
    return disp


def signature(ret, args):
    return _RET[ret](*[_ARG[a] for a in args])


def kernel(ret, args, entry=False):
    """``@kernel("i", "sri")``: njit'd, signature int64(int64[::1], uint8[::1], int64).

    Only ``entry=True`` kernels (called from Python) get Numba's CPython
    wrapper; skipping it for the internal ones saves cold-compile time.
    """
    sig = signature(ret, args)

    def wrap(fn):
        opts = dict(cache=True, _nrt=False)
        if not entry:
            opts.update(no_cpython_wrapper=True, no_cfunc_wrapper=True)
        disp = _unliteral_call_template(njit(**opts)(fn))
        disp.kernel_signature = sig
        return disp
    return wrap


#: the argument type of an inline kernel's parameter by its name (any other: int64)
_PARAM = {"s": _ARG["s"], "ram": _ARG["r"], "ram64": _ARG["q"], "con": _ARG["c"],
          "write": _ARG["b"], "ok": _ARG["b"]}


def inline_kernel(fn):
    """Compiled once and inlined into its callers by LLVM (``alwaysinline``).

    For the hot helpers of the step loop.  Numba's own IR-level inlining
    (``inline="always"``) re-types and re-lowers the body at every call
    site, which cost seconds of cold compile; LLVM's inliner costs little.

    ``inline_args``: the argument types its callers are expected to pass, from the
    parameter names (``s``, ``ram``, ``ram64``, ``con``: the arrays; ``write``, ``ok``:
    bool; any other: int64), so the cold start can compile it ahead of its callers
    (``warmup.py``; a test checks that the callers find that compilation rather than
    making another).
    """
    disp = _unliteral_call_template(njit(cache=True, _nrt=False, forceinline=True,
                                         no_cpython_wrapper=True, no_cfunc_wrapper=True)(fn))
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    disp.inline_args = tuple(_PARAM.get(n, types.int64) for n in names)
    return disp
