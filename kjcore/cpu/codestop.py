"""The compiled side of code stops: breakpoints and code/fetch hooks (``hooks.py``).

``s[NBP]`` (first, last) linear ranges at ``BP``; the step loop (``core.py``) and the 16-bit
fast path (``fast16.py``) ask :func:`bp_hit` before each instruction while any is set.
"""
from .jit import inline_kernel
from .state import BP, NBP


@inline_kernel
def bp_hit(s, lin):
    """True if the linear address ``lin`` is in one of the NBP code stop ranges (an early-exit
    loop: LLVM does not vectorise it, which had cost the step loop ~15%)."""
    for i in range(s[NBP]):
        if s[BP + 2 * i] <= lin <= s[BP + 2 * i + 1]:
            return True
    return False
