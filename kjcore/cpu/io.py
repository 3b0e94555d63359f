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

The A20 gate is answered here too: port 0x92 ("fast A20", bit 1; reads give
that bit, the fast-reset bit 0 is ignored) and the keyboard controller's
output-port write, 0x64 <- 0xD1 then 0x60 <- data (bit 1).  Both writes of
that pair are consumed here; every other access to 0x60/0x64 goes on as any
port does.
"""
from .jit import kernel
from .memory import exc, tlb_flush
from .operands import get_reg, set_reg
from .state import (
    A20_BIT,
    A20_CLEAR,
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
    KBC_D1,
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


@kernel("v", "si")
def set_a20(s, on):
    """Open or close the A20 gate; cached translations and the code page are dropped."""
    clear = 0 if on else A20_BIT
    if s[A20_CLEAR] != clear:
        s[A20_CLEAR] = clear
        tlb_flush(s, False)


@kernel("ii", "sciibi")
def port_io(s, con, port, size, out, value):
    """One port access. Returns (status, value read)."""
    if port == 0x92:
        if out:
            set_a20(s, (value & 2) != 0)
            return 0, 0
        return 0, 0 if s[A20_CLEAR] else 2
    if out and port == 0x64:
        s[KBC_D1] = 1 if (value & 0xFF) == 0xD1 else 0
        if s[KBC_D1]:
            return 0, 0
    elif out and port == 0x60 and s[KBC_D1]:
        s[KBC_D1] = 0
        set_a20(s, (value & 2) != 0)
        return 0, 0
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
