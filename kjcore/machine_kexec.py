"""machine_kexec: the jump itself, on kjcore's CPU (SPEC §6-§8).

The first kernel calls the project's relocation routine (``kjcore/relocate_kernel.S``) at the
control page's kernel virtual address; the CPU then runs everything the hardware would: the
switch to the kexec page tables, paging off, the page swap, the physical-mode image, the swap
back, paging on and the return.  The run stops at the first kernel's return address.

Two engines produce byte-identical RAM and CPU state (SPEC §12 invariant 13):

``"emulated"``
    the whole routine runs on the CPU, its ``rep movsl`` page copies included;
``"native"``
    when the CPU reaches the routine's ``swap_pages`` the pass is done by ``kjcore/_swap.pyx``
    instead, and the CPU then runs ``swap_pages`` over an empty list (its head argument set to
    the word that ended the native walk for that call, then put back), so every register, flag
    and stack word ends as the emulated pass leaves it; the pass's cost on the CPU is charged
    to the step budget.  Passes the native engine cannot reproduce exactly (DF = 1, a list
    that never ends or that the copies change, a strict-bus violation, a budget too small for
    the pass: see ``_native_swap``) are left to the CPU.
"""
import math
import numbers
import operator
import time
from dataclasses import dataclass

import numpy as np

from . import relocate
from .constants import PAGE_SIZE
from .cpu import Status
from .cpu import state as S
from .swap import plan_pass, swap_pass

#: step budget of a jump when the caller gives none
DEFAULT_MAX_STEPS = 1_000_000_000

#: the fewest guest instructions the routine spends on a word it reads from the list
_MIN_STEPS_PER_WORD = relocate.SWAP_PAGES_READ_STEPS + min(relocate.SWAP_PAGES_WORD_STEPS.values())
#: what the CPU spends on the empty pass after a native one (its head is the DONE word)
_EMPTY_PASS_STEPS = relocate.swap_pages_steps(0, {"done": 1})
#: what save_processor_state / restore_processor_state keep (SPEC §8): state record fields
PRESERVED_STATE = S.TABLE_NAMES + (
    "cr0", "cr2", "cr3", "cr4", "efer", "eflags", "ebx", "esi", "edi", "ebp", "esp", "cpl") + tuple(
    f"{seg}_{field}" for seg in S.SEG_NAMES for field in S.SEG_FIELDS)
#: their slots in a CPU state record, copied in one step
_PRESERVED_SLOTS = np.array([S.STATE_DTYPE.names.index(n) for n in PRESERVED_STATE])


@dataclass
class JumpResult:
    """A preserve-context jump that came back (``kernel_kexec`` with KEXEC_PRESERVE_CONTEXT).

    ``start`` is the new ``image.start`` (the re-entry point read at [ESP] on return), ``eax``
    what the routine returned (the same value), ``steps`` the guest steps executed
    (instructions, each element of a REP string instruction counted as one), ``pages_swapped``
    the source pages swapped in and back, ``debugcon`` what the guest wrote to port 0xE9 during
    this jump, ``trace`` its last instructions (:class:`~kjcore.cpu.trace.TraceRecord`) when
    ``kernel_kexec(trace=N)`` asked for them.
    """
    start: int
    steps: int
    pages_swapped: int
    debugcon: bytes
    eax: int
    trace: tuple = ()


@dataclass
class ExecResult:
    """A plain kexec: the new image runs and the first kernel is gone.

    ``status`` is why the CPU stopped: ``Status.HLT``, or ``Status.STEP_LIMIT`` /
    ``Status.TIMEOUT`` when the caller's budget ended first, ``Status.STOPPED`` at a breakpoint
    or hook stop (the image is then stopped between
    two steps: ``m.cpu.run()`` continues it).
    """
    status: Status
    steps: int
    pages_swapped: int
    debugcon: bytes
    eip: int
    trace: tuple = ()


def check_budget(max_steps, timeout):
    """Validate a jump's budget: ``(max_steps, timeout)`` as an int or None and a float or None.

    ``max_steps`` must be a positive integer and ``timeout`` a positive, finite number of
    seconds; anything else is a ``TypeError`` / ``ValueError`` naming the argument.
    """
    if max_steps is not None:
        if isinstance(max_steps, bool):
            raise TypeError("max_steps must be an integer, not bool")
        try:
            max_steps = operator.index(max_steps)
        except TypeError:
            raise TypeError(f"max_steps must be an integer, not {type(max_steps).__name__}") \
                from None
        if max_steps <= 0:
            raise ValueError(f"max_steps must be positive, not {max_steps}")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
        timeout = float(timeout)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout}")
    return max_steps, timeout


def save_processor_state(cpu):
    """The state the first kernel saves before the jump (a CPU state record)."""
    return cpu.get_state()


def restore_processor_state(cpu, saved):
    """Put back what :func:`save_processor_state` saved, leaving EAX/ECX/EDX/EIP as they are."""
    now = cpu.get_state()
    slots = np.asarray(now).reshape(1).view(np.int64)
    slots[_PRESERVED_SLOTS] = np.asarray(saved).reshape(1).view(np.int64)[_PRESERVED_SLOTS]
    cpu.set_state(now)


