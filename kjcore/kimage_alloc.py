"""Loading a kimage: the kernel's ``kimage_load`` (SPEC §4.1 rules 7-12, §5).

:func:`load_image` is the public, validating wrapper: it checks the segments (rules 7-11),
builds the image and returns a :class:`~kjcore.kimage.KImage`, or raises
:class:`~kjcore.errors.KexecError` with the kernel's errno.  RAM is written only once the whole
load has succeeded, so a rejected load changes no RAM byte and gives every frame back (SPEC §4.2).

A normal image is planned by the private compiled kernel ``_plan_normal``, which replays frame
by frame what the 2.6.27 kernel does: control page, swap page, then per segment one
IND_DESTINATION entry and per page one source page chosen by the destination-aware allocator,
with indirection pages chained every 1023 entries.  It decides *which frame plays which role*
and the final content of every indirection word but writes no RAM; moving a source page's
content to a new frame (the kernel's ``copy_highpage``) is therefore just rewriting its
IND_SOURCE word.  It pops frames straight off the allocator's free stack and checks every frame
it pops (in range, not popped twice), so a corrupt free stack gives an error, never a write
outside its arrays.  Compiled with Numba: a 256 MiB image is 65 536 allocator rounds.

A crash image's bytes go straight to their destinations; the 32-bit destination range wraps
past 4 GiB as the kernel's ``unsigned long`` does (2.6.27 accepts such a segment), and bytes
whose address is past the end of RAM are dropped like any write to the empty bus (SPEC §3).
"""
import errno

import numpy as np
from numba import njit

from .constants import (
    IND_DESTINATION,
    IND_DONE,
    IND_ENTRIES_PER_PAGE,
    IND_INDIRECTION,
    IND_SOURCE,
    KEXEC_CONTROL_MEMORY_LIMIT,
    KEXEC_ON_CRASH,
    KEXEC_PRESERVE_CONTEXT,
    PAGE_SHIFT,
    PAGE_SIZE,
)
from .errors import KexecError
from .kimage import KImage
from .load_checks import (
    PROFILE_2627,
    PROFILE_MAINLINE,
    RULE_NOMEM_CONTROL,
    RULE_NOMEM_CRASH_CONTROL,
    RULE_NOMEM_PAGES,
    RULE_NOMEM_SWAP,
    check_segments,
    describe,
    find_crash_control_page,
    pack,
)
from .segment import Segment, check_u32

_U32 = 0xFFFFFFFF
_LIMIT_FRAME = KEXEC_CONTROL_MEMORY_LIMIT >> PAGE_SHIFT
_WORDS = PAGE_SIZE // 4
_NO_DEST = -1

# Results of the frame-taking helpers besides a frame number.
_EMPTY = -1         # the free stack is empty (ENOMEM)
_BAD = -2           # the free stack holds a frame out of range or twice

# Plan status codes.
_PLAN_OK = 0
_PLAN_NOMEM_CONTROL = 1
_PLAN_NOMEM_SWAP = 2
_PLAN_NOMEM_PAGES = 3
_PLAN_CORRUPT = 4

_PLAN_RULE = {_PLAN_NOMEM_CONTROL: RULE_NOMEM_CONTROL, _PLAN_NOMEM_SWAP: RULE_NOMEM_SWAP,
              _PLAN_NOMEM_PAGES: RULE_NOMEM_PAGES}

# Slots of the ``out`` scalar array.
_OUT_CONTROL, _OUT_SWAP, _OUT_HEAD, _OUT_NR_IND, _OUT_NR_PARKED, _OUT_NR_SOURCES, _OUT_SIZE = \
    range(7)
# Slots of the add_entry cursor state (_ST_STATUS: a _PLAN_* code once adding failed).
_ST_HEAD, _ST_CUR, _ST_LAST, _ST_NIND, _ST_STATUS, _ST_SIZE = range(6)


