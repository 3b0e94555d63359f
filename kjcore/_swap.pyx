# cython: boundscheck=False, wraparound=False, cdivision=True
"""Native swap engine: one pass of the relocation routine's ``swap_pages`` (SPEC §7.6) in C.

The walk is the routine's, word for word: the head word first, then words read from the current
indirection position; flags are tested in the order DESTINATION, INDIRECTION, DONE, SOURCE; a
word with none of them is skipped; each SOURCE page S costs three page copies through the swap
page (S -> swap, D -> S, swap -> D) and advances the destination D by one page, wrapping at
2**32.  Guest physical addresses past the end of RAM behave like an empty bus (reads all ones,
writes dropped) unless ``strict`` is set, in which case the pass stops with an error.
Runs without the GIL.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.string cimport memcpy, memset

cdef enum:
    PAGE = 4096

cdef uint32_t MASK = 0xFFFFF000u

# Error codes returned instead of a page count (the Python wrapper raises on them).
cdef enum:
    ERR_NO_DONE = -1
    ERR_BUS = -2


cdef inline bint copy_page(uint8_t* ram, int64_t size, uint32_t dst, uint32_t src,
                           bint strict) noexcept nogil:
    """Copy one page on the physical bus; False on a strict-bus violation."""
    cdef bint src_in = <int64_t>src + PAGE <= size
    cdef bint dst_in = <int64_t>dst + PAGE <= size
    if strict and not (src_in and dst_in):
        return False
    if dst_in:
        if src_in:
            if dst != src:
                memcpy(ram + dst, ram + src, PAGE)
        else:
            memset(ram + dst, 0xFF, PAGE)
    return True


cdef int64_t swap_walk(uint8_t* ram, int64_t size, uint32_t head, uint32_t swap,
                       int64_t max_words, bint strict, uint32_t* bad,
                       uint32_t* stop) noexcept nogil:
    cdef uint32_t word = head, ptr = 0, dest = 0, src
    cdef int64_t pages = 0, nread = 0
    while True:
        if word & 0x1:
            dest = word & MASK
        elif word & 0x2:
            ptr = word & MASK
        elif word & 0x4:
            stop[0] = word
            return pages
        elif word & 0x8:
            src = word & MASK
            if not (copy_page(ram, size, swap, src, strict)
                    and copy_page(ram, size, src, dest, strict)
                    and copy_page(ram, size, dest, swap, strict)):
                bad[0] = dest if <int64_t>dest + PAGE > size else (
                    src if <int64_t>src + PAGE > size else swap)
                return ERR_BUS
            dest = dest + PAGE
            pages += 1
        nread += 1
        if nread > max_words:
            return ERR_NO_DONE
        if <int64_t>ptr + 4 <= size:
            memcpy(&word, ram + ptr, 4)
        elif strict:
            bad[0] = ptr
            return ERR_BUS
        else:
            word = 0xFFFFFFFF
        ptr = ptr + 4


def swap_pages_native(uint8_t[::1] ram, uint32_t head, uint32_t swap_page, int64_t max_words,
                      bint strict):
    """Run one swap pass over ``ram``; returns ``(result, bad_address, stop_word)``.

    ``result`` is the number of source pages swapped (``stop_word`` is then the word that
    ended the walk), ERR_NO_DONE when more than ``max_words`` words were read without
    IND_DONE, or ERR_BUS (strict bus) with the offending address.
    """
    cdef uint32_t bad = 0, stop = 0
    cdef int64_t size = ram.shape[0]
    cdef uint8_t* base = &ram[0]
    cdef int64_t result
    with nogil:
        result = swap_walk(base, size, head, swap_page, max_words, strict, &bad, &stop)
    return result, bad, stop
