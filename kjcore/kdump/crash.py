"""The first kernel's crash path: ``panic`` -> ``crash_kexec`` -> the crash image (SPEC §17).

What 2.6.27 does, and kjcore with it:

1. ``panic(message)`` prints ``Kernel panic - not syncing: <message>`` (at most 1023
   characters: the kernel formats into a 1024-byte buffer) and calls ``crash_kexec``.
2. ``crash_kexec`` takes the kexec lock *without waiting* (an ``xchg``).  If it is held -- a
   ``kexec_load`` or ``kernel_kexec`` is in progress, e.g. the panic comes from a device
   callback or a port handler during a jump -- it does nothing at all.  With the lock and a
   crash image loaded it runs ``machine_crash_shutdown`` and ``machine_kexec``; with the lock
   and no crash image it releases the lock.  ``panic`` then stops the CPU for good.
3. ``machine_crash_shutdown`` (one CPU: no other CPUs to stop) saves the panicking CPU's
   registers with ``crash_save_cpu``: an ``NT_PRSTATUS`` note named ``CORE`` followed by an
   empty note, written into the CPU's crash-notes buffer at :data:`~.notes.CRASH_NOTES`
   (``Machine.crash_notes``, see :mod:`kjcore.kdump.notes`).
4. ``machine_kexec`` of the crash image is the ordinary one (SPEC §7.7): the crash image
   was loaded in place (its list is a bare ``IND_DONE``), so nothing is swapped and the
   routine jumps to the image's entry with paging off and the general registers zeroed.

The registers saved are the CPU's when ``panic`` is called: kjcore's first kernel has no
``panic`` code of its own to stand in, so EIP is where its CPU is (between two jumps, the
return stub of the kernel text); ``orig_eax`` is ``0xffffffff`` (2.6.27 leaves it
uninitialised) and ``pr_pid`` is 1 (the process that made the kernel panic).

**A crash image loaded with KEXEC_PRESERVE_CONTEXT.**  ``kexec_load`` records the flag for
crash images too, and ``machine_kexec`` passes it to the relocation routine, which takes the
preserve-context path: but a crash image has no swap page, and 2.6.27's ``machine_kexec``
fills ``page_list[PA_SWAP_PAGE]`` only for normal images, so the routine's stack becomes
"swap page + 4096" with whatever the word holds -- uninitialised stack in the kernel, 0 in
kjcore (:func:`kjcore.relocate.prepare_call`).  The routine therefore ``call``s the entry with
ESP = 0x1000, which pushes its jump-back address at physical ``0xffc``, in the first 640 KiB
that kdump's backup region is meant to preserve (the backup is taken later, by purgatory, so
the vmcore shows that word).  If the crash image halts or runs out of budget, it owns the
machine as any crash image does (``"crash-kernel"``).  If it returns (``ret``), the routine
reads the re-entry point at ESP = 0x1000 (the first word of the kernel text page), swaps
nothing back, turns paging on and returns into the first kernel's ``crash_kexec``, which
releases the lock; ``panic`` then stops the CPU (``"panicked"``) with the crash image still
loaded and its ``start`` set to that word.

States (``Machine.state``): ``"crash-kernel"`` once the crash image runs, ``"panicked"`` when
it could not run (no crash image, or it came back).  ``panic`` on a machine whose first
kernel is not running is a ``RuntimeError`` (``Machine._check_running``); with the kexec lock
held, ``panic`` never returns: the machine is marked ``"panicked"`` and :class:`KernelPanic`
is raised, so whatever holds the lock (a jump, a load) unwinds.
"""
from dataclasses import dataclass

from ..machine_kexec import ExecResult, JumpResult, check_budget, machine_kexec
from .notes import CRASH_NOTES, PR_REG_NAMES, prstatus_note

#: the kernel formats the panic message into a 1024-byte buffer
PANIC_MESSAGE_MAX = 1023
#: ``pr_pid`` of the saved note
PANIC_PID = 1
_SELECTORS = ("ds", "es", "fs", "gs", "cs", "ss")


class KernelPanic(RuntimeError):
    """``panic`` was called while the kexec lock was held: ``crash_kexec`` did nothing and
    the first kernel stopped (``Machine.state == "panicked"``)."""


@dataclass
class PanicResult:
    """What ``Machine.panic`` did.

    ``message`` is the console line the kernel printed; ``crash_kexec`` says what
    ``crash_kexec`` did: ``"ran"`` (the crash image was entered), ``"no crash image"``;
    ``result`` is the :class:`~kjcore.machine_kexec.ExecResult` of the crash image (or the
    :class:`~kjcore.machine_kexec.JumpResult` of one that came back), None when none ran;
    ``state`` the machine's state afterwards.
    """
    message: str
    crash_kexec: str
    result: object
    state: str


def panic_line(message):
    """The console line of ``panic(message)``; ``TypeError`` unless ``message`` is a str."""
    if not isinstance(message, str):
        raise TypeError(f"panic message must be a str, not {type(message).__name__}")
    return f"Kernel panic - not syncing: {message[:PANIC_MESSAGE_MAX]}"


def crash_registers(cpu):
    """The registers ``crash_setup_regs`` + ``elf_core_copy_regs`` save for ``cpu``, by
    ``pr_reg`` name (segment selectors as 16-bit values)."""
    regs = {name: int(getattr(cpu, name)) for name in
            ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "eip", "eflags", "esp")}
    regs.update({seg: int(getattr(cpu, seg).selector) & 0xFFFF for seg in _SELECTORS})
    regs["orig_eax"] = 0xFFFFFFFF
    assert set(regs) == set(PR_REG_NAMES)
    return regs


def crash_save_cpu(m, regs):
    """Write the note of ``regs`` into CPU 0's crash-notes buffer in ``m``'s RAM."""
    note = prstatus_note(regs, PANIC_PID)
    m.ram[CRASH_NOTES:CRASH_NOTES + len(note)] = bytearray(note)


def panic(m, message="", *, max_steps=None, timeout=None):
    """``panic(message)`` in ``m``'s first kernel; returns a :class:`PanicResult`.

    ``max_steps`` / ``timeout`` bound the crash image as they bound ``kernel_kexec``.
    Raises :class:`KernelPanic` when the kexec lock is held, ``RuntimeError`` when the first
    kernel is not running, and what ``machine_kexec`` raises when the crash image loses the
    machine (``TripleFault``...).
    """
    line = panic_line(message)
    max_steps, timeout = check_budget(max_steps, timeout)
    if not m.kexec_lock.acquire(blocking=False):
        if m.state in ("kernel", "image"):     # a load, or a jump the panic interrupts
            m.state = "panicked"
            raise KernelPanic(f"{line} (crash_kexec: the kexec lock is held, no crash "
                              "kernel runs; the first kernel stopped)")
        m._check_running("panic")
    try:
        m._check_running("panic")
        image = m.kexec_crash_image
        if image is None:
            m.state = "panicked"
            return PanicResult(line, "no crash image", None, m.state)
        crash_save_cpu(m, crash_registers(m.cpu))
        result = machine_kexec(m, image, max_steps, timeout)
    finally:
        m.kexec_lock.release()
    m.last_result = result
    if isinstance(result, JumpResult):      # a preserve-flagged crash image came back
        m.state = "panicked"
    else:
        assert isinstance(result, ExecResult)
        m.state = "crash-kernel"
    return PanicResult(line, "ran", result, m.state)
