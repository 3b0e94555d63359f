"""Bulk kexec_load layout fuzzing (SPEC §11): random layouts and their errno, compiled.

A *layout* is one kexec_load call's arguments as a numpy record (:data:`LAYOUT_DTYPE`), so
millions of them fit in one array.  :func:`random_layouts` makes them, biased toward the edges
that decide the kernel's checks; :func:`check_layouts` says, in compiled parallel code, what
errno a freshly booted :class:`kjcore.Machine` would return for each, without touching RAM.

How ENOMEM is decided without allocating
----------------------------------------
A normal load needs a control page and a swap page outside every destination range, then one
frame per source page plus one indirection page per 1023 list entries (IND_DONE never needs a
page of its own: it may take the link slot).  Every frame the destination-aware allocator parks
is a real destination page and is used later by its own destination, and a frame it finds
already claimed is exchanged, not lost, so the outcome does not depend on the free-list order:
the load fails exactly when fewer than two free frames lie outside the destination ranges, or
when ``sources + indirection pages > free frames - 2`` (free frames of a fresh machine: RAM above
``kernel_reserved`` outside the crashkernel region and, with a BIOS, outside the frames below
1 MiB the BIOS owns, :func:`kjcore.bios.layout.bios_frames`, as the machine's allocator has it).
The destination ranges are the kernel's: half-open wrapped ends on 2.6.27 (a range that wraps
past 2**32 marks no frame), inclusive ends on mainline (only an empty segment at address 0
wraps, marking every frame).

>>> import kjcore
>>> from kjcore.fuzz import random_layouts, check_layouts
>>> lay = random_layouts(10_000, seed=1, ram_size=16 << 20)
>>> err = check_layouts(lay, ram_size=16 << 20)
>>> import errno; sorted({errno.errorcode[e] if e else "OK" for e in err})
['EADDRNOTAVAIL', 'EINVAL', 'ENOMEM', 'OK']
"""
import numpy as np
from numba import njit, prange

from ..bios.layout import HIGH_MEMORY, bios_frames
from ..constants import (
    IND_ENTRIES_PER_PAGE,
    KEXEC_ARCH_386,
    KEXEC_ARCH_X86_64,
    KEXEC_ON_CRASH,
    KEXEC_PRESERVE_CONTEXT,
    KEXEC_SEGMENT_MAX,
    PAGE_SHIFT,
    PAGE_SIZE,
    PROFILES,
)
from ..load_checks import (
    ENOMEM,
    PROFILE_2627,
    PROFILE_MAINLINE,
    check_header,
    check_segments,
    find_crash_control_page,
)

#: one kexec_load call: flags, entry, number of segments and struct kexec_segment fields
LAYOUT_DTYPE = np.dtype([("flags", "<u4"), ("entry", "<u4"), ("nr_segments", "<u4"),
                         ("bufsz", "<u4", (KEXEC_SEGMENT_MAX,)),
                         ("mem", "<u4", (KEXEC_SEGMENT_MAX,)),
                         ("memsz", "<u4", (KEXEC_SEGMENT_MAX,))])

_U32 = 0xFFFFFFFF


@njit(cache=True)
def _overlap(a0, a1, b0, b1):
    """Length of [a0, a1) ∩ [b0, b1)."""
    lo = max(a0, b0)
    hi = min(a1, b1)
    return hi - lo if hi > lo else 0


@njit(cache=True)
def _free_in(f0, f1, reserved, nr_frames, c0, c1, excluded):
    """Free frames of a fresh machine inside frame range [f0, f1); ``excluded`` is the sorted
    array of the frames the BIOS owns that would otherwise be free."""
    excl = np.searchsorted(excluded, f1) - np.searchsorted(excluded, f0) if f1 > f0 else 0
    return _overlap(f0, f1, reserved, nr_frames) - _overlap(f0, f1, max(c0, reserved),
                                                          min(c1, nr_frames)) - excl


