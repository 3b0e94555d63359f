"""Execution traces: what ran, as it ran.

Two traces are kept.  The *linear ring* (``state.TRACE``) holds the linear address of each of
the last ``TRACE_N`` instructions; compiled code fills it always, at the cost of one store per
step (:meth:`CPU.trace`).  The *full trace* is opt-in (:meth:`CPU.start_trace`): while it is
on, every instruction goes through the decoder (no fast path, no compiled loops) and
:func:`record` (called from :func:`decode_traced`) keeps, right after the decode and before
the instruction runs, its linear and physical address, the bytes as fetched and the mode it
ran in.  Disassembling those bytes (:func:`disassemble`) shows the code that ran even where the
page tables have changed since (the physical-mode part of a kexec jump), the code was
overwritten, or the CPU ran 16-bit code.
With the full trace off its cost is one test of ``s[FT_ON]`` per decoded instruction, outside
the run loop's own body (which also holds the fast path: a branch and a call added there had
cost the fast path 3-8%, by code layout alone).

Records go to the state vector's block at ``state.FT`` (at most ``FT_N`` between two drains:
``CPU.run`` gives the compiled loop no more steps than that while tracing) and from there,
through :meth:`Tracer.drain`, to a ring of the caller's size in Python.

>>> import numpy as np
>>> from kjcore.cpu import CPU
>>> ram = np.zeros(1 << 16, np.uint8)
>>> ram[0x1000:0x1006] = np.frombuffer(bytes.fromhex("40 43 eb 00 f4 90"), np.uint8)
>>> cpu = CPU(ram)
>>> cpu.eip = 0x1000
>>> cpu.start_trace(100)
>>> cpu.run(10)
<Status.HLT: 2>
>>> ram[0x1000] = 0x90                     # overwritten afterwards: the trace keeps 'inc eax'
>>> cpu.disassemble_trace()
['00001000: inc eax', '00001001: inc ebx', '00001002: jmp 0x1004', '00001004: hlt']
>>> cpu.trace_records(1)[0]
TraceRecord(linear=4100, physical=4100, code=b'\\xf4', mode=Mode(protected=True, paging=False, \
cpl=0, code32=True, v86=False))
"""
from typing import NamedTuple

import numpy as np

from . import state as S
from .decode import decode
from .jit import kernel
from .memory import ACC_FETCH, user_acc, walk

# The info word of a record: mode bits, and the instruction's length in bits 8-11.
_PE, _PG, _CPL_SHIFT, _CODE32, _VM, _LEN_SHIFT = 1, 2, 2, 0x10, 0x20, 8
#: slots of a record (state.FT_REC of them)
_LIN, _PHYS, _INFO, _LO, _HI = range(S.FT_REC)


@kernel("i", "sri")
def _phys(s, ram, lin):
    """Physical address of ``lin`` for an instruction fetch, with no side effect; -1 if none."""
    if (s[S.CR0] & S.CR0_PG) == 0:
        return lin & ~s[S.A20_CLEAR]
    saved = s[S.BUS_ADDR]
    p = walk(s, ram, lin, ACC_FETCH | user_acc(s), False)
    s[S.BUS_ADDR] = saved
    return p


@kernel("v", "sri")
def record(s, ram, start):
    """Record the instruction just decoded at CS offset ``start`` (its ``D_LEN`` bytes).

    Called after ``decode`` (:func:`decode_traced`) and before the instruction runs, so the
    bytes are the ones fetched; a fetch that faulted leaves the bytes it got.  A page crossing is
    translated again on the second page.  A full block (``FT_N`` records not drained: only
    if the caller ran more steps than ``CPU.run`` gives while tracing) takes no more.
    """
    if s[S.FT_CNT] >= S.FT_N:
        return
    k = S.FT + S.FT_REC * s[S.FT_CNT]
    s[S.FT_CNT] += 1
    lin = (s[S.SEG + 4 * S.CS + S.S_BASE] + start) & S.M32
    n = s[S.D_LEN]
    p = _phys(s, ram, lin)
    lo = 0
    hi = 0
    size = ram.shape[0]
    q = p
    for i in range(n):
        a = (lin + i) & S.M32
        if i > 0 and (a & 0xFFF) == 0:
            q = _phys(s, ram, a)
        elif i > 0 and q >= 0:
            q += 1
        b = np.int64(ram[q]) if 0 <= q < size else np.int64(0xFF)
        if i < 8:
            lo |= b << (8 * i)
        else:
            hi |= b << (8 * (i - 8))
    cr0 = s[S.CR0]
    info = n << _LEN_SHIFT
    if cr0 & S.CR0_PE:
        info |= _PE
    if cr0 & S.CR0_PG:
        info |= _PG
    if s[S.D_CODE32]:
        info |= _CODE32
    if s[S.EFLAGS] & S.VM:
        info |= _VM
    info |= s[S.CPL] << _CPL_SHIFT
    s[k + _LIN] = lin
    s[k + _PHYS] = p
    s[k + _INFO] = info
    s[k + _LO] = lo
    s[k + _HI] = hi


@kernel("i", "sri")
def decode_traced(s, ram, start):
    """``decode`` for the run loop, then :func:`record` while the full trace is on (kept out
    of the run loop's own body, which also holds the fast path)."""
    fam = decode(s, ram)
    if s[S.FT_ON] != 0:
        record(s, ram, start)              # the bytes as fetched, before they run
    return fam


def linear_trace(s, n):
    """The linear ring: addresses of the last ``n`` instructions, oldest first."""
    cnt = max(0, min(int(s[S.TRACE_CNT]), S.TRACE_N, int(n)))
    pos = int(s[S.TRACE_POS])
    return [int(s[S.TRACE + (pos - cnt + i) % S.TRACE_N]) for i in range(cnt)]


