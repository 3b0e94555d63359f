"""Unicorn-style hooks on the CPU (SPEC §16): Python callbacks on code, memory and interrupts.

::

    h = cpu.hook_code(fn, begin=0, end=0xFFFFFFFF)       # fn(cpu, address)
    h = cpu.hook_mem(fn, "write", begin, end, physical=False)
                                         # fn(cpu, access, address, size, value)
    h = cpu.hook_interrupt(fn)           # fn(cpu, vector)
    cpu.hook_del(h)

A code hook is called before the instruction at a linear ``address`` in ``[begin, end]``
runs; a read or write hook after the instruction that made the access (like a debug-register
data breakpoint: ``value`` is what was read or written), with the linear address of the
access, or its physical address for ``physical=True`` ranges; a fetch hook before the
instruction whose first byte is in its range (``size`` 1, ``value`` None); an interrupt hook
after an exception or ``INT n`` has been delivered through the IDT (EIP is at the handler).
Hooks see the accesses an instruction makes, explicit and implicit (stack, descriptor tables,
interrupt frames), but not the page walk's own reads.  A callback may read and write
registers and memory and add or delete hooks; :meth:`HookMixin.stop` ends the run, which
then returns ``Status.STOPPED`` (its return value is ignored).

How they cost nothing when none is set: code hooks share the compiled loop's breakpoint
ranges (``state.BP``: the loop stops before an instruction inside one, and Python calls the
hooks and resumes), memory hooks are ranges the general path's ``lin_read``/``lin_write``
compare against (``memhook.py``) while the fast path and compiled loops stay off, interrupt
hooks are one flag.  With none of them set the compiled loop runs exactly as before.  A
hooked instruction costs one return to Python (see ``benchmarks/bench_hooks.py``).
"""
import operator
import threading
from dataclasses import dataclass

from . import state as S

_CS_BASE = S.SEG + 4 * S.CS + S.S_BASE
#: the memory-hook kinds and their compiled bits (fetch is checked before the instruction)
ACCESS = {"read": S.MH_READ, "write": S.MH_WRITE, "fetch": 0}


@dataclass(frozen=True)
class Hook:
    """One hook: ``kind`` is "code", "read", "write", "fetch" or "interrupt"."""

    kind: str
    fn: object
    begin: int = 0
    end: int = S.M32
    physical: bool = False

    def covers(self, linear, physical, size=1, physical2=None):
        """Does an access of ``size`` bytes at ``linear`` meet it?  ``physical`` is the
        physical address of its bytes up to the page end, ``physical2`` of the rest when it
        crosses into the next page."""
        if not self.physical:
            return linear <= self.end and linear + size - 1 >= self.begin
        first = min(size, 4096 - (linear & 0xFFF))
        parts = [(physical, first)] + ([(physical2, size - first)] if size > first else [])
        return any(p is not None and p <= self.end and p + n - 1 >= self.begin
                   for p, n in parts)


def _address(name, value, top):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if not 0 <= v <= top:
        raise ValueError(f"{name}={v:#x} is outside 0..{top:#x}")
    return v


def merge_ranges(ranges, most):
    """Sorted, merged ``(first, last)`` ranges; when more than ``most`` are left, the closest
    neighbours are joined (a superset: callers filter the stops they did not ask for)."""
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    while len(out) > most:
        i = min(range(len(out) - 1), key=lambda j: out[j + 1][0] - out[j][1])
        out[i:i + 2] = [(out[i][0], out[i + 1][1])]
    return out