@njit(cache=True)
def _normal_nomem(mem, memsz, nr, mainline, reserved, nr_frames, c0, c1, excluded):
    """0 or ENOMEM for a normal load that passed every check (see module doc)."""
    free = _free_in(0, nr_frames, reserved, nr_frames, c0, c1, excluded)
    dest_free = 0
    nsrc = 0
    for i in range(nr):
        ms = np.int64(mem[i])
        sz = np.int64(memsz[i])
        nsrc += sz >> PAGE_SHIFT
        me = (ms + sz) & _U32
        if me > ms:
            dest_free += _free_in(ms >> PAGE_SHIFT, me >> PAGE_SHIFT, reserved, nr_frames, c0, c1,
                                  excluded)
    if mainline:
        for i in range(nr):
            if memsz[i] == 0 and mem[i] == 0:
                return ENOMEM           # inclusive end wraps: every page is a destination
    if free - dest_free < 2:
        return ENOMEM                   # no control page, or no swap page
    need = nsrc + (nr + nsrc + IND_ENTRIES_PER_PAGE - 1) // IND_ENTRIES_PER_PAGE
    return ENOMEM if need > free - 2 else 0


@njit(cache=True, parallel=True)
def _check_layouts(flags, entry, nr_segments, bufsz, mem, memsz, profile, kexec_jump,
                   crash_start, crash_end, ram_pages, reserved, c0, c1, excluded, out):
    mainline = profile == PROFILE_MAINLINE
    for k in prange(len(flags)):
        nr = np.int64(nr_segments[k])
        code = check_header(np.int64(flags[k]), nr, profile, kexec_jump)
        if code:
            out[k] = code & 0xFF
            continue
        if nr == 0:
            out[k] = 0
            continue
        crash = (flags[k] & KEXEC_ON_CRASH) != 0
        code = check_segments(entry[k], bufsz[k], mem[k], memsz[k], nr, crash, crash_start,
                              crash_end, profile, ram_pages)
        if code:
            out[k] = code & 0xFF
        elif crash:
            out[k] = ENOMEM if find_crash_control_page(mem[k], memsz[k], nr, crash_start,
                                                       crash_end) < 0 else 0
        else:
            out[k] = _normal_nomem(mem[k], memsz[k], nr, mainline, reserved, ram_pages, c0, c1,
                                   excluded)


def check_layouts(layouts, *, profile="2.6.27", ram_size, crashkernel=None, kexec_jump=True,
                  kernel_reserved=4 << 20, bios=True):
    """The errno (0 = success) ``Machine(...).kexec_load`` returns for each layout.

    Each layout is judged against a freshly booted machine built with the same arguments
    (``bios`` as :class:`kjcore.Machine` has it: the BIOS's frames below 1 MiB are never
    free), as root (CAP_SYS_BOOT) with the kexec lock free.  Compiled and parallel over
    layouts.  The result does not depend on the machine's ``alloc_seed`` (see the module
    docstring).  ``ValueError`` for ``bios=True`` below 1 MiB of RAM, as the machine.
    """
    layouts = np.asarray(layouts)
    if layouts.dtype != LAYOUT_DTYPE:
        raise TypeError("layouts must be an array of kjcore.fuzz.LAYOUT_DTYPE")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
    if bios and int(ram_size) < HIGH_MEMORY:
        raise ValueError(f"a machine with a BIOS needs ram_size={int(ram_size):#x} of at least "
                         "1 MiB (bios=False for less)")
    layouts = np.ascontiguousarray(layouts.reshape(-1))
    nr_frames = int(ram_size) >> PAGE_SHIFT
    reserved = int(kernel_reserved) >> PAGE_SHIFT
    if crashkernel is None:
        cs = ce = c0 = c1 = 0
    else:
        start, size = (int(v) for v in crashkernel)
        cs, ce, c0, c1 = start, start + size - 1, start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT
    excluded = np.array(bios_frames() if bios else [], dtype=np.int64)
    # Only the frames that would otherwise be free count (the allocator's boot order).
    excluded = excluded[(excluded >= reserved) & (excluded < nr_frames)
                        & ((excluded < c0) | (excluded >= c1))]
    prof = PROFILE_MAINLINE if profile == "mainline" else PROFILE_2627
    out = np.empty(len(layouts), dtype=np.int64)
    _check_layouts(layouts["flags"], layouts["entry"], layouts["nr_segments"], layouts["bufsz"],
                   layouts["mem"], layouts["memsz"], prof, bool(kexec_jump), cs, ce, nr_frames,
                   reserved, c0, c1, excluded, out)
    return out


