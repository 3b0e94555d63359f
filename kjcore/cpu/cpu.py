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

A hot register-only loop is compiled to host code after ``cpu.jit_threshold``
trips round it (the hot-loop tier, ``loopjit``); results are the same:

>>> loop = bytes.fromhex("01 c8 31 c2 49 75 f9 f4")      # add eax,ecx; xor edx,eax; dec ecx; jnz; hlt
>>> ram[0x2000:0x2000 + len(loop)] = np.frombuffer(loop, np.uint8)
>>> cpu.eip, cpu.ecx = 0x2000, 100_000
>>> cpu.run(10 ** 6), cpu.steps, hex(cpu.eax), cpu.compiled_loops
(<Status.HLT: 2>, 400001, '0x2a06b57b', [(8192, 7)])
"""
from enum import IntEnum

import numpy as np
from .jit import kernel

from . import state as S
from . import loopjit, warmup
from .core import run as _run
from .io import ST_CON_FULL
from .memory import ACC_FETCH, ACC_USER, ACC_WRITE, walk
from .segments import desc_attr


class Status(IntEnum):
    """Why :meth:`CPU.run` stopped."""
    STEP_LIMIT = S.ST_STEP_LIMIT
    HLT = S.ST_HLT
    IO = S.ST_IO                  #: an IN/OUT to a port without handler; see CPU.io_request
    TRIPLE_FAULT = S.ST_TRIPLE_FAULT
    BREAK = S.ST_BREAK
    BUS_ERROR = S.ST_BUS_ERROR    #: strict_bus: physical access past RAM (CPU.bus_address)
    UNSUPPORTED = S.ST_UNSUPPORTED  #: task switch, call gate, v86 or real mode requested


class CPUFault(Exception):
    """A run ended in a state the caller asked to treat as an error."""

    def __init__(self, message, state=None):
        super().__init__(message)
        self.state = state


class TripleFault(CPUFault):
    """The guest could not deliver an exception: the processor shut down."""

    def __init__(self, vector, error_code, eip, state, message=None):
        self.vector = vector
        self.error_code = error_code
        self.eip = eip
        err = "" if error_code is None else f", error code {error_code:#x}"
        super().__init__(message or f"triple fault: exception {vector}{err} at EIP {eip:#010x}",
                         state)


class StepLimit(CPUFault):
    """The step budget ran out before the guest finished."""

class SegmentRegister:
    """Live view of one segment register (selector + hidden descriptor cache)."""
    def __init__(self, cpu, index):
        self._s = cpu._s
        self._b = S.SEG + 4 * index
        self.name = S.SEG_NAMES[index]
    def _set_selector(self, v):
        self._s[self._b] = v & 0xFFFF
        if self._b == S.SEG + 4 * S.CS:
            self._s[S.CPL] = v & 3          # CPL is CS.RPL in protected mode
            self._s[S.D_FPAGE] = -1

    selector = property(lambda self: int(self._s[self._b]), _set_selector)
    def _set_cache(self, k, v):
        self._s[self._b + k] = v
        self._s[S.D_FPAGE] = -1

    base = property(lambda self: int(self._s[self._b + 1]),
                    lambda self, v: self._set_cache(1, v & S.M32))
    limit = property(lambda self: int(self._s[self._b + 2]),
                     lambda self, v: self._set_cache(2, v & S.M32))
    #: access byte (bits 0-7), AVL/L/D-B/G (bits 8-11), usable (bit 16)
    attrib = property(lambda self: int(self._s[self._b + 3]),
                      lambda self, v: self._set_cache(3, v))
    flags = attrib
    @property
    def dpl(self):
        return (self.attrib >> 5) & 3
    def __repr__(self):
        return (f"<{self.name} sel={self.selector:#06x} base={self.base:#010x} "
                f"limit={self.limit:#010x} attr={self.attrib:#07x}>")
class TableRegister:
    """GDTR / IDTR (base, limit)."""
    def __init__(self, cpu, slot, name):
        self._s = cpu._s
        self._b = slot
        self.name = name
    base = property(lambda self: int(self._s[self._b]),
                    lambda self, v: self._s.__setitem__(self._b, v & S.M32))
    limit = property(lambda self: int(self._s[self._b + 1]),
                     lambda self, v: self._s.__setitem__(self._b + 1, v & 0xFFFF))
    def __repr__(self):
        return f"<{self.name} base={self.base:#010x} limit={self.limit:#06x}>"
def _reg_property(slot, doc):
    def get(self):
        return int(self._s[slot])
    def put(self, v):
        self._s[slot] = int(v) & S.M32
        if slot in (S.CR0, S.CR3, S.CR4, S.EFER):
            self.flush_tlb()
    return property(get, put, doc=doc)
class CPU:
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
        Compile hot register-only loops to host code (``loopjit``; default
        True).  Results are identical either way; False runs every
        instruction in the interpreter.
    jit_threshold : int
        Taken branches back to a loop head before that loop is compiled
        (default ``loopjit.THRESHOLD``).
    """
    CONSOLE_BUFFER = 1 << 16
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
        self._ports = {}
        self._steps = 0
        self.breakpoints = set()
        self.strict_bus = strict_bus
        self.jit = True
        self.jit_threshold = loopjit.THRESHOLD
        self._jit_generation = loopjit.generation
        warmup.start()                 # cold cache: a helper process starts compiling
        self.reset()
    # ------------------------------------------------------------------ state
    def reset(self):
        """Reset to the SPEC 9.2 state: protected mode, flat ring-0 segments."""
        s = self._s
        s[:] = 0
        s[S.CR0] = S.CR0_PE | S.CR0_ET
        s[S.EFLAGS] = 2
        flat_code = 0x9B | S.A_DB | S.A_G | S.A_USABLE
        flat_data = 0x93 | S.A_DB | S.A_G | S.A_USABLE
        for seg in (S.ES, S.SS, S.DS, S.FS, S.GS):
            self.load_segment(S.SEG_NAMES[seg], 0x10, 0, S.M32, flat_data)
        self.load_segment("cs", 0x08, 0, S.M32, flat_code)
        s[S.GDTR_LIMIT] = 0
        s[S.IDTR_LIMIT] = 0
        s[S.STRICT_BUS] = 1 if self.strict_bus else 0
        s[S.BUS_ADDR] = -1
        s[S.DR0 + 6] = 0xFFFF0FF0
        s[S.DR0 + 7] = 0x400
        self.flush_tlb()
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
            from .segments import desc_base, desc_limit
            base, limit = int(desc_base(lo, hi)), int(desc_limit(hi, lo))
            access = int(desc_attr(hi))
        elif access and not access & S.A_USABLE and (access & 0x80):
            access |= S.A_USABLE
        self._s[b] = selector & 0xFFFF
        self._s[b + 1] = base & S.M32
        self._s[b + 2] = limit & S.M32
        self._s[b + 3] = access
        if idx == S.CS:
            self._s[S.CPL] = selector & 3
            self._s[S.D_FPAGE] = -1
    def get_state(self):
        """A copy of the architectural state as a structured record."""
        return self._s[:S.NSTATE].copy().view(S.STATE_DTYPE)[0]
    def set_state(self, rec):
        """Restore a record from :meth:`get_state` (the TLB is flushed)."""
        arr = np.asarray(rec).reshape(1).view(np.int64)
        self._s[:S.NSTATE] = arr[:S.NSTATE]
        self.flush_tlb()
    for _i, _n in enumerate(S.REG_NAMES):
        locals()[_n] = _reg_property(_i, f"register {_n.upper()}")
    eip = _reg_property(S.EIP, "instruction pointer (offset in CS)")
    eflags = _reg_property(S.EFLAGS, "EFLAGS")
    cr0 = _reg_property(S.CR0, "CR0")
    cr2 = _reg_property(S.CR2, "CR2 (page-fault linear address)")
    cr3 = _reg_property(S.CR3, "CR3")
    cr4 = _reg_property(S.CR4, "CR4")
    efer = _reg_property(S.EFER, "IA32_EFER (only NXE is implemented)")
    tsc = _reg_property(S.TSC, "time-stamp counter (= instructions executed)")
    del _i, _n
    @property
    def cpl(self):
        return int(self._s[S.CPL])
    es = property(lambda self: SegmentRegister(self, S.ES))
    cs = property(lambda self: SegmentRegister(self, S.CS))
    ss = property(lambda self: SegmentRegister(self, S.SS))
    ds = property(lambda self: SegmentRegister(self, S.DS))
    fs = property(lambda self: SegmentRegister(self, S.FS))
    gs = property(lambda self: SegmentRegister(self, S.GS))
    ldtr = property(lambda self: SegmentRegister(self, S.LDTR))
    tr = property(lambda self: SegmentRegister(self, S.TR))
    gdtr = property(lambda self: TableRegister(self, S.GDTR_BASE, "gdtr"))
    idtr = property(lambda self: TableRegister(self, S.IDTR_BASE, "idtr"))
    def dr(self, n):
        return int(self._s[S.DR0 + n])
    # ------------------------------------------------------------------ running
    @property
    def steps(self):
        """Instructions executed by the last :meth:`run` / :meth:`step`."""
        return self._steps
    def on_port(self, port, handler):
        """Answer guest I/O on ``port`` from Python.
        ``handler(port, size, value)`` is called for OUT with the value
        written and for IN with ``value=None``; for IN it returns the value.
        ``handler=None`` removes the handler.
        """
        if handler is None:
            self._ports.pop(port, None)
        else:
            self._ports[port] = handler
    @property
    def io_request(self):
        """(port, size, is_out, value) of the IN/OUT that stopped the run."""
        s = self._s
        return int(s[S.IO_PORT]), int(s[S.IO_SIZE]), bool(s[S.IO_DIR]), int(s[S.IO_VAL])
    def complete_io(self, value=0):
        """Answer the pending IN (or acknowledge the OUT); the next run finishes it."""
        self._s[S.IO_VAL] = int(value) & S.M32
        self._s[S.IO_PENDING] = 1
    def _sync_breakpoints(self):
        bps = sorted(self.breakpoints)[:S.BP_MAX]
        self._s[S.NBP] = len(bps)
        for i, a in enumerate(bps):
            self._s[S.BP + i] = a & S.M32
    def _drain_console(self):
        n = int(self._s[S.CON_LEN])
        if n:
            self._debugcon += self._con[:n].tobytes()
            self._s[S.CON_LEN] = 0
    def run(self, max_steps=10_000_000):
        """Execute up to ``max_steps`` instructions; returns a :class:`Status`."""
        self._sync_breakpoints()
        s = self._s
        s[S.STRICT_BUS] = 1 if self.strict_bus else 0
        s[S.NO_JIT] = 0 if self.jit else 1
        s[S.JIT_HOT] = max(1, int(self.jit_threshold))
        warmup.finish()
        total = 0
        while True:
            if self._jit_generation != loopjit.generation:
                loopjit.forget(s)              # compiled code was thrown away meanwhile
                self._jit_generation = loopjit.generation
            st = _run(s, self.ram, self._ram64, self._con, max_steps - total)
            total += int(s[S.STEPS])
            self._drain_console()
            if st == ST_CON_FULL:
                continue
            if st == S.ST_JIT_REQUEST:
                loopjit.install(s, self.ram)
                self._jit_generation = loopjit.generation
                continue
            if st == S.ST_IO:
                port, size, out, value = self.io_request
                h = self._ports.get(port)
                if h is not None:
                    r = h(port, size, value if out else None)
                    self.complete_io(0 if out or r is None else r)
                    continue
            break
        self._steps = total
        s[S.STEPS] = total             # not just the last stretch between Python round trips
        return Status(st)
    def step(self):
        """Execute one instruction."""
        return self.run(1)
    def raise_for_status(self, status):
        """Turn a run status into the matching exception (the one place that raises)."""
        s = self._s
        if status == Status.TRIPLE_FAULT:
            err = int(s[S.FAULT_ERR])
            raise TripleFault(int(s[S.FAULT_VEC]), None if err < 0 else err,
                              int(s[S.FAULT_EIP]), self.get_state())
        if status == Status.STEP_LIMIT:
            raise StepLimit(f"step limit reached at EIP {self.eip:#010x}", self.get_state())
        if status == Status.BUS_ERROR:
            raise CPUFault(f"physical access past RAM at {int(s[S.BUS_ADDR]):#x}",
                           self.get_state())
        if status == Status.UNSUPPORTED:
            raise CPUFault(f"unsupported operation at EIP {self.eip:#010x} "
                           "(task switch, call gate, v86 or real mode)", self.get_state())
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
        """Bytes the guest wrote to port 0xE9."""
        return bytes(self._debugcon)
    def clear_debugcon(self):
        self._debugcon.clear()
    # ------------------------------------------------------------------ memory views
    def translate(self, linear, write=False, user=False, fetch=False):
        """Physical address for ``linear`` or None; no side effects at all."""
        acc = (ACC_WRITE if write else 0) | (ACC_USER if user else 0) | (ACC_FETCH if fetch else 0)
        p = int(_peek_translate(self._s, self.ram, int(linear) & S.M32, acc))
        return None if p < 0 else p
    def read_linear(self, linear, n):
        """Read ``n`` bytes through the page tables (debugger view, no side effects)."""
        out = bytearray()
        for i in range(n):
            p = self.translate((linear + i) & S.M32)
            out.append(int(self.ram[p]) if p is not None and p < len(self.ram) else 0xFF)
        return bytes(out)
    @property
    def compiled_loops(self):
        """(physical address, length in bytes) of the loops this CPU runs as
        compiled code (the hot-loop tier; see ``kjcore.cpu.loopjit``)."""
        return loopjit.compiled(self._s)
    # ------------------------------------------------------------------ trace
    def trace(self, n=32):
        """Linear addresses of the last ``n`` executed instructions, oldest first."""
        s = self._s
        cnt = min(int(s[S.TRACE_CNT]), S.TRACE_N, n)
        pos = int(s[S.TRACE_POS])
        idx = [(pos - cnt + i) % S.TRACE_N for i in range(cnt)]
        return [int(s[S.TRACE + i]) for i in idx]
    def disassemble_trace(self, n=32):
        """The trace as text, disassembled with capstone (optional dependency).
        The bytes are read from memory now, so code rewritten since shows
        its current form.
        """
        try:
            import capstone
        except ImportError as e:      # pragma: no cover
            raise ImportError("disassembly needs the optional 'capstone' package "
                              "(pip install kjcore[disasm])") from e
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32
                         if self.cs.attrib & S.A_DB else capstone.CS_MODE_16)
        lines = []
        for lin in self.trace(n):
            code = self.read_linear(lin, 15)
            insn = next(md.disasm(code, lin), None)
            if insn is None:
                lines.append(f"{lin:08x}: (bad) {code[:4].hex()}")
            else:
                lines.append(f"{lin:08x}: {insn.mnemonic} {insn.op_str}".rstrip())
        return lines
    def __repr__(self):
        regs = " ".join(f"{n}={getattr(self, n):08x}" for n in S.REG_NAMES)
        return f"<CPU {regs} eip={self.eip:08x} eflags={self.eflags:08x} cr0={self.cr0:08x}>"


@kernel("i", "srii", entry=True)
def _peek_translate(s, ram, lin, acc):
    if (s[S.CR0] & S.CR0_PG) == 0:
        return lin
    saved = s[S.BUS_ADDR]
    p = walk(s, ram, lin, acc, False)
    s[S.BUS_ADDR] = saved
    return p