# ---------------------------------------------------------------------------- public wrapper
def load_image(ram, allocator, entry, segments, flags, *, profile, crash_region):
    """Check ``segments`` (rules 7-11), load them as a kimage and return the new image.

    ``ram`` is the machine's physical memory (1-D ``uint8``), ``allocator`` its
    :class:`~kjcore.memory.FrameAllocator` (frames are taken straight off its free stack, which
    is put back as it was when the load fails), ``segments`` a non-empty list of
    :class:`~kjcore.Segment`, ``flags`` the kexec_load flags (``KEXEC_ON_CRASH`` picks a crash
    image, ``KEXEC_PRESERVE_CONTEXT`` is recorded), ``profile`` ``PROFILE_2627`` or
    ``PROFILE_MAINLINE`` (:mod:`kjcore.load_checks`), ``crash_region`` the crashkernel region
    as ``(start, inclusive end)``, ``(0, 0)`` when none is configured.

    Raises :class:`KexecError` with the kernel's errno (EADDRNOTAVAIL, EINVAL, ENOMEM), and
    ``RuntimeError`` when the allocator's free stack is corrupt (a frame out of range or listed
    twice).  Either way no RAM byte changed and the allocator is as it was.  The slots, the
    kexec lock and the control page's NX bit are the caller's (:meth:`kjcore.Machine.kexec_load`).
    """
    if not isinstance(ram, np.ndarray) or ram.dtype != np.uint8 or ram.ndim != 1 \
            or not ram.flags.c_contiguous or len(ram) % PAGE_SIZE:
        raise TypeError("ram must be a contiguous 1-D uint8 array of whole pages")
    if allocator.nr_frames != len(ram) >> PAGE_SHIFT:
        raise ValueError("the allocator does not manage the frames of this ram")
    if profile not in (PROFILE_2627, PROFILE_MAINLINE):
        raise ValueError(f"profile must be PROFILE_2627 or PROFILE_MAINLINE, not {profile!r}")
    segs = list(segments)
    if not segs or not all(isinstance(s, Segment) for s in segs):
        raise TypeError("segments must be a non-empty list of kjcore.Segment")
    entry, flags = check_u32("entry", entry), check_u32("flags", flags)
    cs, ce = (check_u32(name, v) for name, v in zip(("crash start", "crash end"), crash_region))
    crash = bool(flags & KEXEC_ON_CRASH)
    bufsz, mem, memsz = _segment_arrays(segs)
    code = check_segments(entry, bufsz, mem, memsz, len(segs), crash, cs, ce, profile,
                          len(ram) >> PAGE_SHIFT)
    if code:
        raise KexecError(code & 0xFF, describe(code))
    # Every buffer is read before anything is written, so a buffer that cannot be read fails
    # the load with RAM and allocator untouched.
    data = [_segment_bytes(s, ram) for s in segs]
    if crash:
        control = find_crash_control_page(mem, memsz, len(segs), cs, ce)
        if control < 0:
            raise KexecError(errno.ENOMEM, describe(pack(errno.ENOMEM, RULE_NOMEM_CRASH_CONTROL)))
        for s, d in zip(segs, data):
            _write_crash_segment(ram, s, d)
        return _new_image(ram, entry, segs, flags, head=IND_DONE, control_page=int(control))
    return _load_normal(ram, allocator, entry, segs, data, flags, mem, memsz,
                        profile == PROFILE_MAINLINE)


def _segment_arrays(segs):
    """bufsz, mem, memsz of the segments as int64 arrays, for the compiled checks."""
    table = np.array([(s.bufsz, s.mem, s.memsz) for s in segs], dtype=np.int64).reshape(-1, 3)
    return (np.ascontiguousarray(table[:, k]) for k in range(3))


def _segment_bytes(seg, ram):
    """The segment's bytes as a uint8 array (None for a zero segment), not aliasing ``ram``."""
    if seg.buf is None or not seg.bufsz:
        return None
    data = np.frombuffer(seg.read(0, seg.bufsz), dtype=np.uint8)
    # A buffer that views the machine's own RAM could be overwritten while it is loaded.
    return data.copy() if np.may_share_memory(data, ram) else data