def machine_kexec(m, image, max_steps=None, timeout=None, trace=None):
    """Run the relocation routine for ``image`` on ``m.cpu``; a JumpResult or an ExecResult.

    ``max_steps`` (default :data:`DEFAULT_MAX_STEPS`) and ``timeout`` (seconds, default none)
    bound the guest, as checked by :func:`check_budget`.  From the call into the routine until
    it returns, ``m.state`` is ``"image"``: whatever stops the guest on the way (a budget, an
    exception from a port handler, ``KeyboardInterrupt``) leaves it so, with the CPU between
    two steps.  The exceptions come from :meth:`kjcore.cpu.CPU.raise_for_status`:
    :class:`~kjcore.cpu.TripleFault` (``m.state`` becomes ``"lost"``), and for a
    preserve-context image that does not come back :class:`~kjcore.cpu.StepLimit`,
    :class:`~kjcore.cpu.GuestTimeout`, :class:`~kjcore.cpu.GuestHalted`,
    :class:`~kjcore.cpu.GuestIdle` or, when one of the
    user's ``cpu.breakpoints`` is reached or a hook calls ``cpu.stop()`` (hooks and breakpoints
    stay active during the jump), :class:`~kjcore.cpu.Stopped` (``"image"``);
    :class:`~kjcore.cpu.BusError` / :class:`~kjcore.cpu.UnsupportedOperation` (``"lost"``).
    ``trace=N`` records the jump's last N instructions (:meth:`kjcore.cpu.CPU.start_trace`;
    the native engine's page copies are not instructions).
    """
    cpu, layout = m.cpu, m.first_kernel
    budget = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    deadline = None if timeout is None else time.monotonic() + timeout
    regs = relocate.prepare_call(m.ram, layout, image.head, image.start, image.control_page,
                                 image.swap_page, m.pae, image.preserve_context,
                                 m.fix_pae_return, fix_peer_df=m.fix_peer_df)
    cpu.load(regs)
    m.state = "image"           # until the routine returns to the first kernel
    cpu.clear_debugcon()
    swap_entry = image.control_page + relocate.SYMBOLS["swap_pages"]
    # The user's breakpoints and hooks stay active (SPEC §16): the routine's own stops are
    # added to the breakpoints, and a stop that is only the user's ends the jump (Stopped).
    user_breakpoints = set(cpu.breakpoints)
    cpu.breakpoints = user_breakpoints | {layout.return_address, swap_entry}
    native = m.engine == "native" and not cpu.memory_hooked   # hooks see every copy
    user_open_bus, cpu.open_bus = cpu.open_bus, True   # ports nobody handles: an empty bus
    per_pass = image.nr_source_pages
    steps = passes = 0
    pending = None          # native engine: (head argument's address, its value, return, steps)
    # A swap pass is the swap engine's, not the guest's: its copies reach a BIOS ROM
    # destination on both engines (invariant 13); the read-only ROM is back for the image.
    rom_pass = None         # (swap_pages' return address, the CPU's ROM range) during a pass
    if trace:
        cpu.start_trace(trace)
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            status = cpu.run(budget - steps, timeout=left)
            steps += cpu.steps
            if status == Status.IO:
                _empty_port(cpu)
                continue
            if status != Status.BREAK:
                break
            at = (cpu.cs.base + cpu.eip) & 0xFFFFFFFF
            paging = cpu.cr0 & S.CR0_PG
            if at == layout.return_address and paging:
                break
            ours = False
            if at == swap_entry and not paging:
                ours = True
                passes += 1
                rom_pass = (_word(m.ram, cpu.esp), cpu.rom)
                cpu.rom = None
                cpu.breakpoints.add(rom_pass[0])
                if native:
                    pending = _native_swap(m, cpu, budget - steps)
                    if pending is not None:
                        cpu.breakpoints.add(pending[2])
                        steps += pending[3]
            else:
                if rom_pass is not None and at == rom_pass[0] and not paging:
                    ours = True
                    cpu.rom = rom_pass[1]
                    if at not in user_breakpoints:
                        cpu.breakpoints.discard(at)
                    rom_pass = None
                if pending is not None and at == pending[2] and not paging:
                    ours = True
                    _put_word(m.ram, pending[0], pending[1])    # the empty pass has read it
                    if at not in user_breakpoints:
                        cpu.breakpoints.discard(at)
                    pending = None
            if at in user_breakpoints and not ours:
                status = Status.STOPPED     # the user's breakpoint: the jump stops there
                break
    finally:
        if rom_pass is not None:
            cpu.rom = rom_pass[1]
        cpu.breakpoints = user_breakpoints
        cpu.open_bus = user_open_bus
        _keep_console(m, cpu)
        if trace:
            cpu.stop_trace()
    return _finish(m, image, cpu, status, steps, passes * per_pass, timeout,
                   tuple(cpu.trace_records()) if trace else ())


