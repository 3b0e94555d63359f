"""Plain-Python oracle for kexec_load's argument checks (SPEC §4.1/§4.3), written from the spec
independently of kjcore/load_checks.py.  Returns the errno, or None when every check up to the
allocation stage passes."""
import errno

M = 0xFFFFFFFF


def naive_errno(flags, entry, segs, *, profile="2.6.27", kexec_jump=True, cap=True,
                locked=False, crash=None, ram_size=64 << 20):
    """``segs`` is a list of (bufsz, mem, memsz); ``crash`` is (start, size) or None."""
    mainline = profile == "mainline"
    if not cap:
        return errno.EPERM
    legal = 0x1 | (0x2 if kexec_jump else 0) | (0xC if mainline else 0)
    if flags & 0xFFFF & ~legal:
        return errno.EINVAL
    if (flags >> 16) not in (0, 3):
        return errno.EINVAL
    if len(segs) > 16:
        return errno.EINVAL
    if locked:
        return errno.EBUSY
    if not segs:
        return 0
    is_crash = bool(flags & 1)
    cs, ce = (0, 0) if crash is None else (crash[0], crash[0] + crash[1] - 1)
    if is_crash and not cs <= entry <= ce:
        return errno.EADDRNOTAVAIL
    for _, mem, memsz in segs:
        end = (mem + memsz) & M
        if mainline and end < mem:
            return errno.EADDRNOTAVAIL
        if mem % 4096 or end % 4096:
            return errno.EADDRNOTAVAIL
    ends = [(mem, (mem + memsz) & M) for _, mem, memsz in segs]
    for i, (a0, a1) in enumerate(ends):
        for b0, b1 in ends[:i]:
            if a1 > b0 and a0 < b1:
                return errno.EINVAL
    if any(b > sz for b, _, sz in segs):
        return errno.EINVAL
    if mainline:
        half = (ram_size // 4096) // 2
        pages = [sz // 4096 for _, _, sz in segs]
        if any(n > half for n in pages) or sum(pages) > half:
            return errno.EINVAL
    if is_crash:
        for _, mem, memsz in segs:
            if mem < cs or ((mem + memsz - 1) & M) > ce:
                return errno.EADDRNOTAVAIL
    return None