def _new_image(ram, entry, segs, flags, **layout):
    """The one place a load builds its :class:`KImage` (head and frames in ``layout``)."""
    return KImage(ram, type="crash" if flags & KEXEC_ON_CRASH else "default", start=entry,
                  segments=segs, preserve_context=bool(flags & KEXEC_PRESERVE_CONTEXT),
                  **layout)


def _write_crash_segment(ram, seg, data):
    """kimage_load_crash_segment: ``memsz`` bytes from ``mem`` (modulo 2**32), the buffer
    then zeros; bytes past the end of RAM are dropped."""
    first = min(seg.memsz, (1 << 32) - seg.mem)
    for addr, offset, length in ((seg.mem, 0, first), (0, first, seg.memsz - first)):
        end = min(addr + length, len(ram))
        if end <= addr:
            continue
        ram[addr:end] = 0
        if data is not None and offset < len(data):
            chunk = data[offset:offset + end - addr]
            ram[addr:addr + len(chunk)] = chunk


def _load_normal(ram, allocator, entry, segs, data, flags, mem, memsz, inclusive):
    nr_frames = allocator.nr_frames
    stack, top = allocator.stack, allocator.top
    nr_free = int(top[0])
    if not 0 <= nr_free <= len(stack):
        raise RuntimeError(f"the frame allocator is corrupt: {nr_free} free frames in a stack "
                           f"of {len(stack)}")
    saved = stack[:nr_free].copy()
    total_pages = int((memsz[:len(segs)] >> PAGE_SHIFT).sum())
    max_src = min(total_pages, nr_free) + 1
    max_ind = (len(segs) + max_src + 1) // IND_ENTRIES_PER_PAGE + 2
    words = np.zeros(max_ind * _WORDS, dtype=np.int64)
    written = np.zeros(max_ind, dtype=np.int64)
    ind_frames = np.zeros(max_ind, dtype=np.int64)
    src_pos = np.zeros(max_src, dtype=np.int64)
    parked = np.zeros(nr_frames, dtype=np.uint8)
    taken = np.zeros(nr_frames, dtype=np.uint8)
    parked_list = np.zeros(nr_free + 1, dtype=np.int64)
    dst_entry = np.full(nr_frames, -1, dtype=np.int64)
    held = np.zeros(nr_free + 1, dtype=np.int64)
    out = np.zeros(_OUT_SIZE, dtype=np.int64)
    status = _plan_normal(stack, top, mem, memsz, len(segs), inclusive, words, written,
                          ind_frames, src_pos, parked, taken, parked_list, dst_entry, held, out)
    if status != _PLAN_OK:
        top[0] = nr_free
        stack[:nr_free] = saved
        if status == _PLAN_CORRUPT:
            raise RuntimeError("the frame allocator is corrupt: its free stack holds a frame "
                               "outside RAM or the same frame twice; nothing was loaded")
        raise KexecError(errno.ENOMEM, describe(pack(errno.ENOMEM, _PLAN_RULE[status])))
    nind = int(out[_OUT_NR_IND])
    _commit_plan(ram, segs, data, words, written[:nind], ind_frames[:nind],
                 src_pos[:out[_OUT_NR_SOURCES]])
    plist = parked_list[:out[_OUT_NR_PARKED]]
    return _new_image(ram, entry, segs, flags, head=int(out[_OUT_HEAD]),
                      control_page=int(out[_OUT_CONTROL]) << PAGE_SHIFT,
                      swap_page=int(out[_OUT_SWAP]) << PAGE_SHIFT,
                      ind_frames=ind_frames[:nind].copy(), parked_frames=plist[parked[plist] != 0])