def _finish(m, image, cpu, status, steps, pages, timeout, trace):
    if status == Status.BREAK:      # only the return to the first kernel ends with BREAK
        m.state = "kernel"
        image.start = cpu.eax
        return JumpResult(start=cpu.eax, steps=steps, pages_swapped=pages, debugcon=cpu.debugcon,
                          eax=cpu.eax, trace=trace)
    stopped = status in (Status.HLT, Status.STEP_LIMIT, Status.TIMEOUT, Status.IDLE,
                         Status.STOPPED)
    # a crash image owns the machine once entered, preserve flag or not (kjcore.kdump.crash)
    if stopped and (not image.preserve_context or image.type == "crash"):
        return ExecResult(status=status, steps=steps, pages_swapped=pages,
                          debugcon=cpu.debugcon, eip=cpu.eip, trace=trace)
    if not stopped:
        m.state = "lost"
    at = f"EIP {cpu.eip:#010x}"
    message = None
    if status == Status.HLT:
        message = f"the image halted at {at} with interrupts off: it never returns to the first " \
            "kernel"
    elif status == Status.STEP_LIMIT:
        message = f"the image did not return within {steps} steps ({at})"
    elif status == Status.TIMEOUT:
        message = f"the image did not return within {timeout:g} s ({steps} steps, {at})"
    elif status == Status.IDLE:
        message = f"the image waits for keyboard input at {at} (m.keyboard.feed, then run on)"
    elif status == Status.STOPPED:
        message = f"a breakpoint or hook stopped the jump at {at} after {steps} steps"
    elif status == Status.TRIPLE_FAULT:
        vec, err, eip = cpu.fault
        message = relocate.triple_fault_message(image.control_page, vec, err, eip,
                                                cpu.get_state(), pae=m.pae,
                                                fix_pae_return=m.fix_pae_return)
    cpu.raise_for_status(status, message, expected=())


def _keep_console(m, cpu):
    """Append the jump's console output to ``m.debugcon``, which keeps the last
    ``CPU.DEBUGCON_LIMIT`` bytes; ``m.debugcon_dropped`` counts every byte discarded."""
    out = m.debugcon + cpu.debugcon
    excess = max(0, len(out) - cpu.DEBUGCON_LIMIT)
    m.debugcon = out[excess:]
    m.debugcon_dropped += cpu.debugcon_dropped + excess


def _native_swap(m, cpu, remaining):
    """Do the pass of the ``swap_pages(head, swap_page)`` call the CPU is about to make.

    The CPU then runs ``swap_pages`` with the word that ended the walk as its head argument: an
    empty pass that leaves ECX, EDX, EFLAGS and the stack words as the full pass would.
    A pass the native engine cannot do exactly as the routine would is left to the CPU
    (:func:`kjcore.swap.plan_pass` decides, without copying): one entered with DF = 1 (a peer
    came back with it and fix_peer_df is off: the copies run downwards, SPEC 7.10) or with an
    unaligned swap page (a peer wrote the control page's data area); a list that never reaches
    IND_DONE (self-linked, cyclic, or running through all memory) -- the CPU then walks it
    until the budget ends, exactly like the emulated engine; one whose copies would change the
    list, the routine's code or its stack; on a strict bus one that touches memory past RAM
    (the CPU faults at exactly the instruction, with exactly the partial copies, of the
    emulated engine); and one the emulated routine might not finish within the ``remaining``
    instruction budget.  A signal that interrupts the native copies (Ctrl-C) propagates and
    leaves the machine ``"lost"``: its memory is half swapped.
    Returns (head argument's stack address, its value, return address, the steps the emulated
    pass costs beyond the empty one: charged to the budget), or None.
    """
    esp = cpu.esp
    head, swap = _word(m.ram, esp + 4), _word(m.ram, esp + 8)
    if cpu.eflags & S.DF or swap % PAGE_SIZE:
        return None
    code = (cpu.cs.base + cpu.eip) & 0xFFFFFFFF
    verdict, words, kinds = plan_pass(m.ram, head, swap, protect=(code, esp - 16, esp + 11),
                                      strict_bus=m.strict_bus,
                                      max_words=remaining // _MIN_STEPS_PER_WORD + 1)
    steps = relocate.swap_pages_steps(words, kinds)
    if verdict != "ok" or steps > remaining:
        return None
    try:
        _, stop = swap_pass(m.ram, head, swap, "native")
    except BaseException:
        m.state = "lost"
        raise
    _put_word(m.ram, esp + 4, stop)
    return esp + 4, head, _word(m.ram, esp), steps - _EMPTY_PASS_STEPS


def _word(ram, addr):
    return int(ram[addr:addr + 4].view("<u4")[0]) if addr + 4 <= len(ram) else 0xFFFFFFFF


def _put_word(ram, addr, value):
    ram[addr:addr + 4] = np.array([value], dtype="<u4").view(np.uint8)


def _empty_port(cpu):
    """An I/O port nobody answers: reads float high, writes go nowhere (the compiled code does
    this itself unless more than ``PORT_MAX`` ports have handlers)."""
    port, size, out, _ = cpu.io_request
    cpu.complete_io(0 if out else (1 << (8 * size)) - 1)
