# cython: boundscheck=False, wraparound=False, cdivision=True
"""Native swap engine: one pass of the relocation routine's ``swap_pages`` (SPEC §7.6) in C.

The walk is the routine's, word for word: the head word first, then words read from the current
indirection position; flags are tested in the order DESTINATION, INDIRECTION, DONE, SOURCE; a
word with none of them is skipped; each SOURCE page S costs three page copies through the swap
page (S -> swap, D -> S, swap -> D) and advances the destination D by one page, wrapping at
2**32.  Guest physical addresses past the end of RAM behave like an empty bus (reads all ones,
writes dropped) unless ``strict`` is set, in which case the pass stops with an error.

Both loops run without the GIL, are bounded by ``max_words`` and take it back briefly every
``SIGNAL_PAGES`` pages / ``SIGNAL_WORDS`` words to run Python's signal handlers: Ctrl-C stops a
huge pass within milliseconds (the exception propagates; the pass stops between two pages).

:func:`plan_pass` walks a list without copying anything and tells whether the native pass is
exactly what the relocation routine would do (SPEC §12 invariant 13): the walk must end, and no
copy may write a page the walk reads or a protected page (the routine's own code and stack).
"""
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.string cimport memcpy, memset

cdef enum:
    PAGE = 4096
    PAGE_SHIFT = 12

cdef uint32_t MASK = 0xFFFFF000u
cdef int64_t SPACE = 1LL << 32

# Results returned instead of a page count (the Python wrapper raises or steps aside on them).
cdef enum:
    ERR_NO_DONE = -1
    ERR_BUS = -2
    ERR_HAZARD = -3
    ERR_SIGNAL = -9     # a signal handler raised: the exception is set

#: how often the loops run Python's signal handlers
cdef enum:
    SIGNAL_PAGES = 256
    SIGNAL_WORDS = 1 << 20

# plan_pass's frame marks
cdef enum:
    F_READ = 1          # the walk reads words from this page
    F_WRITTEN = 2       # a copy writes this page
    F_PROTECTED = 4     # must not be written (set by the caller)

#: plan_pass results and the ``frames`` mark of a page no copy may write
PLAN_OK = 0
PLAN_NO_DONE = ERR_NO_DONE
PLAN_BUS = ERR_BUS
PLAN_HAZARD = ERR_HAZARD
PLAN_PROTECTED = F_PROTECTED


cdef int signals() except -1 with gil:
    PyErr_CheckSignals()
    return 0


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
                       uint32_t* stop) except ERR_SIGNAL nogil:
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
            if pages % SIGNAL_PAGES == 0:
                signals()
        nread += 1
        if nread > max_words:
            return ERR_NO_DONE
        if nread % SIGNAL_WORDS == 0:
            signals()
        if <int64_t>ptr + 4 <= size:
            memcpy(&word, ram + ptr, 4)
        elif strict:
            bad[0] = ptr
            return ERR_BUS
        else:
            word = 0xFFFFFFFF
        ptr = ptr + 4


cdef inline bint mark_written(uint8_t* frames, int64_t size, uint32_t page) noexcept nogil:
    """Record a page a copy writes; False when it is read by the walk or protected."""
    if <int64_t>page + PAGE > size:
        return True                     # past RAM: writes go nowhere
    frames[page >> PAGE_SHIFT] |= F_WRITTEN
    return not frames[page >> PAGE_SHIFT] & (F_READ | F_PROTECTED)


cdef int64_t plan_walk(const uint8_t* ram, int64_t size, uint32_t head, uint32_t swap,
                       int64_t max_words, bint strict, uint8_t* frames,
                       int64_t* out) except ERR_SIGNAL nogil:
    """The walk of swap_walk without the copies.

    ``out`` = [words read after the head, bad address, then per kind the words decoded (the
    head and the final DONE included): DESTINATION, INDIRECTION, DONE, SOURCE, skipped].
    """
    cdef uint32_t word = head, dest = 0, src
    cdef int64_t ptr = 0, nread = 0, frame, skipped
    while True:
        if word & 0x1:
            dest = word & MASK
            out[2] += 1
        elif word & 0x2:
            ptr = word & MASK
            out[3] += 1
        elif word & 0x4:
            out[4] += 1
            break
        elif word & 0x8:
            src = word & MASK
            if strict and not (<int64_t>swap + PAGE <= size and <int64_t>src + PAGE <= size
                               and <int64_t>dest + PAGE <= size):
                out[1] = dest if <int64_t>dest + PAGE > size else (
                    src if <int64_t>src + PAGE > size else swap)
                return ERR_BUS
            if not (mark_written(frames, size, swap) and mark_written(frames, size, src)
                    and mark_written(frames, size, dest)):
                return ERR_HAZARD
            dest = dest + PAGE
            out[5] += 1
        else:
            out[6] += 1
        if nread >= max_words:
            return ERR_NO_DONE
        if ptr + 4 <= size:
            if ptr % PAGE == 0:
                # A page is only ever entered at its first word.  With nothing written into
                # the pages the walk reads, entering one twice repeats the walk forever.
                frame = ptr >> PAGE_SHIFT
                if frames[frame] & F_READ:
                    return ERR_NO_DONE
                if frames[frame] & F_WRITTEN:
                    return ERR_HAZARD
                frames[frame] |= F_READ
            memcpy(&word, ram + ptr, 4)
            ptr += 4
            nread += 1
            if nread % SIGNAL_WORDS == 0:
                signals()
        elif strict:
            out[1] = ptr
            return ERR_BUS
        else:
            # Every word up to the wrap at 2**32 reads all ones, DESTINATION 0xFFFFF000: all
            # but the last are counted here, the last is decoded by the loop.
            skipped = (SPACE - ptr) // 4 - 1
            nread += skipped + 1
            out[2] += skipped
            word = 0xFFFFFFFF
            ptr = 0
            if nread > max_words:
                return ERR_NO_DONE
    out[0] = nread
    return 0


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


def plan_pass(const uint8_t[::1] ram, uint32_t head, uint32_t swap_page, int64_t max_words,
              bint strict, uint8_t[::1] frames):
    """Walk the list without copying; returns ``(result, counts)``.

    ``frames`` holds one byte per page of ``ram``, zero except PLAN_PROTECTED on the pages no
    copy may write; it is used as scratch.  ``result`` is PLAN_OK, PLAN_NO_DONE (the walk
    repeats itself or reads more than ``max_words`` words), PLAN_BUS (strict bus, ``counts[1]``
    is the address) or PLAN_HAZARD (a copy would write a page the walk reads, or a protected
    page).  ``counts`` is a list: words read after the head, bad address, and the words
    decoded as DESTINATION, INDIRECTION, DONE, SOURCE and skipped (head and DONE included).
    """
    cdef int64_t size = ram.shape[0]
    cdef int64_t out[7]
    cdef int64_t result
    cdef int k
    if frames.shape[0] != size // PAGE or size % PAGE or size == 0:
        raise ValueError("frames must hold one byte per page of a page-multiple ram")
    for k in range(7):
        out[k] = 0
    with nogil:
        result = plan_walk(&ram[0], size, head, swap_page, max_words, strict, &frames[0], out)
    return result, [out[k] for k in range(7)]
