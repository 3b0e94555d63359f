"""The destination-aware page allocator and indirection-list builder of a normal kimage (SPEC §5).

``plan_normal_image`` replays, frame by frame, what the 2.6.27 kernel does when it loads a
normal image: control page, swap page, then per segment one IND_DESTINATION entry and per page
one source page chosen by the destination-aware allocator, with indirection pages chained
every 1023 entries.  It decides *which frame plays which role* and the final content of every
indirection word, but writes no RAM: the caller commits the plan only if it succeeded, so a load
that runs out of memory leaves RAM untouched (SPEC §4.2).  Moving a source page's content to a
new frame (the kernel's ``copy_highpage``) is therefore just rewriting its IND_SOURCE word.

Compiled with Numba: a 256 MiB image is 65 536 allocator rounds.
"""
import numpy as np
from numba import njit

from .constants import (IND_DESTINATION, IND_DONE, IND_ENTRIES_PER_PAGE, IND_INDIRECTION,
                        IND_SOURCE, KEXEC_CONTROL_MEMORY_LIMIT, PAGE_SHIFT, PAGE_SIZE)

_U32 = 0xFFFFFFFF
_LIMIT_FRAME = KEXEC_CONTROL_MEMORY_LIMIT >> PAGE_SHIFT
_WORDS = PAGE_SIZE // 4
NO_DEST = -1

# Plan status codes (the caller maps them to ENOMEM messages).
PLAN_OK = 0
PLAN_NOMEM_CONTROL = 1
PLAN_NOMEM_SWAP = 2
PLAN_NOMEM_PAGES = 3

# Slots of the ``out`` scalar array.
OUT_CONTROL, OUT_SWAP, OUT_HEAD, OUT_NR_IND, OUT_NR_PARKED, OUT_NR_SOURCES, OUT_SIZE = range(7)
# Slots of the add_entry cursor state.
_ST_HEAD, _ST_CUR, _ST_LAST, _ST_NIND, _ST_FAILED, _ST_SIZE = range(6)


@njit(cache=True)
def is_destination_range(mem, memsz, nr, start, end_excl, inclusive):
    """Whether ``[start, end_excl)`` touches a segment, compared as the kernel does.

    2.6.27 compares half-open wrapped 32-bit ranges; mainline (``inclusive``) compares inclusive
    ends ``mem + memsz - 1``, so an empty segment marks the page just below it (and an empty
    segment at 0 wraps to mark every page).
    """
    for i in range(nr):
        ms = mem[i]
        if inclusive:
            me = (ms + memsz[i] - 1) & _U32
            if ((end_excl - 1) & _U32) >= ms and start <= me:
                return True
        else:
            me = (ms + memsz[i]) & _U32
            if (end_excl & _U32) > ms and start < me:
                return True
    return False


@njit(cache=True)
def _pop(stack, top):
    t = top[0]
    if t == 0:
        return -1
    top[0] = t - 1
    return stack[t - 1]


@njit(cache=True)
def _alloc_control_page(stack, top, mem, memsz, nr, inclusive, held):
    """kimage_alloc_normal_control_pages: a free frame below the limit outside every segment.

    Rejected frames are held aside during the search and released afterwards, the first rejected
    one ending on top of the free stack (the kernel frees its extra_pages list head first).
    """
    nheld = 0
    frame = -1
    while True:
        f = _pop(stack, top)
        if f < 0:
            break
        addr = f << PAGE_SHIFT
        if f + 1 >= _LIMIT_FRAME or is_destination_range(mem, memsz, nr, addr, addr + PAGE_SIZE,
                                                         inclusive):
            held[nheld] = f
            nheld += 1
            continue
        frame = f
        break
    for k in range(nheld - 1, -1, -1):
        stack[top[0]] = held[k]
        top[0] += 1
    return frame


@njit(cache=True)
def _alloc_page(stack, top, nr_frames, mem, memsz, nr, inclusive, destination,
                words, parked, parked_list, nparked, dst_entry):
    """kimage_alloc_page: a frame for ``destination`` (or NO_DEST) that is safe to swap through.

    Returns the frame, or -1 when memory ran out.  ``nparked[0]`` counts frames ever parked.
    """
    if destination >= 0:
        df = destination >> PAGE_SHIFT
        if df < nr_frames and parked[df]:
            parked[df] = 0          # a parked frame serves its own destination now
            return df
    while True:
        f = _pop(stack, top)
        if f < 0:
            return -1
        addr = f << PAGE_SHIFT
        if addr == destination:
            return f
        if not is_destination_range(mem, memsz, nr, addr, addr + PAGE_SIZE, inclusive):
            return f
        e = dst_entry[f]
        if e >= 0:
            # f is the destination of a page that already has a source: move that page's
            # content into f (its own destination now) and hand out the old source frame.
            w = words[e]
            old = w >> PAGE_SHIFT
            words[e] = (addr | (w & 0xFFF)) & _U32
            return old
        parked[f] = 1
        parked_list[nparked[0]] = f
        nparked[0] += 1


