"""``swap_pages``: one pass of the kexec jump page swap over an indirection list in RAM.

The relocation routine swaps every destination page with its source page through the swap page
(SPEC §7.6).  kjcore has three implementations that must leave byte-identical RAM:

``"native"``
    ``kjcore/_swap.pyx``: C ``memcpy`` per page, no GIL (the fast path of ``engine="native"``).
``"numba"``
    :mod:`kjcore._swap_numba`: the same walk compiled by Numba.
``"reference"``
    plain numpy, one page slice at a time: the readable oracle.

The emulated engine (the i386 routine on kjcore's CPU) is a fourth, checked against these.
:func:`swap_pass` also returns the word that ended the walk (the routine leaves it in ECX);
:func:`plan_pass` walks a list without copying and says whether a native pass is exactly what
the routine would do (the jump's native engine leaves every other pass to the CPU).  The
native loops are bounded and run Python's signal handlers periodically (Ctrl-C works).

>>> import numpy as np, kjcore
>>> m = kjcore.Machine(ram_size=16 << 20)
>>> m.ram[0x100000:0x101000] = 7                       # the first kernel's data
>>> m.kexec_load(0x100000, [kjcore.Segment(b"\\x01" * 4096, 0x100000, 0x1000)],
...              kjcore.KEXEC_PRESERVE_CONTEXT)
>>> img = m.kexec_image
>>> swap_pages(m.ram, img.head, img.swap_page)         # swap in: destination holds the image
1
>>> int(m.ram[0x100000]), int(m.ram[img.source_pages()[0]])
(1, 7)
>>> swap_pages(m.ram, img.head, img.swap_page)         # swap back: the kernel's data returns
1
>>> int(m.ram[0x100000])
7
"""
import numpy as np

from .constants import PAGE_SIZE
from .errors import SwapBusError
from .segment import check_u32

ENGINES = ("native", "numba", "reference")


def _check_ram(ram):
    if not isinstance(ram, np.ndarray) or ram.dtype != np.uint8 or ram.ndim != 1:
        raise TypeError("ram must be a 1-D numpy uint8 array")
    if not ram.flags.c_contiguous or not ram.flags.writeable:
        raise ValueError("ram must be C-contiguous and writeable")
    if len(ram) % PAGE_SIZE:
        raise ValueError("len(ram) must be a multiple of PAGE_SIZE")


#: words a terminating walk can read at most: every aligned 32-bit address once
MAX_WORDS = (1 << 30) + 1


def swap_pages(ram, head, swap_page, engine="native", *, strict_bus=False):
    """Walk the indirection list starting at ``head`` and swap every destination with its source.

    Returns the number of source pages swapped.  Raises ``RuntimeError`` when the list never
    reaches IND_DONE (corrupted RAM) and :class:`~kjcore.errors.SwapBusError` on a strict bus.
    """
    return swap_pass(ram, head, swap_page, engine, strict_bus=strict_bus)[0]


def swap_pass(ram, head, swap_page, engine="native", *, strict_bus=False):
    """:func:`swap_pages`, returning ``(pages swapped, the word that ended the walk)``.

    The second value is what the relocation routine leaves in ECX (SPEC 7.10).
    """
    _check_ram(ram)
    head = check_u32("head", head)
    swap_page = check_u32("swap_page", swap_page)
    if swap_page % PAGE_SIZE:
        raise ValueError(f"swap_page={swap_page:#x} is not page-aligned")
    limit = MAX_WORDS
    if engine == "native":
        from ._swap import swap_pages_native
        result, bad, stop = swap_pages_native(ram, head, swap_page, limit, bool(strict_bus))
    elif engine == "numba":
        from ._swap_numba import swap_pages_numba
        out = np.zeros(2, dtype=np.int64)
        result = swap_pages_numba(ram, head, swap_page, limit, bool(strict_bus), out)
        bad, stop = int(out[0]), int(out[1])
    elif engine == "reference":
        result, bad, stop = swap_pages_reference(ram, head, swap_page, limit, bool(strict_bus))
    else:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if result == -2:
        raise SwapBusError(bad)
    if result == -1:
        raise RuntimeError("the indirection list does not reach IND_DONE (corrupted RAM)")
    return int(result), int(stop)


