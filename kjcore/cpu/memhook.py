"""The compiled side of memory hooks (``hooks.py``): match an access against the hooked ranges.

``lin_read`` / ``lin_write`` (``memory.py``) call :func:`mem_hook` after every data access when
``s[MH_N]`` ranges are set, and only then: with no memory hook the cost is one compare per
access of the general path (the fast path and compiled loops are off while memory hooks are
set, so every access goes through here).  A hit is recorded at ``MH_HIT`` and the step loop
stops after the instruction with ``ST_HOOK``; Python then calls the hooks in order.
"""
from .jit import kernel
from .state import M32, MH, MH_HIT, MH_HIT_MAX, MH_HITS, MH_N, MH_PHYS


@kernel("b", "iiiii")
def _overlaps(a, n, lo, hi, top):
    """Does ``[a, a + n)`` (wrapping at ``top``) meet ``[lo, hi]``?"""
    for i in range(n):
        x = (a + i) & top
        if lo <= x <= hi:
            return True
    return False


@kernel("v", "siiiiiii")
def mem_hook(s, kind, lin, p1, n1, p2, size, value):
    """Record the access of ``size`` bytes at linear ``lin`` (physical ``p1`` for its first
    ``n1`` bytes, ``p2`` for the rest when it crosses a page) if a hook of ``kind``
    (``MH_READ`` or ``MH_WRITE``) covers any of its bytes, linear or physical."""
    for i in range(s[MH_N]):
        k = MH + 3 * i
        kinds = s[k + 2]
        if (kinds & kind) == 0:
            continue
        lo = s[k]
        hi = s[k + 1]
        if kinds & MH_PHYS:
            hit = _overlaps(p1, n1, lo, hi, -1) or (
                n1 < size and _overlaps(p2, size - n1, lo, hi, -1))
        else:
            hit = _overlaps(lin, size, lo, hi, M32)
        if hit:
            j = s[MH_HITS]
            if j < MH_HIT_MAX:
                r = MH_HIT + 5 * j
                s[r] = kind
                s[r + 1] = lin
                s[r + 2] = p1
                s[r + 3] = size
                s[r + 4] = value
                s[MH_HITS] = j + 1
            return