@njit(cache=True)
def plan_normal_image(stack, top, nr_frames, mem, memsz, nr, inclusive,
                      words, written, ind_frames, src_pos, parked, parked_list, dst_entry, held, out):
    """Plan a normal kimage; returns a PLAN_* status, fills the arrays and ``out``.

    ``words`` is the staged content of the indirection pages, flat (page k = words[k*1024:]);
    ``written[k]`` is how many leading words of page k the kernel wrote; ``src_pos[n]`` is the
    position in ``words`` of the n-th IND_SOURCE entry (its page's data goes to that frame).
    """
    nparked = np.zeros(1, dtype=np.int64)
    control = _alloc_control_page(stack, top, mem, memsz, nr, inclusive, held)
    if control < 0:
        return PLAN_NOMEM_CONTROL
    out[OUT_CONTROL] = control
    swap = _alloc_control_page(stack, top, mem, memsz, nr, inclusive, held)
    if swap < 0:
        return PLAN_NOMEM_SWAP
    out[OUT_SWAP] = swap

    # Cursor state of kimage_add_entry: the head word, the cursor (-1 = the head word, else a
    # position in words), the current page's reserved link slot, the number of pages.
    st = np.zeros(_ST_SIZE, dtype=np.int64)
    st[_ST_CUR] = -1
    st[_ST_LAST] = -1
    nsrc = 0
    for s in range(nr):
        dest = mem[s] & 0xFFFFF000
        if _add_entry(st, dest | IND_DESTINATION, stack, top, nr_frames, mem, memsz, nr, inclusive,
                      words, written, ind_frames, parked, parked_list, nparked, dst_entry) < 0:
            break
        for _ in range(memsz[s] >> PAGE_SHIFT):
            frame = _alloc_page(stack, top, nr_frames, mem, memsz, nr, inclusive, dest,
                                words, parked, parked_list, nparked, dst_entry)
            if frame < 0:
                st[_ST_FAILED] = 1
                break
            pos = _add_entry(st, (frame << PAGE_SHIFT) | IND_SOURCE, stack, top, nr_frames, mem,
                             memsz, nr, inclusive, words, written, ind_frames, parked, parked_list,
                             nparked, dst_entry)
            if pos < 0:
                break
            src_pos[nsrc] = pos
            nsrc += 1
            df = dest >> PAGE_SHIFT
            if df < nr_frames and dst_entry[df] < 0:
                dst_entry[df] = pos
            dest = (dest + PAGE_SIZE) & _U32
        if st[_ST_FAILED]:
            break
    out[OUT_NR_IND] = st[_ST_NIND]
    out[OUT_NR_PARKED] = nparked[0]
    out[OUT_NR_SOURCES] = nsrc
    if st[_ST_FAILED]:
        return PLAN_NOMEM_PAGES
    # kimage_terminate: DONE at the cursor, stepping past a non-zero word but never allocating
    # (when the page is full, DONE takes its link slot).
    cur = st[_ST_CUR]
    if words[cur] != 0:
        cur += 1
    words[cur] = IND_DONE
    k = st[_ST_NIND] - 1
    written[k] = max(written[k], cur + 1 - k * _WORDS)
    out[OUT_HEAD] = st[_ST_HEAD]
    return PLAN_OK


@njit(cache=True)
def _add_entry(st, entry, stack, top, nr_frames, mem, memsz, nr, inclusive,
               words, written, ind_frames, parked, parked_list, nparked, dst_entry):
    """kimage_add_entry: append ``entry``, chaining a new indirection page when the current one
    is full.  Returns the entry's position in ``words``, or -1 (and sets the failed flag)."""
    cur = st[_ST_CUR]
    val = st[_ST_HEAD] if cur < 0 else words[cur]
    if val != 0:
        cur += 1
    if cur == st[_ST_LAST]:
        nind = st[_ST_NIND]
        ind = -1
        if nind < len(ind_frames):
            ind = _alloc_page(stack, top, nr_frames, mem, memsz, nr, inclusive, NO_DEST,
                              words, parked, parked_list, nparked, dst_entry)
        if ind < 0:
            st[_ST_FAILED] = 1
            return -1
        link = (ind << PAGE_SHIFT) | IND_INDIRECTION
        if cur < 0:
            st[_ST_HEAD] = link
        else:
            words[cur] = link
        ind_frames[nind] = ind
        cur = nind * _WORDS
        st[_ST_LAST] = cur + IND_ENTRIES_PER_PAGE
        st[_ST_NIND] = nind + 1
    words[cur] = entry
    words[cur + 1] = 0
    k = st[_ST_NIND] - 1
    written[k] = max(written[k], cur + 2 - k * _WORDS)
    st[_ST_CUR] = cur + 1
    return cur