#: the word kinds :func:`plan_pass` counts, in the flag order the walk tests them
WORD_KINDS = ("destination", "indirection", "done", "source", "skipped")


def plan_pass(ram, head, swap_page, *, protect=(), strict_bus=False, max_words=MAX_WORDS):
    """Walk a list without copying: ``(verdict, words read after the head, {kind: count})``.

    The verdict says what a pass over this list would do: ``"ok"`` -- it ends, and no copy
    writes a page the walk reads or a page holding an address of ``protect``, so a native pass
    does exactly what the relocation routine's walk does (the routine's code and stack are
    such pages); ``"no IND_DONE"`` -- the walk repeats itself (it enters a list page twice)
    or reads more than ``max_words`` words; ``"bus"`` -- on a strict bus it touches memory
    past RAM; ``"hazard"`` -- a copy would change the list being walked or a protected page,
    so only running the routine itself gives the right result.  The counts (:data:`WORD_KINDS`,
    head and final DONE included) are complete only for ``"ok"``.
    Memory: one byte per page of RAM; time: the words walked.
    """
    from . import _swap
    _check_ram(ram)
    head = check_u32("head", head)
    swap_page = check_u32("swap_page", swap_page)
    if swap_page % PAGE_SIZE:
        raise ValueError(f"swap_page={swap_page:#x} is not page-aligned")
    frames = np.zeros(len(ram) // PAGE_SIZE, dtype=np.uint8)
    for address in protect:
        if 0 <= address < len(ram):
            frames[address // PAGE_SIZE] = _swap.PLAN_PROTECTED
    result, counts = _swap.plan_pass(ram, head, swap_page, max(0, int(max_words)),
                                     bool(strict_bus), frames)
    verdict = {_swap.PLAN_OK: "ok", _swap.PLAN_NO_DONE: "no IND_DONE", _swap.PLAN_BUS: "bus",
               _swap.PLAN_HAZARD: "hazard"}[result]
    return verdict, counts[0], dict(zip(WORD_KINDS, counts[2:]))


def swap_pages_reference(ram, head, swap_page, limit, strict):
    """Plain-numpy swap pass: the readable oracle for the compiled engines.

    Returns ``(result, bad address, the word that ended the walk)`` like the native engine.
    """
    size = len(ram)

    def page(addr):
        return ram[addr:addr + PAGE_SIZE] if addr + PAGE_SIZE <= size else None

    def copy(dst, src):
        d, s = page(dst), page(src)
        if strict and (d is None or s is None):
            return False
        if d is not None:
            d[:] = s if s is not None else 0xFF
        return True

    word, ptr, dest, pages, nread = head, 0, 0, 0, 0
    while True:
        if word & 1:
            dest = word & 0xFFFFF000
        elif word & 2:
            ptr = word & 0xFFFFF000
        elif word & 4:
            return pages, 0, word
        elif word & 8:
            src = word & 0xFFFFF000
            if not (copy(swap_page, src) and copy(src, dest) and copy(dest, swap_page)):
                bad = dest if page(dest) is None else src if page(src) is None else swap_page
                return -2, bad, 0
            dest = (dest + PAGE_SIZE) & 0xFFFFFFFF
            pages += 1
        nread += 1
        if nread > limit:
            return -1, 0, 0
        if ptr + 4 <= size:
            word = int(ram[ptr:ptr + 4].view("<u4")[0])
        elif strict:
            return -2, ptr, 0
        else:
            word = 0xFFFFFFFF
        ptr = (ptr + 4) & 0xFFFFFFFF