def _commit_plan(ram, segs, data, words, written, ind_frames, src_pos):
    """Write a successful plan into RAM: indirection words, then zeroed, filled sources."""
    pages = ram.reshape(-1, PAGE_SIZE)
    for k, frame in enumerate(ind_frames.tolist()):
        n = int(written[k])
        base = frame << PAGE_SHIFT
        ram[base:base + 4 * n] = words[k * _WORDS:k * _WORDS + n].astype("<u4").view(np.uint8)
    frames = (words[src_pos] >> PAGE_SHIFT).astype(np.int64)
    pages[frames] = 0
    first = 0
    for s, d in zip(segs, data):
        n = s.memsz >> PAGE_SHIFT
        seg_frames = frames[first:first + n]
        first += n
        if d is None:
            continue            # sources are already zeroed
        full = len(d) >> PAGE_SHIFT
        if full:
            pages[seg_frames[:full]] = d[:full * PAGE_SIZE].reshape(full, PAGE_SIZE)
        rest = len(d) - full * PAGE_SIZE
        if rest:
            base = int(seg_frames[full]) << PAGE_SHIFT
            ram[base:base + rest] = d[full * PAGE_SIZE:]


# ---------------------------------------------------------------------------- compiled planner
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
def _pop(stack, top, taken):
    """The next free frame, _EMPTY, or _BAD for a frame outside RAM or already taken."""
    t = top[0]
    if t == 0:
        return _EMPTY
    f = stack[t - 1]
    if f < 0 or f >= len(taken) or taken[f]:
        return _BAD
    top[0] = t - 1
    taken[f] = 1
    return f


@njit(cache=True)
def _alloc_control_page(stack, top, taken, mem, memsz, nr, inclusive, held):
    """kimage_alloc_normal_control_pages: a free frame below the limit outside every segment.

    Rejected frames are held aside during the search and released afterwards, the first rejected
    one ending on top of the free stack (the kernel frees its extra_pages list head first).
    Returns the frame, _EMPTY or _BAD.
    """
    nheld = 0
    frame = _EMPTY
    while nheld < len(held):
        f = _pop(stack, top, taken)
        if f < 0:
            frame = f
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
        taken[held[k]] = 0
        top[0] += 1
    return frame


@njit(cache=True)
def _alloc_page(stack, top, taken, mem, memsz, nr, inclusive, destination,
                words, parked, parked_list, nparked, dst_entry):
    """kimage_alloc_page: a frame for ``destination`` (or _NO_DEST) that is safe to swap through.

    Returns the frame, _EMPTY when memory ran out or _BAD.  ``nparked[0]`` counts frames ever
    parked.
    """
    if destination >= 0:
        df = destination >> PAGE_SHIFT
        if df < len(parked) and parked[df]:
            parked[df] = 0          # a parked frame serves its own destination now
            return df
    while True:
        f = _pop(stack, top, taken)
        if f < 0:
            return f
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
        if nparked[0] >= len(parked_list):
            return _BAD
        parked[f] = 1
        parked_list[nparked[0]] = f
        nparked[0] += 1


