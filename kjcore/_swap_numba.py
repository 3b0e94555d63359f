"""Numba twin of the native swap engine (same walk, same bus rules; see ``_swap.pyx``).

Pages are copied as 512 uint64 words through an explicit loop over a wider view of RAM, which
Numba turns into vector code; slice assignment inside the page loop is several times slower.
"""
import numpy as np
from numba import njit

ERR_NO_DONE = -1
ERR_BUS = -2
_U32 = 0xFFFFFFFF
_QWORDS = 512


@njit(cache=True, inline="always")
def _copy_page(ram64, size, dst, src, strict):
    src_in = src + 4096 <= size
    dst_in = dst + 4096 <= size
    if strict and not (src_in and dst_in):
        return False
    if dst_in and dst != src:
        d = dst >> 3
        if src_in:
            s = src >> 3
            for k in range(_QWORDS):
                ram64[d + k] = ram64[s + k]
        else:
            for k in range(_QWORDS):
                ram64[d + k] = np.uint64(0xFFFFFFFFFFFFFFFF)
    return True


@njit(cache=True)
def swap_pages_numba(ram, head, swap_page, max_words, strict, bad):
    """One swap pass; returns pages swapped, ERR_NO_DONE or ERR_BUS (address in ``bad[0]``).

    ``bad`` holds two int64: after a complete pass ``bad[1]`` is the word that ended the walk.
    """
    ram64 = ram.view(np.uint64)
    ram32 = ram.view(np.uint32)
    size = len(ram)
    word = np.int64(head)
    ptr = np.int64(0)
    dest = np.int64(0)
    swap = np.int64(swap_page)
    pages = 0
    nread = 0
    while True:
        if word & 0x1:
            dest = word & 0xFFFFF000
        elif word & 0x2:
            ptr = word & 0xFFFFF000
        elif word & 0x4:
            bad[1] = word
            return pages
        elif word & 0x8:
            src = word & 0xFFFFF000
            if not (_copy_page(ram64, size, swap, src, strict)
                    and _copy_page(ram64, size, src, dest, strict)
                    and _copy_page(ram64, size, dest, swap, strict)):
                if dest + 4096 > size:
                    bad[0] = dest
                elif src + 4096 > size:
                    bad[0] = src
                else:
                    bad[0] = swap
                return ERR_BUS
            dest = (dest + 4096) & _U32
            pages += 1
        nread += 1
        if nread > max_words:
            return ERR_NO_DONE
        if ptr + 4 <= size:
            word = np.int64(ram32[ptr >> 2])
        elif strict:
            bad[0] = ptr
            return ERR_BUS
        else:
            word = np.int64(_U32)
        ptr = (ptr + 4) & _U32

