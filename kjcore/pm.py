"""The first kernel's power-management dance around a kexec jump (SPEC §8).

With ``KEXEC_PRESERVE_CONTEXT`` the 2.6.27 ``kernel_kexec`` quiesces the machine the way
hibernation does before it calls ``machine_kexec``, and undoes every step in exact reverse after
the jump returns.  A step that fails skips the jump and undoes only the steps already done.
kjcore models the steps with a small device model so research scripts can watch or fail them:
``Machine.devices`` is a list of objects with ``suspend(state)`` and ``resume(state)`` callbacks
(optional ``power_down(state)`` / ``power_up(state)`` for the late phase, ``shutdown()`` for the
non-preserve path).  ``suspend``/``power_down`` return 0 or an errno (a negative errno is
accepted too); a device that fails suspend makes the devices already suspended resume, in reverse
order.  A callback that raises is a failure too: the same unwinding runs, then its exception
propagates unchanged.  Every step is appended to ``Machine.pm_log``, which keeps the last
:data:`PM_LOG_LIMIT` steps (``Machine.pm_log_dropped`` counts the older ones discarded, see
:func:`bound_log`).

>>> import errno, kjcore
>>> from kjcore.pm import RecordingDevice, preserve_context_transition
>>> m = kjcore.Machine(ram_size=16 << 20)
>>> m.devices = [RecordingDevice("disk"), RecordingDevice("net", fail_suspend=errno.EIO)]
>>> preserve_context_transition(m, jump=lambda: "jumped")
Traceback (most recent call last):
  ...
kjcore.errors.KexecError: [Errno 5] Input/output error (EIO: device net failed to suspend)
>>> m.devices[0].calls
['suspend(freeze)', 'resume(restore)']
"""
import errno

from .errors import KexecError

PMSG_FREEZE = "freeze"
PMSG_RESTORE = "restore"
#: ``Machine.pm_log`` keeps at most this many steps (the most recent ones)
PM_LOG_LIMIT = 4096


class RecordingDevice:
    """A device that records its callbacks and can be told to fail (for tests and scripts)."""

    def __init__(self, name, fail_suspend=0, fail_power_down=0):
        self.name = name
        self.fail_suspend = fail_suspend
        self.fail_power_down = fail_power_down
        self.calls = []

    def suspend(self, state):
        self.calls.append(f"suspend({state})")
        return self.fail_suspend

    def resume(self, state):
        self.calls.append(f"resume({state})")

    def power_down(self, state):
        self.calls.append(f"power_down({state})")
        return self.fail_power_down

    def power_up(self, state):
        self.calls.append(f"power_up({state})")

    def shutdown(self):
        self.calls.append("shutdown()")

    def __repr__(self):
        return f"RecordingDevice({self.name!r})"


def _name(dev):
    return getattr(dev, "name", type(dev).__name__)


def _phase(m, method, undo, state, undo_state, what):
    """Call ``method`` on every device in order; when one returns an error or raises, undo the
    done ones in reverse, then raise (KexecError) or let the exception propagate."""
    done = []
    try:
        for dev in m.devices:
            fn = getattr(dev, method, None)
            if fn is None:
                continue
            err = abs(int(fn(state) or 0))
            if err:
                raise KexecError(err, f"device {_name(dev)} failed to {what}")
            done.append(dev)
    except BaseException:
        for d in reversed(done):
            fn = getattr(d, undo, None)
            if fn is not None:
                fn(undo_state)
        raise


def _resume_all(m, method, state):
    for dev in reversed(m.devices):
        fn = getattr(dev, method, None)
        if fn is not None:
            fn(state)


def preserve_context_transition(m, jump, save_state=None, restore_state=None):
    """Run the 2.6.27 preserve-context sequence around ``jump()`` and return its result.

    Steps: prepare console, freeze processes (``m.freeze_processes()`` returns 0 or an error;
    failure -> EBUSY), suspend console, suspend devices (PMSG_FREEZE), disable non-boot CPUs,
    lock device PM, interrupts off, power devices down, save processor state, the jump, then
    every step undone in reverse.  A failing step raises :class:`KexecError` after undoing the
    steps before it; a step (or device callback) that raises anything else has the same steps
    undone, then its exception propagates.  An exception from ``jump`` (a triple fault)
    propagates without unwinding: the first kernel is gone.
    """
    log = m.pm_log
    steps = [
        ("prepare console", None, "restore console"),
        ("freeze processes", lambda: _freeze(m), "thaw processes"),
        ("suspend console", None, "resume console"),
        ("suspend devices", lambda: _phase(m, "suspend", "resume", PMSG_FREEZE, PMSG_RESTORE,
                                           "suspend"), "resume devices"),
        ("disable non-boot CPUs", None, "enable non-boot CPUs"),
        ("lock device PM", None, "unlock device PM"),
        ("interrupts off", None, "interrupts on"),
        ("power devices down", lambda: _phase(m, "power_down", "power_up", PMSG_FREEZE,
                                              PMSG_RESTORE, "power down"), "power devices up"),
        ("save processor state", save_state, "restore processor state"),
    ]
    undo = {"resume devices": lambda: _resume_all(m, "resume", PMSG_RESTORE),
            "power devices up": lambda: _resume_all(m, "power_up", PMSG_RESTORE),
            "restore processor state": restore_state}
    def unwind(done):
        for undo_name in reversed(done):
            log.append(undo_name)
            fn = undo.get(undo_name)
            if fn is not None:
                fn()

    done = []
    try:
        for name, action, undo_name in steps:
            log.append(name)
            if action is not None:
                action()
            done.append(undo_name)
    except BaseException:       # a failed step, or a callback that raised: undo, then re-raise
        unwind(done)
        raise
    log.append("machine_kexec")
    result = jump()         # an exception here means the first kernel is gone: no unwinding
    unwind(done)
    return result


def _freeze(m):
    err = m.freeze_processes()
    if err:
        raise KexecError(errno.EBUSY, f"freezing processes failed ({err})")


def bound_log(m):
    """Drop the oldest steps of ``m.pm_log`` beyond :data:`PM_LOG_LIMIT`, counting them in
    ``m.pm_log_dropped`` (so thousands of jumps do not grow the log without bound)."""
    excess = len(m.pm_log) - PM_LOG_LIMIT
    if excess > 0:
        del m.pm_log[:excess]
        m.pm_log_dropped += excess


def shutdown_transition(m):
    """The non-preserve path before the jump: reboot notifiers, device shutdown, machine
    shutdown (SPEC §8).  The first kernel does not come back."""
    m.pm_log.append("reboot notifiers")
    m.pm_log.append("device shutdown")
    for dev in m.devices:
        fn = getattr(dev, "shutdown", None)
        if fn is not None:
            fn()
    m.pm_log.append("machine shutdown")