@njit(cache=True)
def _random_layouts(out_flags, out_entry, out_nr, out_bufsz, out_mem, out_memsz, seed, ram_size,
                    crash_start, crash_size, reserved):
    np.random.seed(seed)
    n = len(out_flags)
    ram_pages = ram_size >> PAGE_SHIFT
    for k in range(n):
        # Flags: mostly legal combinations, sometimes a bad bit or a foreign architecture.
        r = np.random.randint(0, 100)
        fl = np.int64(0)
        if r < 30:
            fl = KEXEC_PRESERVE_CONTEXT
        elif r < 50:
            fl = KEXEC_ON_CRASH
        elif r < 55:
            fl = KEXEC_ON_CRASH | KEXEC_PRESERVE_CONTEXT
        elif r < 60:
            fl = np.int64(1) << np.random.randint(0, 16)
        r = np.random.randint(0, 100)
        if r < 40:
            fl |= KEXEC_ARCH_386
        elif r < 43:
            fl |= KEXEC_ARCH_X86_64
        elif r < 45:
            fl |= np.int64(np.random.randint(0, 1 << 16)) << 16
        out_flags[k] = fl
        # Segment count: 1..16 mostly, sometimes none or too many.
        r = np.random.randint(0, 100)
        if r < 3:
            nr = 0
        elif r < 6:
            nr = np.random.randint(17, 64)
        elif r < 30:
            nr = 16
        else:
            nr = np.random.randint(1, 17)
        out_nr[k] = nr
        crash = (fl & KEXEC_ON_CRASH) != 0 and crash_size > 0
        # Base address: inside the crash region for crash loads, else anywhere interesting.
        r = np.random.randint(0, 100)
        if crash and r < 70:
            addr = crash_start + (np.random.randint(0, max(crash_size >> PAGE_SHIFT, 1))
                                  << PAGE_SHIFT) * (np.random.randint(0, 4) == 0)
        elif r < 50:
            addr = reserved + (np.random.randint(0, max(ram_pages - (reserved >> PAGE_SHIFT), 1))
                               << PAGE_SHIFT)
        elif r < 60:
            addr = 0
        elif r < 70:
            addr = ram_size - (np.random.randint(0, 8) << PAGE_SHIFT)
        elif r < 80:
            addr = (_U32 + 1) - (np.random.randint(1, 8) << PAGE_SHIFT)
        else:
            addr = np.random.randint(0, 1 << 20) << PAGE_SHIFT
        limit = min(nr, KEXEC_SEGMENT_MAX)
        # One edge per layout (at one segment) keeps every outcome common: 0 none, 1 overlap,
        # 2 nested, 3 empty segment inside the previous, 4 same start, 5 misaligned mem,
        # 6 misaligned size, 7 bufsz > memsz, 8 wrap past 2**32, 9 random placement.
        edge = np.random.randint(0, 14)
        edge_seg = np.random.randint(0, max(limit, 1))
        for i in range(limit):
            r = np.random.randint(0, 100)
            if r < 12:
                size = 0
            elif r < 80:
                size = np.random.randint(1, 9) << PAGE_SHIFT
            elif r < 95:
                size = np.random.randint(1, max(ram_pages // 4, 2)) << PAGE_SHIFT
            else:
                size = np.random.randint(0, 1 << 20) << PAGE_SHIFT
            here = i == edge_seg
            if i > 0:
                pm = np.int64(out_mem[k, i - 1])
                pe = (pm + np.int64(out_memsz[k, i - 1])) & _U32
                addr = pe if np.random.randint(0, 2) == 0 else \
                    pe + (np.random.randint(1, 16) << PAGE_SHIFT)
                if here and edge == 1:
                    addr = pe - PAGE_SIZE
                elif here and edge == 2:
                    addr = pm + (np.random.randint(0, 3) << PAGE_SHIFT)
                elif here and edge == 3:
                    addr = pm + (np.random.randint(0, 3) << PAGE_SHIFT)
                    size = 0
                elif here and edge == 4:
                    addr = pm
            if here and edge == 5:
                addr += np.random.randint(1, PAGE_SIZE)
            elif here and edge == 6:
                size += np.random.randint(1, PAGE_SIZE)
            elif here and edge == 8:
                addr = (_U32 + 1) - (np.random.randint(0, 4) << PAGE_SHIFT)
                size = np.random.randint(1, 8) << PAGE_SHIFT
            elif here and edge == 9:
                addr = np.random.randint(0, 1 << 20) << PAGE_SHIFT
            addr &= _U32
            size &= _U32
            out_mem[k, i] = addr
            out_memsz[k, i] = size
            r = np.random.randint(0, 100)
            if here and edge == 7:
                b = min(size + np.random.randint(1, 3 * PAGE_SIZE), _U32)
            elif r < 40:
                b = size
            elif r < 85:
                b = np.random.randint(0, size + 1)
            else:
                b = 0
            out_bufsz[k, i] = b
        for i in range(limit, KEXEC_SEGMENT_MAX):
            out_mem[k, i] = 0
            out_memsz[k, i] = 0
            out_bufsz[k, i] = 0
        # Entry: a segment start, a crash-region edge, or anything.
        r = np.random.randint(0, 100)
        if r < 50 and limit > 0:
            e = np.int64(out_mem[k, np.random.randint(0, limit)])
        elif r < 80 and crash_size > 0:
            edge = np.random.randint(0, 4)
            if edge == 0:
                e = crash_start
            elif edge == 1:
                e = crash_start + crash_size - 1
            elif edge == 2:
                e = crash_start + crash_size
            else:
                e = crash_start - 1
        else:
            e = np.random.randint(0, 1 << 32)
        out_entry[k] = e & _U32


def random_layouts(n, seed, *, ram_size=64 << 20, crashkernel=None, kernel_reserved=4 << 20):
    """``n`` random layouts (:data:`LAYOUT_DTYPE`), reproducible from ``seed``.

    Biased toward the edges of SPEC §4: touching, overlapping and nested segments, empty
    segments at either end of another, ranges wrapping past 2**32, misaligned ends, bufsz just
    above memsz, too many segments, bad flags and foreign architectures, crash-region
    boundaries, and sizes around the free memory of a ``ram_size`` machine (ENOMEM).
    """
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    out = np.zeros(n, dtype=LAYOUT_DTYPE)
    cs, csz = (0, 0) if crashkernel is None else (int(crashkernel[0]), int(crashkernel[1]))
    if n:
        _random_layouts(out["flags"], out["entry"], out["nr_segments"], out["bufsz"], out["mem"],
                        out["memsz"], int(seed) & 0xFFFFFFFF, int(ram_size), cs, csz,
                        int(kernel_reserved))
    return out


def layout_segments(layout):
    """``(entry, [Segment.zero ...], flags)`` of one layout, ready for ``Machine.kexec_load``."""
    from ..segment import Segment
    nr = min(int(layout["nr_segments"]), KEXEC_SEGMENT_MAX)
    segs = [Segment.zero(int(layout["bufsz"][i]), int(layout["mem"][i]), int(layout["memsz"][i]))
            for i in range(nr)]
    extra = int(layout["nr_segments"]) - nr
    segs += [Segment.zero(0, 0, 0)] * max(extra, 0)
    return int(layout["entry"]), segs, int(layout["flags"])

