"""The argument checks of kexec_load(2), in the kernel's order (SPEC §4.1, §4.3).

One compiled implementation decides the errno of a layout up to the allocation stage; it is
used by :meth:`kjcore.Machine.kexec_load` (which then allocates for real) and by
:func:`kjcore.fuzz.check_layouts` (which then counts frames).  Results are packed into one
integer: ``errno | rule << 8 | (i + 1) << 16 | (j + 1) << 24`` so compiled code never raises and
Python can still say which rule failed for which segments.
"""
import errno

import numpy as np
from numba import njit

from .constants import (
    KEXEC_ARCH_386,
    KEXEC_ARCH_DEFAULT,
    KEXEC_ARCH_MASK,
    KEXEC_CRASH_HOTPLUG_SUPPORT,
    KEXEC_ON_CRASH,
    KEXEC_PRESERVE_CONTEXT,
    KEXEC_SEGMENT_MAX,
    KEXEC_UPDATE_ELFCOREHDR,
    PAGE_SHIFT,
)

_U32 = 0xFFFFFFFF
EINVAL = errno.EINVAL
EADDRNOTAVAIL = errno.EADDRNOTAVAIL
ENOMEM = errno.ENOMEM

PROFILE_2627 = 0
PROFILE_MAINLINE = 1

# Rule numbers (also used in messages); the SPEC §4.1 step is given in RULE_TEXT.
(RULE_NONE, RULE_FLAGS, RULE_ARCH, RULE_NR_SEGMENTS, RULE_CRASH_ENTRY, RULE_WRAP, RULE_ALIGN,
 RULE_OVERLAP, RULE_BUFSZ, RULE_SEGMENT_PAGES, RULE_TOTAL_PAGES, RULE_CRASH_RANGE,
 RULE_NOMEM_CONTROL, RULE_NOMEM_SWAP, RULE_NOMEM_PAGES, RULE_NOMEM_CRASH_CONTROL) = range(16)

RULE_TEXT = {
    RULE_FLAGS: "flag bits outside KEXEC_ARCH_MASK that are not legal (rule 2)",
    RULE_ARCH: "architecture field is neither KEXEC_ARCH_386 nor KEXEC_ARCH_DEFAULT (rule 3)",
    RULE_NR_SEGMENTS: "more than KEXEC_SEGMENT_MAX (16) segments (rule 4)",
    RULE_CRASH_ENTRY: "crash image entry outside the crashkernel region (rule 7)",
    RULE_WRAP: "mem + memsz overflows 32 bits (mainline rule)",
    RULE_ALIGN: "mem or mem + memsz not page-aligned (rule 8)",
    RULE_OVERLAP: "segments intersect (rule 9)",
    RULE_BUFSZ: "bufsz > memsz (rule 10)",
    RULE_SEGMENT_PAGES: "segment larger than half of RAM (mainline rule)",
    RULE_TOTAL_PAGES: "segments together larger than half of RAM (mainline rule)",
    RULE_CRASH_RANGE: "crash segment outside the crashkernel region (rule 11)",
    RULE_NOMEM_CONTROL: "no free frame for the control page (rule 12)",
    RULE_NOMEM_SWAP: "no free frame for the swap page (rule 12)",
    RULE_NOMEM_PAGES: "out of free frames for source or indirection pages (rule 12)",
    RULE_NOMEM_CRASH_CONTROL: "no room for the control page in the crashkernel region (rule 12)",
}


@njit(cache=True)
def pack(err, rule, i=-1, j=-1):
    """Pack a check result (see module docstring)."""
    return err | (rule << 8) | ((i + 1) << 16) | ((j + 1) << 24)


def unpack(code):
    """``(errno, rule, i, j)`` of a packed result; i/j are -1 where no segment is named."""
    return code & 0xFF, (code >> 8) & 0xFF, ((code >> 16) & 0xFF) - 1, ((code >> 24) & 0xFF) - 1


def describe(code):
    """Human-readable message for a packed failure."""
    err, rule, i, j = unpack(code)
    text = RULE_TEXT[rule]
    if j >= 0:
        return f"{text}: segments {i} and {j}"
    if i >= 0:
        return f"{text}: segment {i}"
    return text


@njit(cache=True)
def legal_flags(profile, kexec_jump):
    """The flag bits (outside the arch field) this kernel accepts."""
    legal = KEXEC_ON_CRASH
    if kexec_jump:
        legal |= KEXEC_PRESERVE_CONTEXT
    if profile == PROFILE_MAINLINE:
        legal |= KEXEC_UPDATE_ELFCOREHDR | KEXEC_CRASH_HOTPLUG_SUPPORT
    return legal


