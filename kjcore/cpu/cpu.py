"""Python face of the CPU: thin, script-friendly wrapper over the state vector.

>>> import numpy as np
>>> from kjcore.cpu import CPU, Status
>>> ram = np.zeros(1 << 16, np.uint8)
>>> code = bytes.fromhex("b8 2a 00 00 00 40 e6 e9 f4")   # mov eax,42; inc eax; out 0xe9,al; hlt
>>> ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
>>> cpu = CPU(ram)
>>> cpu.eip = 0x1000
>>> cpu.run(100), cpu.eax, cpu.steps, cpu.debugcon
(<Status.HLT: 2>, 43, 4, b'+')

A hot loop is compiled to host code after ``cpu.jit_threshold`` trips round it
(the translation tier, ``loopjit``); results are the same:

>>> loop = bytes.fromhex("01 c8 31 c2 49 75 f9 f4")  # add eax,ecx; xor edx,eax; dec ecx; jnz; hlt
>>> ram[0x2000:0x2000 + len(loop)] = np.frombuffer(loop, np.uint8)
>>> cpu.eip, cpu.ecx = 0x2000, 100_000
>>> cpu.run(10 ** 6), cpu.steps, hex(cpu.eax), cpu.compiled_loops
(<Status.HLT: 2>, 400001, '0x2a06b57b', [(8192, 7)])

Every status that ends a run abnormally has exactly one exception class (all
``CPUFault``, in ``status.py``); :meth:`CPU.raise_for_status` raises them, for
the CPU and for ``Machine``:

>>> cpu.eip = 0x2000
>>> cpu.raise_for_status(cpu.run(3))
Traceback (most recent call last):
  ...
kjcore.cpu.status.StepLimit: step limit reached at EIP 0x00002005
"""
import operator
import time

import numpy as np

from . import lazy, loopjit, portstring, warmup
from . import state as S
from .core import run as _run
from .hooks import HookMixin
from .io import ST_CON_FULL
from .registers import LOAD_LIMITS, SegmentRegister, TableRegister, reg_property
from .reset import flat_state, reset_state
from .segments import desc_attr, desc_base, desc_limit
from .status import STATUS_EXCEPTION, Status, status_exception
from .trace import Tracing
from .views import MemoryViewMixin


