"""REP INS / REP OUTS moved in bulk by a device (``CPU.on_port(..., string=fn)``).

Compiled code stops a string I/O instruction with ``ST_IO`` at its first element, with the
element's memory access already checked (INS: the write check; OUTS: the read) and the
instruction's decode (opcode, sizes, segment override, REP) still in the state.
:func:`transfer` then offers the device the rest of the string as one numpy view of guest
RAM, and the device moves as many elements as its protocol allows in one call (an ATA
controller: up to the end of the command's data).  The registers are left as the
instruction leaves them after ``k - 1`` elements, and element ``k`` is completed by the
ordinary ``IO_PENDING`` answer, so the instruction itself advances ESI/EDI, ECX and EIP
for the last element exactly as for any port access.

Only the plain case is offered: REP forward (DF=0), paging off, an expand-up data segment
(INS: writable) and the whole range inside the segment limit, the address size (no offset
wrap) and RAM (INS: outside the read-only ROM range).  Anything else returns 0 and the
element goes through the value handler, so faults, wraps and bus misses keep their exact
per-element behaviour.  Every element is one step of the run's budget, as in compiled code.
"""
from . import state as S

_INS, _OUTS = 0x6C, 0x6E


def transfer(s, ram, fn, port, steps_left):
    """Offer the stopped string instruction to ``fn``; returns the elements done here
    (``k - 1``), or -1 if ``fn`` is None, was not offered or took none (answer the element
    as usual).

    ``fn(port, size, out, buf)``: ``buf`` is a uint8 view of ``n * size`` bytes of guest
    RAM (read-only for OUTS); ``fn`` reads (OUTS) or fills (INS) its first ``k`` elements
    and returns ``k`` (0 <= k <= n), touching nothing past them.
    """
    op = int(s[S.D_OP])
    kind = op & 0xFE
    # Paging on or A20 off: linear != physical, so the element-by-element path does it.
    if fn is None or kind not in (_INS, _OUTS) or not s[S.D_REP] or s[S.EFLAGS] & S.DF \
            or s[S.CR0] & S.CR0_PG or s[S.A20_CLEAR]:
        return -1
    out = kind == _OUTS
    size = 1 if op & 1 == 0 else int(s[S.D_OSZ])
    am = S.M32 if s[S.D_ASZ] == 4 else 0xFFFF
    reg = S.ESI if out else S.EDI
    seg = (int(s[S.D_SEGOVR]) if s[S.D_SEGOVR] >= 0 else S.DS) if out else S.ES
    at = S.SEG + 4 * seg
    base, limit, attr = int(s[at + S.S_BASE]), int(s[at + S.S_LIMIT]), int(s[at + S.S_ATTR])
    if not attr & S.A_USABLE or attr & (S.A_CODE | S.A_E) or (not out and not attr & S.A_W):
        return -1
    off = int(s[reg]) & am
    n = min(int(s[S.ECX]) & am, steps_left, (am + 1 - off) // size,
            (limit + 1 - off) // size if limit >= off else 0)
    phys = (base + off) & S.M32
    n = min(n, (ram.shape[0] - phys) // size if phys < ram.shape[0] else 0,
            ((1 << 32) - phys) // size)
    if n < 1 or not out and phys < s[S.ROM_HI] and phys + n * size > s[S.ROM_LO]:
        return -1                   # INS into the ROM: element by element (dropped)
    buf = ram[phys:phys + n * size]
    if out:
        buf = buf.view()
        buf.flags.writeable = False
    k = int(fn(port, size, out, buf))
    if not 0 <= k <= n:
        raise ValueError(f"string handler of port {port:#x} returned {k} elements, not 0..{n}")
    if k == 0:
        return -1
    done = k - 1
    s[reg] = (int(s[reg]) & ~am & S.M32) | ((off + done * size) & am)
    s[S.ECX] = (int(s[S.ECX]) & ~am & S.M32) | (((int(s[S.ECX]) & am) - done) & am)
    last = 0 if out else int.from_bytes(buf[done * size:k * size].tobytes(), "little")
    s[S.IO_VAL] = last
    s[S.IO_PENDING] = 1
    return done