class HookMixin:
    """The hook registry of :class:`~kjcore.cpu.CPU` and the run loop's side of it."""

    def _init_hooks(self):
        self._mv = memoryview(self._s)    # the state vector's slots as plain ints, cheaply
        self._hooks = {}              # handle -> Hook
        self._next_handle = 1
        self._hooks_lock = threading.Lock()   # hooks may be added from another thread (gdb)
        self._hooks_changed = True
        self._stop_requested = False
        self._checked_at = None       # linear address whose code stop was handled, not yet run
        self._bp_active = frozenset()
        self._code_hooks = ()
        self._mem_hooks = ()
        self._int_hooks = ()
        self._stop_ranges = ()

    # ------------------------------------------------------------------ public API
    def hook_code(self, fn, begin=0, end=S.M32):
        """Call ``fn(cpu, address)`` before each instruction at a linear address in
        ``[begin, end]``; returns a handle for :meth:`hook_del`."""
        return self._add(Hook("code", fn, *self._range(begin, end, S.M32)))

    def hook_mem(self, fn, access="write", begin=0, end=S.M32, *, physical=False):
        """Call ``fn(cpu, access, address, size, value)`` for each ``access`` ("read",
        "write" or "fetch") that touches ``[begin, end]``, linear or, with ``physical``,
        physical addresses; returns a handle.  At most ``state.MH_MAX`` read/write hooks."""
        if access not in ACCESS:
            raise ValueError(f"access must be one of {', '.join(ACCESS)}, not {access!r}")
        top = (1 << 52) - 1 if physical else S.M32
        hook = Hook(access, fn, *self._range(begin, end, top), physical=bool(physical))
        if access != "fetch" and sum(h.kind != "fetch" for h in self._mem_list()) >= S.MH_MAX:
            raise ValueError(f"at most {S.MH_MAX} read/write memory hooks can be set")
        return self._add(hook)

    def hook_interrupt(self, fn):
        """Call ``fn(cpu, vector)`` after each exception or software interrupt is delivered;
        returns a handle."""
        return self._add(Hook("interrupt", fn))

    def hook_del(self, handle):
        """Remove the hook ``handle`` (from any ``hook_*`` call); KeyError if there is none."""
        with self._hooks_lock:
            if handle not in self._hooks:
                raise KeyError(f"no hook with handle {handle!r}")
            del self._hooks[handle]
            self._hooks_changed = True

    @property
    def memory_hooked(self):
        """True while a read, write or fetch hook is set."""
        return bool(self._mem_list())

    def stop(self):
        """End the current run: :meth:`run` returns ``Status.STOPPED`` right after the hook
        that calls this, or, called from another thread, within one slice (``SLICE_SECONDS``)."""
        self._stop_requested = True

    # ------------------------------------------------------------------ registry
    def _range(self, begin, end, top):
        b, e = _address("begin", begin, top), _address("end", end, top)
        if b > e:
            raise ValueError(f"begin {b:#x} is after end {e:#x}")
        return b, e

    def _add(self, hook):
        if not callable(hook.fn):
            raise TypeError(f"a hook must be callable, not {type(hook.fn).__name__}")
        with self._hooks_lock:
            handle = self._next_handle
            self._next_handle += 1
            self._hooks[handle] = hook
            self._hooks_changed = True
        return handle

    def _mem_list(self):
        return [h for h in self._hooks.values() if h.kind in ACCESS]

    def _sync_hooks(self):
        """Write the breakpoints and hooks into the state vector (at every run, and between
        slices when a hook was added or deleted meanwhile)."""
        with self._hooks_lock:
            hooks = list(self._hooks.values())
            self._hooks_changed = False
        s = self._s
        code = [h for h in hooks if h.kind in ("code", "fetch")]
        # (first, last, fn, a code hook?, physical?): what _code_stop reads, unpacked once
        self._code_hooks = tuple((h.begin, h.end, h.fn, h.kind == "code", h.physical)
                                 for h in code)
        self._mem_hooks = tuple(h for h in hooks if h.kind in ("read", "write"))
        self._int_hooks = tuple(h for h in hooks if h.kind == "interrupt")
        self._bp_active = frozenset(int(a) & S.M32 for a in self.breakpoints)
        stops = [(a, a) for a in self._bp_active]
        stops += [(0, S.M32) if h.physical else (h.begin, h.end) for h in code]
        self._stop_ranges = merge_ranges(stops, S.BP_MAX // 2)
        s[S.NBP] = len(self._stop_ranges)
        for i, (lo, hi) in enumerate(self._stop_ranges):
            s[S.BP + 2 * i] = lo
            s[S.BP + 2 * i + 1] = hi
        s[S.MH_N] = len(self._mem_hooks)
        for i, h in enumerate(self._mem_hooks):
            k = S.MH + 3 * i
            s[k], s[k + 1] = h.begin, h.end
            s[k + 2] = ACCESS[h.kind] | (S.MH_PHYS if h.physical else 0)
        s[S.HOOK_INT] = 1 if self._int_hooks else 0
        s[S.MH_HITS] = 0
        s[S.HOOK_VEC] = 0

    # ------------------------------------------------------------------ the run loop's side
    def _linear_ip(self):
        mv = self._mv
        return (mv[_CS_BASE] + mv[S.EIP]) & S.M32

    def _code_stop(self, breakpoints):
        """Before the instruction at CS:EIP: call the code and fetch hooks covering it and say
        whether the run ends there (a Status value: STOPPED, or BREAK at a breakpoint when
        ``breakpoints``), else None.  A hook that moves EIP gets the new address checked too."""
        while True:
            lin = self._linear_ip()
            if lin == self._checked_at:
                return None
            for lo, hi in self._stop_ranges:
                if lo <= lin <= hi:
                    break
            else:
                return None
            self._checked_at = lin
            phys = None
            for first, last, fn, is_code, physical in self._code_hooks:
                a = lin
                if physical:
                    if phys is None:
                        phys = self.translate(lin, fetch=True)
                    a = phys
                if a is not None and first <= a <= last:
                    if is_code:
                        fn(self, lin)
                    else:
                        fn(self, "fetch", a, 1, None)
            if self._hooks_changed:
                self._sync_hooks()
            if self._stop_requested:
                return S.ST_STOPPED
            if self._linear_ip() != lin:
                continue
            if breakpoints and lin in self._bp_active:
                return S.ST_BREAK
            return None

    def _hook_stop(self):
        """The compiled loop stopped after an instruction that hit a memory hook or delivered
        an interrupt: call those hooks; STOPPED when one asked to stop, else None."""
        mv = self._mv
        hits = [mv[S.MH_HIT + 5 * j:S.MH_HIT + 5 * j + 5].tolist()
                for j in range(min(mv[S.MH_HITS], S.MH_HIT_MAX))]
        vector = mv[S.HOOK_VEC] - 1
        mv[S.MH_HITS] = 0
        mv[S.HOOK_VEC] = 0
        if mv[S.EIP] == mv[S.D_START]:
            self._checked_at = self._linear_ip()    # inside a REP: its code stop was handled
        for kind, lin, phys, size, value in hits:
            access = "read" if kind == S.MH_READ else "write"
            crossing = (lin & 0xFFF) + size > 4096
            phys2 = self.translate((lin | 0xFFF) + 1 & S.M32) if crossing else None
            for h in self._mem_hooks:
                if h.kind == access and h.covers(lin, phys, size, phys2):
                    h.fn(self, access, phys if h.physical else lin, size, value)
        if vector >= 0:
            for h in self._int_hooks:
                h.fn(self, vector)
        if self._hooks_changed:
            self._sync_hooks()
        return S.ST_STOPPED if self._stop_requested else None