class CPU(Tracing, HookMixin, MemoryViewMixin):
    """An i386 (P6 integer subset, no FPU) running on the caller's RAM array.

    Parameters
    ----------
    ram : numpy.ndarray
        1-D ``uint8`` array, the physical memory; used in place, never copied.
    strict_bus : bool
        If True, a physical access past the end of ``ram`` stops the run with
        ``Status.BUS_ERROR`` (else reads give all ones and writes are dropped).

    Attributes
    ----------
    jit : bool
        Compile hot regions of code (loops with what they reach in their
        page) to host code (the translation tier, ``loopjit``; default
        True).  Results are identical either way; False runs every
        instruction in the interpreter.
    jit_threshold : int
        Taken branches back to a loop head before the region there is
        compiled (default ``loopjit.THRESHOLD``).
    debugcon_dropped : int
        Console bytes discarded because :attr:`debugcon` keeps only the last
        ``DEBUGCON_LIMIT`` bytes.
    open_bus : bool
        If True, I/O to a port that has neither a built-in meaning (0xE9,
        0x80) nor a handler (:meth:`on_port`) reads all ones and drops writes
        without stopping the run, like an empty ISA bus (default False: the
        run stops with ``Status.IO``).  Compiled code knows up to
        ``state.PORT_MAX`` handled ports; with more, every such access stops.
    """

    #: bytes of debug-console output buffered in compiled code between drains
    CONSOLE_BUFFER = 1 << 16
    #: :attr:`debugcon` keeps at most this many bytes (the most recent ones)
    DEBUGCON_LIMIT = 1 << 20
    #: wall-clock length aimed at for one compiled slice of a run (see :meth:`run`)
    SLICE_SECONDS = 0.02
    #: bounds of a slice, in steps
    SLICE_MIN, SLICE_MAX = 1 << 12, 1 << 24

    def __init__(self, ram, *, strict_bus=False):
        if not isinstance(ram, np.ndarray) or ram.dtype != np.uint8 or ram.ndim != 1:
            raise TypeError("ram must be a 1-D numpy uint8 array")
        if not ram.flags.c_contiguous:
            raise ValueError("ram must be contiguous")
        self.ram = ram
        n8 = (ram.shape[0] // 8) * 8
        self._ram64 = ram[:n8].view(np.uint64)
        self._s = np.zeros(S.STATE_SIZE, np.int64)
        self._con = np.zeros(self.CONSOLE_BUFFER, np.uint8)
        self._debugcon = bytearray()
        self.debugcon_dropped = 0
        self._ports = {}            # port -> (handler, string handler or None): on_port
        self._steps = 0
        self._slice = self.SLICE_MIN  # grows to ~SLICE_SECONDS of steps (_adapt_slice)
        self.breakpoints = set()    # linear addresses where run stops with Status.BREAK
        self._tracer = None         # the full trace's records (Tracing.start_trace)
        self._init_hooks()          # hook_code, hook_mem, hook_interrupt: hooks.py
        self.strict_bus = strict_bus
        self.open_bus = False
        self.jit = True
        self.jit_threshold = loopjit.THRESHOLD
        self._jit_generation = loopjit.generation
        warmup.start()  # cold cache: a helper process starts compiling
        self.reset_flat()

    # ------------------------------------------------------------------ state
    def reset(self):
        """The architectural reset (SPEC 14.1): real mode, CS:EIP = F000:FFF0 with CS base
        0xFFFF0000, EDX = ``state.CPU_SIGNATURE``; A20 and ``strict_bus`` are kept."""
        reset_state(self._s)

    def reset_flat(self):
        """Back to the state a new CPU starts in (SPEC 9.2): protected mode, flat ring-0
        segments, paging off; A20 and ``strict_bus`` are kept."""
        flat_state(self._s)

    @property
    def a20(self):
        """The A20 gate: False forces bit 20 of every physical address to 0 (1 MiB wrap)."""
        return bool(self._s[S.A20_CLEAR] == 0)

    @a20.setter
    def a20(self, on):
        self._s[S.A20_CLEAR] = 0 if on else S.A20_BIT
        self.flush_tlb()

    @property
    def rom(self):
        """The read-only physical range ``(start, end)`` (a BIOS's ROM): guest writes there
        are dropped; ``None`` (the default) when there is none."""
        lo, hi = int(self._s[S.ROM_LO]), int(self._s[S.ROM_HI])
        return (lo, hi) if hi > lo else None

    @rom.setter
    def rom(self, rng):
        lo, hi = (0, 0) if rng is None else (int(rng[0]), int(rng[1]))
        if not 0 <= lo <= hi <= 1 << 32:
            raise ValueError(f"rom=({lo:#x}, {hi:#x}) is not a physical range")
        self._s[S.ROM_LO], self._s[S.ROM_HI] = lo, hi
        self.flush_tlb()            # cached writable translations of the range go

    def flush_tlb(self):
        """Drop every cached translation (call after editing page tables from Python)."""
        self._s[S.TLB:S.TLB_END:3] = -1
        self._s[S.D_FPAGE] = -1

    def load_segment(self, name, selector, base, limit, access, flags=None):
        """Load a segment register fully: selector and hidden cache.

        ``access`` is the descriptor access byte (P, DPL, S, type) and
        ``flags`` the G/D-B/L/AVL nibble (descriptor bits 52-55); without
        ``flags``, ``access`` is the whole attribute word (access | flags << 8,
        see :attr:`SegmentRegister.attrib`), or a raw 8-byte descriptor given
        as an int > 0xFFFFF (then ``base``/``limit`` are ignored).  ``limit``
        is the byte-granular effective limit.  A segment whose access byte
        is not present is loaded as unusable (like a null selector).
        """
        if flags is not None:
            access = (access & 0xFF) | ((flags & 0xF) << 8)
        idx = S.SEG_NAMES.index(name)
        b = S.SEG + 4 * idx
        if access > 0xFFFFF:
            lo, hi = access & S.M32, access >> 32
            base, limit = int(desc_base(lo, hi)), int(desc_limit(hi, lo))
            access = int(desc_attr(hi))
        elif access and not access & S.A_USABLE and (access & 0x80):
            access |= S.A_USABLE
        self._s[b] = selector & 0xFFFF
        self._s[b + 1] = base & S.M32
        self._s[b + 2] = limit & S.M32
        self._s[b + 3] = access
        if idx == S.CS:                                 # CPL: CS.RPL, 0 in real mode
            self._s[S.CPL] = selector & 3 if self._s[S.CR0] & S.CR0_PE else 0
            self._s[S.D_FPAGE] = -1

    def load(self, regs):
        """Set registers from a dict of name -> value; the TLB is flushed.

        Keys: the general registers (``"eax"`` ...), ``"eip"``, ``"eflags"``, ``"cr0"``,
        ``"cr2"``, ``"cr3"``, ``"cr4"``, ``"efer"``, ``"gdtr_base"``, ``"gdtr_limit"``,
        ``"idtr_base"``, ``"idtr_limit"``, and for a segment register all five of
        ``<seg>_selector``, ``_base``, ``_limit`` (byte-granular), ``_access`` (descriptor
        byte 5) and ``_flags`` (the G/D-B/L/AVL nibble): the form of
        :func:`kjcore.first_kernel.initial_cpu_state`.  Keys left out keep their value.  An
        unknown key, a value that is not an integer or does not fit its register, or an
        incomplete segment raises ``ValueError`` / ``TypeError`` before anything is set.
        """
        values = {}
        for name, value in regs.items():
            top = LOAD_LIMITS.get(name)
            if top is None:
                raise ValueError(f"CPU.load: unknown register {name!r}")
            if isinstance(value, bool):
                raise TypeError(f"CPU.load: {name} must be an integer, not bool")
            try:
                v = operator.index(value)
            except TypeError:
                raise TypeError(f"CPU.load: {name} must be an integer, not "
                                f"{type(value).__name__}") from None
            if not 0 <= v <= top:
                raise ValueError(f"CPU.load: {name}={v:#x} does not fit (0..{top:#x})")
            values[name] = v
        segments = []
        for seg in S.SEG_NAMES:
            keys = [f"{seg}_{key}" for key in S.SEG_KEYS]
            given = [k in values for k in keys]
            if any(given) and not all(given):
                missing = keys[given.index(False)]
                raise ValueError(f"CPU.load: segment {seg} needs all of {', '.join(keys)} "
                                 f"({missing} is missing)")
            if all(given):
                segments.append((seg, *(values[k] for k in keys)))
        s = self._s
        for slot, name in enumerate(S.REG_NAMES + S.CONTROL_NAMES):
            if name in values:
                s[slot] = values[name]
        for i, name in enumerate(S.TABLE_NAMES):
            if name in values:
                s[S.GDTR_BASE + i] = values[name]
        for seg, selector, base, limit, access, flags in segments:
            self.load_segment(seg, selector, base, limit, access, flags)
        self.flush_tlb()

    def get_state(self):
        """A copy of the architectural state as a structured record."""
        return self._s[:S.NSTATE].copy().view(S.STATE_DTYPE)[0]

    def set_state(self, rec):
        """Restore a record from :meth:`get_state` (the TLB is flushed)."""
        arr = np.asarray(rec).reshape(1).view(np.int64)
        self._s[:S.NSTATE] = arr[:S.NSTATE]
        self.flush_tlb()

    for _i, _n in enumerate(S.REG_NAMES):
        locals()[_n] = reg_property(_i, f"register {_n.upper()}")
    eip = reg_property(S.EIP, "instruction pointer (offset in CS)")
    eflags = reg_property(S.EFLAGS, "EFLAGS")
    cr0 = reg_property(S.CR0, "CR0")
    cr2 = reg_property(S.CR2, "CR2 (page-fault linear address)")
    cr3 = reg_property(S.CR3, "CR3")
    cr4 = reg_property(S.CR4, "CR4")
    efer = reg_property(S.EFER, "IA32_EFER (only NXE is implemented)")
    tsc = reg_property(S.TSC, "time-stamp counter (= steps executed)")
    del _i, _n

    @property
    def cpl(self):
        return int(self._s[S.CPL])

    es = property(lambda self: SegmentRegister(self._s, S.ES))
    cs = property(lambda self: SegmentRegister(self._s, S.CS))
    ss = property(lambda self: SegmentRegister(self._s, S.SS))
    ds = property(lambda self: SegmentRegister(self._s, S.DS))
    fs = property(lambda self: SegmentRegister(self._s, S.FS))
    gs = property(lambda self: SegmentRegister(self._s, S.GS))
    ldtr = property(lambda self: SegmentRegister(self._s, S.LDTR))
    tr = property(lambda self: SegmentRegister(self._s, S.TR))
    gdtr = property(lambda self: TableRegister(self._s, S.GDTR_BASE, "gdtr"))
    idtr = property(lambda self: TableRegister(self._s, S.IDTR_BASE, "idtr"))

    def dr(self, n):
        return int(self._s[S.DR0 + n])

    # ------------------------------------------------------------------ running
    @property
    def steps(self):
        """Steps executed by the last :meth:`run` / :meth:`step`: instructions, with every
        element of a REP string instruction counted as one step."""
        return self._steps

    def on_port(self, port, handler, *, string=None):
        """Answer guest I/O on ``port`` from Python.

        ``handler(port, size, value)`` is called for OUT with the value
        written and for IN with ``value=None``; for IN it returns the value.  A handler that
        waits for input a script gives returns ``Status.IDLE``: the run stops with that status
        and the access is not made (the next run makes it again, calling the handler again).
        ``string(port, size, out, buf)`` moves REP INS/OUTS in bulk (:mod:`.portstring`).
        ``handler=None`` removes both.
        """
        if handler is None:
            self._ports.pop(port, None)
        else:
            self._ports[port] = (handler, string)

    @property
    def io_request(self):
        """(port, size, is_out, value) of the IN/OUT that stopped the run."""
        s = self._s
        return int(s[S.IO_PORT]), int(s[S.IO_SIZE]), bool(s[S.IO_DIR]), int(s[S.IO_VAL])

    def complete_io(self, value=0):
        """Answer the pending IN (or acknowledge the OUT); the next run finishes it."""
        self._s[S.IO_VAL] = int(value) & S.M32
        self._s[S.IO_PENDING] = 1

    def _sync_ports(self):
        ports = sorted(self._ports)
        if self.open_bus and len(ports) <= S.PORT_MAX:
            self._s[S.PORTS:S.PORTS + len(ports)] = ports
            self._s[S.OPEN_BUS] = len(ports) + 1
        else:
            self._s[S.OPEN_BUS] = 0

    def _drain_console(self):
        n = self._mv[S.CON_LEN]
        if n:
            self._s[S.CON_LEN] = 0
            self.write_debugcon(self._con[:n].tobytes())

    def write_debugcon(self, data):
        """Append ``data`` to :attr:`debugcon` after what the guest wrote so far, as if written
        to port 0xE9 (the BIOS copies its screen output to the console this way)."""
        self._debugcon += data
        excess = len(self._debugcon) - self.DEBUGCON_LIMIT
        if excess > 0:
            del self._debugcon[:excess]
            self.debugcon_dropped += excess

    def run(self, max_steps=10_000_000, *, timeout=None):
        """Execute up to ``max_steps`` steps; returns a :class:`Status`.

        A step is one instruction, or one element of a REP string instruction (a run can
        stop inside one, with the registers describing the elements done; the next run
        resumes it).  ``timeout`` (seconds) stops the run with ``Status.TIMEOUT`` once that
        much wall-clock time has passed.  The compiled loop runs in slices of about
        ``SLICE_SECONDS`` and returns to Python between them, so the deadline is checked and
        signal handlers run (Ctrl-C raises ``KeyboardInterrupt`` here) within a fraction of
        a second; the CPU is then between two steps and a new run continues exactly where
        this one stopped.  Slicing never changes what the guest computes.  A run that starts
        on a breakpoint executes it; hooks (:mod:`.hooks`) are called as they fire, and
        ``Status.STOPPED`` says one of them (or :meth:`stop`) ended the run.
        """
        self._sync_hooks()
        self._stop_requested = False
        self._sync_ports()
        s = self._s
        s[S.STRICT_BUS] = 1 if self.strict_bus else 0
        s[S.NO_JIT] = 0 if self.jit else 1
        s[S.JIT_HOT] = max(1, int(self.jit_threshold))
        warmup.finish()
        deadline = None if timeout is None else time.monotonic() + timeout
        max_steps = int(max_steps)
        total = 0
        st = S.ST_STEP_LIMIT
        fresh, resumed = True, False  # no code stop handled here yet / between two slices
        try:
            while total < max_steps:
                if deadline is not None and time.monotonic() >= deadline:
                    st = S.ST_TIMEOUT
                    break
                if self._hooks_changed:
                    self._sync_hooks()
                if self._stop_requested:
                    st = S.ST_STOPPED
                    break
                if fresh:   # the compiled loop skips the code stop of the step it starts on
                    stop = self._code_stop(breakpoints=resumed)
                    if stop is not None:
                        st = stop
                        break
                if self._jit_generation != loopjit.generation:
                    loopjit.forget(s)  # compiled code was thrown away meanwhile
                    self._jit_generation = loopjit.generation
                self._slice = min(max(self._slice, self.SLICE_MIN), self.SLICE_MAX)
                budget = min(max_steps - total, self._slice, S.FT_N if s[S.FT_ON] else max_steps)
                t0 = time.perf_counter()
                st = _run(s, self.ram, self._ram64, self._con, budget)
                if s[S.FT_CNT]:
                    self._tracer.drain(s)
                elapsed = time.perf_counter() - t0
                ran = self._mv[S.STEPS]      # memoryview: a plain int, ~10x cheaper
                total += ran
                if ran:
                    self._checked_at = None
                self._drain_console()
                resumed = fresh = st in (S.ST_STEP_LIMIT, S.ST_JIT_REQUEST, S.ST_HOOK)
                if st == S.ST_BREAK:
                    st = self._code_stop(breakpoints=True)
                    if st is None:
                        st = S.ST_STEP_LIMIT   # what the run ends with if the budget is spent
                        continue
                    break
                if st == S.ST_HOOK:
                    st = self._hook_stop()
                    if st is None:
                        st = S.ST_STEP_LIMIT
                        continue
                    break
                if st == S.ST_STEP_LIMIT:
                    self._adapt_slice(budget, elapsed)
                    continue
                if st == ST_CON_FULL:
                    st = S.ST_STEP_LIMIT
                    continue
                if st == S.ST_JIT_REQUEST:
                    loopjit.install(s, self.ram)
                    self._jit_generation = loopjit.generation
                    st = S.ST_STEP_LIMIT
                    continue
                if st == S.ST_COMPILE_REQUEST:  # resumes where its code stop was handled
                    lazy.install(s)
                    continue
                if st == S.ST_IO:
                    port, size, out, value = self.io_request
                    h, bulk = self._ports.get(port, (None, None))
                    if h is not None:
                        bulk = None if self._mem_hooks else bulk  # element by element, hooked
                        done = portstring.transfer(s, self.ram, bulk, port, max_steps - total - 1)
                        if done < 0:
                            r = h(port, size, value if out else None)
                            if r is Status.IDLE:
                                st = S.ST_IDLE  # waits for input: the access is made again
                                break
                            self.complete_io(0 if out or r is None else r)
                        total += max(done, 0)
                        self._sync_ports()  # the handler may have added or removed ports
                        continue
                break
        finally:
            self._steps = total
            s[S.STEPS] = total  # not just the last stretch between Python round trips
        return Status(st)

    def _adapt_slice(self, budget, elapsed):
        """Size the next slice so that it takes about ``SLICE_SECONDS``."""
        if elapsed > self.SLICE_SECONDS:
            self._slice = max(self.SLICE_MIN, self._slice // 2)
        elif budget == self._slice and elapsed < self.SLICE_SECONDS / 4:
            self._slice = min(self.SLICE_MAX, self._slice * 2)

    def step(self):
        """Execute one instruction (one element of a REP string instruction)."""
        return self.run(1)

    def raise_for_status(self, status, message=None, *,
                         expected=(Status.HLT, Status.STOPPED)):
        """Raise the exception of ``status`` (:data:`~kjcore.cpu.status.STATUS_EXCEPTION`),
        unless it is a normal end (BREAK, IO, or one of ``expected``: by default HLT and
        STOPPED).

        The one place that turns run statuses into exceptions, for the CPU and for
        ``Machine``; ``message`` replaces the default text.
        """
        status = Status(status)
        if status in STATUS_EXCEPTION and status not in expected:
            raise status_exception(status, self.get_state(), message)

    @property
    def fault(self):
        """(vector, error code or None, EIP) of the first exception of the last
        chain that ended in a triple fault, and the one that gave up last."""
        s = self._s
        e = int(s[S.FAULT_ERR])
        return int(s[S.FAULT_VEC]), (None if e < 0 else e), int(s[S.FAULT_EIP])

    @property
    def bus_address(self):
        a = int(self._s[S.BUS_ADDR])
        return None if a < 0 else a

    # ------------------------------------------------------------------ console
    @property
    def debugcon(self):
        """Bytes the guest wrote to port 0xE9 (the last ``DEBUGCON_LIMIT`` of them)."""
        return bytes(self._debugcon)

    def clear_debugcon(self):
        """Empty :attr:`debugcon` and reset :attr:`debugcon_dropped`."""
        self._debugcon.clear()
        self.debugcon_dropped = 0

    @property
    def compiled_loops(self):
        """(physical address, length in bytes) of the regions this CPU runs as
        compiled code (the translation tier; see ``kjcore.cpu.loopjit``)."""
        return loopjit.compiled(self._s)

    def __repr__(self):
        regs = " ".join(f"{n}={getattr(self, n):08x}" for n in S.REG_NAMES)
        return f"<CPU {regs} eip={self.eip:08x} eflags={self.eflags:08x} cr0={self.cr0:08x}>"