@njit(cache=True)
def _plan_normal(stack, top, mem, memsz, nr, inclusive, words, written, ind_frames, src_pos,
                 parked, taken, parked_list, dst_entry, held, out):
    """Plan a normal kimage; returns a _PLAN_* status, fills the arrays and ``out``.

    ``words`` is the staged content of the indirection pages, flat (page k = words[k*1024:]);
    ``written[k]`` is how many leading words of page k the kernel wrote; ``src_pos[n]`` is the
    position in ``words`` of the n-th IND_SOURCE entry (its page's data goes to that frame).
    ``parked``, ``taken`` and ``dst_entry`` have one element per frame of RAM.
    """
    nr_frames = len(dst_entry)
    if not (0 <= top[0] <= len(stack) and 1 <= nr <= min(len(mem), len(memsz))
            and len(parked) == nr_frames and len(taken) == nr_frames
            and len(words) >= len(ind_frames) * _WORDS and len(written) >= len(ind_frames)):
        return _PLAN_CORRUPT
    nparked = np.zeros(1, dtype=np.int64)
    control = _alloc_control_page(stack, top, taken, mem, memsz, nr, inclusive, held)
    if control < 0:
        return _PLAN_CORRUPT if control == _BAD else _PLAN_NOMEM_CONTROL
    out[_OUT_CONTROL] = control
    swap = _alloc_control_page(stack, top, taken, mem, memsz, nr, inclusive, held)
    if swap < 0:
        return _PLAN_CORRUPT if swap == _BAD else _PLAN_NOMEM_SWAP
    out[_OUT_SWAP] = swap

    # Cursor state of kimage_add_entry: the head word, the cursor (-1 = the head word, else a
    # position in words), the current page's reserved link slot, the number of pages.
    st = np.zeros(_ST_SIZE, dtype=np.int64)
    st[_ST_CUR] = -1
    st[_ST_LAST] = -1
    nsrc = 0
    for s in range(nr):
        dest = mem[s] & 0xFFFFF000
        if _add_entry(st, dest | IND_DESTINATION, stack, top, taken, mem, memsz, nr, inclusive,
                      words, written, ind_frames, parked, parked_list, nparked, dst_entry) < 0:
            break
        for _ in range(memsz[s] >> PAGE_SHIFT):
            frame = _alloc_page(stack, top, taken, mem, memsz, nr, inclusive, dest,
                                words, parked, parked_list, nparked, dst_entry)
            if frame < 0 or nsrc >= len(src_pos):
                st[_ST_STATUS] = _PLAN_NOMEM_PAGES if frame == _EMPTY else _PLAN_CORRUPT
                break
            pos = _add_entry(st, (frame << PAGE_SHIFT) | IND_SOURCE, stack, top, taken, mem,
                             memsz, nr, inclusive, words, written, ind_frames, parked,
                             parked_list, nparked, dst_entry)
            if pos < 0:
                break
            src_pos[nsrc] = pos
            nsrc += 1
            df = dest >> PAGE_SHIFT
            if df < nr_frames and dst_entry[df] < 0:
                dst_entry[df] = pos
            dest = (dest + PAGE_SIZE) & _U32
        if st[_ST_STATUS]:
            break
    out[_OUT_NR_IND] = st[_ST_NIND]
    out[_OUT_NR_PARKED] = nparked[0]
    out[_OUT_NR_SOURCES] = nsrc
    if st[_ST_STATUS]:
        return st[_ST_STATUS]
    # kimage_terminate: DONE at the cursor, stepping past a non-zero word but never allocating
    # (when the page is full, DONE takes its link slot).
    cur = st[_ST_CUR]
    if words[cur] != 0:
        cur += 1
    if cur >= len(words):
        return _PLAN_CORRUPT
    words[cur] = IND_DONE
    k = st[_ST_NIND] - 1
    written[k] = max(written[k], cur + 1 - k * _WORDS)
    out[_OUT_HEAD] = st[_ST_HEAD]
    return _PLAN_OK


@njit(cache=True)
def _add_entry(st, entry, stack, top, taken, mem, memsz, nr, inclusive,
               words, written, ind_frames, parked, parked_list, nparked, dst_entry):
    """kimage_add_entry: append ``entry``, chaining a new indirection page when the current one
    is full.  Returns the entry's position in ``words``, or -1 (and sets the status)."""
    cur = st[_ST_CUR]
    val = st[_ST_HEAD] if cur < 0 else words[cur]
    if val != 0:
        cur += 1
    if cur == st[_ST_LAST]:
        nind = st[_ST_NIND]
        ind = _EMPTY
        if nind < len(ind_frames):
            ind = _alloc_page(stack, top, taken, mem, memsz, nr, inclusive, _NO_DEST,
                              words, parked, parked_list, nparked, dst_entry)
        if ind < 0:
            st[_ST_STATUS] = _PLAN_CORRUPT if ind == _BAD else _PLAN_NOMEM_PAGES
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