@njit(cache=True)
def check_header(flags, nr_segments, profile, kexec_jump):
    """Rules 2-4 (before the kexec lock is taken).  Returns 0 or a packed failure.

    2.6.27 checks flags, arch, count; mainline checks flags, count, arch (all EINVAL).
    """
    if flags & ~KEXEC_ARCH_MASK & ~legal_flags(profile, kexec_jump) & _U32:
        return pack(EINVAL, RULE_FLAGS)
    arch = flags & KEXEC_ARCH_MASK
    bad_arch = arch != KEXEC_ARCH_386 and arch != KEXEC_ARCH_DEFAULT
    too_many = nr_segments > KEXEC_SEGMENT_MAX
    if profile == PROFILE_MAINLINE:
        if too_many:
            return pack(EINVAL, RULE_NR_SEGMENTS)
        if bad_arch:
            return pack(EINVAL, RULE_ARCH)
    else:
        if bad_arch:
            return pack(EINVAL, RULE_ARCH)
        if too_many:
            return pack(EINVAL, RULE_NR_SEGMENTS)
    return 0


@njit(cache=True)
def check_segments(entry, bufsz, mem, memsz, nr, crash, crash_start, crash_end, profile,
                   ram_pages):
    """Rules 7-11 for ``nr`` >= 1 segments.  Returns 0 or a packed failure.

    All ends are computed modulo 2**32 exactly as the i386 kernel's ``unsigned long`` does;
    ``crash_end`` is inclusive (``crash_start == crash_end == 0`` when no region is configured).
    """
    mainline = profile == PROFILE_MAINLINE
    entry = np.int64(entry)
    if crash and (entry < crash_start or entry > crash_end):
        return pack(EADDRNOTAVAIL, RULE_CRASH_ENTRY)
    for i in range(nr):
        ms = np.int64(mem[i])
        me = (ms + np.int64(memsz[i])) & _U32
        if mainline and ms > me:
            return pack(EADDRNOTAVAIL, RULE_WRAP, i)
        if (ms & 0xFFF) or (me & 0xFFF):
            return pack(EADDRNOTAVAIL, RULE_ALIGN, i)
    for i in range(nr):
        ms = np.int64(mem[i])
        me = (ms + np.int64(memsz[i])) & _U32
        for j in range(i):
            ps = np.int64(mem[j])
            pe = (ps + np.int64(memsz[j])) & _U32
            if me > ps and ms < pe:
                return pack(EINVAL, RULE_OVERLAP, j, i)
    for i in range(nr):
        if np.int64(bufsz[i]) > np.int64(memsz[i]):
            return pack(EINVAL, RULE_BUFSZ, i)
    if mainline:
        half = ram_pages // 2
        total = 0
        for i in range(nr):
            pages = np.int64(memsz[i]) >> PAGE_SHIFT
            total += pages
            if pages > half:
                return pack(EINVAL, RULE_SEGMENT_PAGES, i)
        if total > half:
            return pack(EINVAL, RULE_TOTAL_PAGES)
    if crash:
        for i in range(nr):
            ms = np.int64(mem[i])
            me = (ms + np.int64(memsz[i]) - 1) & _U32
            if ms < crash_start or me > crash_end:
                return pack(EADDRNOTAVAIL, RULE_CRASH_RANGE, i)
    return 0


@njit(cache=True)
def find_crash_control_page(mem, memsz, nr, crash_start, crash_end):
    """kimage_alloc_crash_control_pages: the lowest page of the crashkernel region that touches
    no segment (inclusive ends), or -1.

    The kernel's search advances a hole past each segment it hits; with wrapped ends that advance
    could go backwards and loop forever, so a hole that does not move forward ends the search.
    """
    hole_start = (crash_start + 0xFFF) & 0xFFFFF000
    hole_end = hole_start + 0xFFF
    while hole_end <= crash_end:
        hit = False
        for i in range(nr):
            ms = np.int64(mem[i])
            me = (ms + np.int64(memsz[i]) - 1) & _U32
            if hole_end >= ms and hole_start <= me:
                nxt = ((me + 0xFFF) & _U32) & 0xFFFFF000
                if nxt <= hole_start:
                    return -1
                hole_start = nxt
                hole_end = hole_start + 0xFFF
                hit = True
                break
        if not hit:
            return hole_start
    return -1
