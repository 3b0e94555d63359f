"""Port I/O family: IN, OUT (INS/OUTS use :func:`port_io` from string.py).

Port 0xE9 is the debug console (bytes buffered in compiled code; reading it
returns 0xE9, the Bochs convention); port 0x80 (POST codes) is ignored and
reads as all ones.  Any other port stops the run with ``ST_IO`` and the
instruction restarts once Python has answered (``IO_PENDING``), so the
instruction completes exactly once.  With ``OPEN_BUS`` set (``CPU.open_bus``)
a port no Python handler claims is answered here instead, as an empty ISA
bus does: reads give all ones, writes go nowhere, and the run goes on (a
``rep insb`` from such a port costs what any string instruction costs).
I/O permission: CPL > IOPL is #GP(0) (the TSS I/O bitmap is not consulted).
"""
from .jit import kernel
from .memory import exc
from .operands import get_reg, set_reg
from .state import (
    CON_LEN,
    CPL,
    D_EXC,
    D_IMM,
    D_OP,
    D_OSZ,
    EAX,
    EDX,
    EFLAGS,
    GP_,
    IO_DIR,
    IO_PENDING,
    IO_PORT,
    IO_SIZE,
    IO_VAL,
    M32,
    OPEN_BUS,
    PORTS,
    ST_IO,
)

ST_CON_FULL = 8     # internal: Python drains the console buffer and resumes


@kernel("b", "s")
def io_allowed(s):
    if s[CPL] > ((s[EFLAGS] >> 12) & 3):
        exc(s, GP_, 0)
        return False
    return True


@kernel("b", "si")
def _has_handler(s, port):
    for i in range(s[OPEN_BUS] - 1):
        if s[PORTS + i] == port:
            return True
    return False


@kernel("ii", "sciibi")
def port_io(s, con, port, size, out, value):
    """One port access. Returns (status, value read)."""
    if port == 0xE9:
        if out:
            n = s[CON_LEN]
            if n >= con.shape[0]:
                return ST_CON_FULL, 0
            con[n] = value & 0xFF
            s[CON_LEN] = n + 1
            return 0, 0
        return 0, 0xE9
    if port == 0x80:
        return 0, (1 << (8 * size)) - 1
    if s[IO_PENDING] and s[IO_PORT] == port and s[IO_SIZE] == size and s[IO_DIR] == out:
        s[IO_PENDING] = 0
        return 0, s[IO_VAL] & ((1 << (8 * size)) - 1)
    if s[OPEN_BUS] > 0 and not _has_handler(s, port):
        return 0, (1 << (8 * size)) - 1
    s[IO_PENDING] = 0
    s[IO_PORT] = port
    s[IO_SIZE] = size
    s[IO_DIR] = out
    s[IO_VAL] = value & M32 if out else 0
    return ST_IO, 0


@kernel("i", "src")
def op_io(s, ram, con):
    op = s[D_OP]
    size = 1 if (op & 1) == 0 else s[D_OSZ]
    port = s[D_IMM] if op < 0xEC else (s[EDX] & 0xFFFF)
    out = (op & 2) != 0
    if not io_allowed(s):
        return 0
    st, v = port_io(s, con, port, size, out, get_reg(s, EAX, size))
    if st != 0:
        return st
    if not out:
        set_reg(s, EAX, size, v)
    _ = D_EXC
    return 0
