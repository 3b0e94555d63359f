"""Why a run stopped, and the one mapping from a stop to the exception a caller raises.

``CPU.run`` returns a :class:`Status` and never raises for anything the guest does.  Callers
that treat a status as an error (``CPU.raise_for_status``, ``Machine.kernel_kexec``, ``kjexec``,
the jump campaign) go through :data:`STATUS_EXCEPTION` / :func:`status_exception`, so each
status has exactly one exception class, and all of them are :class:`CPUFault`: catch the
classes, never their names.
"""
from enum import IntEnum

from . import state as S


class Status(IntEnum):
    """Why :meth:`CPU.run` stopped."""

    STEP_LIMIT = S.ST_STEP_LIMIT
    HLT = S.ST_HLT
    IO = S.ST_IO  #: an IN/OUT to a port without handler; see CPU.io_request
    TRIPLE_FAULT = S.ST_TRIPLE_FAULT
    BREAK = S.ST_BREAK
    BUS_ERROR = S.ST_BUS_ERROR  #: strict_bus: physical access past RAM (CPU.bus_address)
    UNSUPPORTED = S.ST_UNSUPPORTED  #: task switch, call gate or v86 requested
    TIMEOUT = S.ST_TIMEOUT  #: the wall-clock ``timeout`` of :meth:`CPU.run` passed
    #: the guest waits for input a script gives (a port handler returned ``Status.IDLE``,
    #: e.g. the BIOS's INT 16h on an empty ``m.keyboard``); the access that waited is made
    #: again by the next run
    IDLE = S.ST_IDLE
    STOPPED = S.ST_STOPPED  #: a hook or ``CPU.stop()`` ended the run (``kjcore.cpu.hooks``)


class CPUFault(Exception):
    """A run ended in a state the caller treats as an error; base of the CPU's exceptions.

    ``state`` is the CPU state record at the stop (:meth:`CPU.get_state`), ``status`` the
    :class:`Status` the exception stands for (None for this base class).
    """

    status = None

    def __init__(self, message, state=None):
        super().__init__(message)
        self.state = state


class TripleFault(CPUFault):
    """The guest could not deliver an exception: the processor shut down."""

    status = Status.TRIPLE_FAULT

    def __init__(self, vector, error_code, eip, state, message=None):
        self.vector = vector
        self.error_code = error_code
        self.eip = eip
        err = "" if error_code is None else f", error code {error_code:#x}"
        super().__init__(message or f"triple fault: exception {vector}{err} at EIP {eip:#010x}",
                         state)


class StepLimit(CPUFault):
    """The step budget ran out before the guest finished."""

    status = Status.STEP_LIMIT


class GuestTimeout(StepLimit):
    """The wall-clock budget (``timeout``) ran out before the guest finished.

    A :class:`StepLimit` (both are budgets the caller gave), so ``except StepLimit`` catches
    either.
    """

    status = Status.TIMEOUT


class BusError(CPUFault):
    """``strict_bus``: the guest accessed physical memory past the end of RAM."""

    status = Status.BUS_ERROR


class UnsupportedOperation(CPUFault):
    """The guest asked for a task switch, a call gate or v86."""

    status = Status.UNSUPPORTED


class GuestIdle(CPUFault):
    """The guest waits for input (INT 16h on an empty keyboard queue) where the caller expected
    it to go on; queue the input (``m.keyboard.feed``) and run again."""

    status = Status.IDLE


class GuestHalted(CPUFault):
    """The guest halted where the caller expected it to go on (e.g. to return)."""

    status = Status.HLT


class Stopped(CPUFault):
    """A hook, ``CPU.stop()`` or a breakpoint ended a run the caller expected to go on."""

    status = Status.STOPPED


#: the exception class of each status that can end a run abnormally
STATUS_EXCEPTION = {cls.status: cls for cls in (TripleFault, StepLimit, GuestTimeout, BusError,
                                                 UnsupportedOperation, GuestHalted, GuestIdle,
                                                 Stopped)}


def status_exception(status, state, message=None):
    """The exception for ``status`` (a key of :data:`STATUS_EXCEPTION`), built from the CPU
    state record ``state`` (``CPU.get_state()``); ``message`` replaces the default text."""
    cls = STATUS_EXCEPTION[Status(status)]
    eip = int(state["eip"])
    if cls is TripleFault:
        err = int(state["fault_err"])
        return TripleFault(int(state["fault_vec"]), None if err < 0 else err,
                           int(state["fault_eip"]), state, message)
    default = {
        Status.STEP_LIMIT: f"step limit reached at EIP {eip:#010x}",
        Status.TIMEOUT: f"timeout: the guest was stopped at EIP {eip:#010x}",
        Status.BUS_ERROR: f"physical access past RAM at {int(state['bus_addr']):#x}",
        Status.UNSUPPORTED: f"unsupported operation at EIP {eip:#010x} "
                            "(task switch, call gate or v86)",
        Status.HLT: f"the guest halted at EIP {eip:#010x}",
        Status.IDLE: f"the guest waits for input at EIP {eip:#010x}",
        Status.STOPPED: f"a hook stopped the guest at EIP {eip:#010x}",
    }[cls.status]
    return cls(message or default, state)