class Mode(NamedTuple):
    """The mode an instruction ran in: CR0.PE, CR0.PG, CPL, CS.D (32-bit code), EFLAGS.VM."""
    protected: bool
    paging: bool
    cpl: int
    code32: bool
    v86: bool

    def __str__(self):
        kind = "v86" if self.v86 else "protected" if self.protected else "real"
        paging = ", paging" if self.paging else ""
        return f"{kind}{paging}, CPL {self.cpl}, {32 if self.code32 else 16}-bit code"


class TraceRecord(NamedTuple):
    """One executed instruction: ``linear`` and ``physical`` address of its first byte
    (``physical`` None if the fetch found no mapping), ``code`` the bytes as fetched (up to
    15; fewer if the fetch faulted) and the :class:`Mode` it ran in."""
    linear: int
    physical: int | None
    code: bytes
    mode: Mode


def check_limit(limit):
    """``limit`` as the number of records a trace keeps: a positive integer (else
    ``TypeError`` / ``ValueError``)."""
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer):
        raise TypeError(f"a trace keeps an integer number of records, not {limit!r}")
    if limit < 1:
        raise ValueError(f"a trace keeps a positive number of records, not {limit}")
    return int(limit)


class Tracer:
    """The last ``limit`` records of a full trace, in a numpy ring (drained from ``s``)."""

    def __init__(self, limit):
        self.limit = check_limit(limit)
        self._ring = np.zeros((self.limit, S.FT_REC), np.int64)
        self._pos = 0           # next slot to write
        self._count = 0         # records ever drained (the ring holds the last ``limit``)

    def drain(self, s):
        """Move the records compiled code left in ``s`` into the ring."""
        n = int(s[S.FT_CNT])
        s[S.FT_CNT] = 0
        if n <= 0:
            return
        block = s[S.FT:S.FT + S.FT_REC * n].reshape(n, S.FT_REC)[-self.limit:]
        for part in (block[:self.limit - self._pos], block[self.limit - self._pos:]):
            self._ring[self._pos:self._pos + len(part)] = part
            self._pos = (self._pos + len(part)) % self.limit
        self._count += n

    def records(self, n=None):
        """The last ``n`` records (all kept if None), oldest first, as :class:`TraceRecord`."""
        kept = min(self._count, self.limit)
        n = kept if n is None else max(0, min(int(n), kept))
        rows = self._ring[[(self._pos - n + i) % self.limit for i in range(n)]]
        code = rows[:, _LO:_HI + 1].astype(np.uint64).view(np.uint8).reshape(n, 16)
        out = []
        for row, raw in zip(rows.tolist(), code):
            info = row[_INFO]
            mode = Mode(bool(info & _PE), bool(info & _PG), (info >> _CPL_SHIFT) & 3,
                        bool(info & _CODE32), bool(info & _VM))
            length = (info >> _LEN_SHIFT) & 0xF
            out.append(TraceRecord(row[_LIN], None if row[_PHYS] < 0 else row[_PHYS],
                                   raw[:length].tobytes(), mode))
        return out


def disassemble(records):
    """Text lines for ``records`` (:class:`TraceRecord`), disassembled with capstone in the
    record's own mode (16-bit for real mode, V86 and 16-bit code segments), from the bytes as
    fetched.  ``(bad)`` only for bytes capstone does not know (or a fetch that faulted)."""
    try:
        import capstone
    except ImportError:  # pragma: no cover
        raise ImportError("disassembly needs the optional 'capstone' package "
                          "(pip install 'kjcore[disasm]')") from None
    engines = {bits: capstone.Cs(capstone.CS_ARCH_X86, mode)
               for bits, mode in ((16, capstone.CS_MODE_16), (32, capstone.CS_MODE_32))}
    lines = []
    for r in records:
        md = engines[32 if r.mode.code32 and not r.mode.v86 else 16]
        insn = next(md.disasm(r.code, r.linear), None)
        if insn is None:
            lines.append(f"{r.linear:08x}: (bad) {r.code.hex()}")
        else:
            lines.append(f"{r.linear:08x}: {insn.mnemonic} {insn.op_str}".rstrip())
    return lines


class Tracing:
    """The CPU's trace methods (a base class of :class:`~kjcore.cpu.CPU`, which holds the
    state vector ``_s`` and the records ``_tracer``)."""

    def trace(self, n=32):
        """Linear addresses of the last ``n`` executed instructions, oldest first (always kept;
        :meth:`start_trace` keeps what ran, too)."""
        return linear_trace(self._s, n)

    def start_trace(self, limit=4096):
        """Record the instructions that run from now on, keeping the last ``limit``: address,
        bytes as fetched and mode (:class:`~kjcore.cpu.trace.TraceRecord`); runs go through
        the decoder meanwhile (several times slower).  Drops earlier records."""
        self._tracer = Tracer(limit)
        self._s[S.FT_CNT] = 0
        self._s[S.FT_ON] = 1

    def stop_trace(self):
        """Stop recording; the records stay until the next :meth:`start_trace`."""
        self._s[S.FT_ON] = 0

    @property
    def tracing(self):
        """True between :meth:`start_trace` and :meth:`stop_trace`."""
        return bool(self._s[S.FT_ON])

    def trace_records(self, n=None):
        """The last ``n`` (default: all kept) records of the full trace, oldest first."""
        return [] if self._tracer is None else self._tracer.records(n)

    def disassemble_trace(self, n=32):
        """The last ``n`` records of the full trace as text, from the bytes as fetched, each in
        its own mode (capstone, an optional dependency).  ``ValueError`` if nothing was traced."""
        records = self.trace_records(n)
        if not records:
            raise ValueError("nothing traced: call cpu.start_trace() before the run")
        return disassemble(records)
