"""Every exception kjcore raises at its boundary with the user, in one place.

``except kjcore.errors.X`` works whichever module raised it:

=========================  ==================================================================
:class:`KexecError`        a kexec system call failed (``OSError`` with the kernel's errno)
:class:`LoaderError`       kexec-tools' loader refuses an image (``field`` names why)
:class:`MachineFileError`  a machine directory cannot be opened or saved; subclasses
                           :class:`ForeignMachineFile`, :class:`DamagedMachineFile`,
                           :class:`MachineFileVersionError`, :class:`MachineBusyError`
:class:`UsageError`        a command-line value the ``kjcore``/``kjexec`` commands refuse
:class:`CPUFault`          a guest run ended in a state the caller treats as an error;
                           subclasses :class:`TripleFault`, :class:`StepLimit`,
                           :class:`GuestTimeout`, :class:`BusError`,
                           :class:`UnsupportedOperation`, :class:`GuestHalted`,
                           :class:`GuestIdle` (one per run status, defined beside the
                           statuses in :mod:`kjcore.cpu.status`)
:class:`SwapBusError`      a swap pass reached memory past RAM on a strict bus
=========================  ==================================================================

>>> import kjcore.errors as E
>>> issubclass(E.DamagedMachineFile, E.MachineFileError), issubclass(E.GuestTimeout, E.StepLimit)
(True, True)
"""
import errno as _errno
import os

from .cpu.status import (
    BusError,
    CPUFault,
    GuestHalted,
    GuestIdle,
    GuestTimeout,
    StepLimit,
    TripleFault,
    UnsupportedOperation,
)

__all__ = ["KexecError", "LoaderError", "MachineFileError", "ForeignMachineFile",
           "DamagedMachineFile", "MachineFileVersionError", "MachineBusyError", "UsageError",
           "CPUFault", "TripleFault", "StepLimit", "GuestTimeout", "BusError",
           "UnsupportedOperation", "GuestHalted", "GuestIdle", "SwapBusError"]


class KexecError(OSError):
    """A kexec system call failed; ``.errno`` is the errno the kernel returns.

    >>> e = KexecError(_errno.EBUSY, "kexec lock held")
    >>> isinstance(e, OSError), e.errno, _errno.errorcode[e.errno]
    (True, 16, 'EBUSY')
    """

    def __init__(self, err, message):
        super().__init__(err, f"{_errno.errorcode.get(err, err)}: {message}")
        self.rule = message

    def __str__(self):
        # Any errno prints: one the C library has no text for (0, negative, huge) says so.
        known = isinstance(self.errno, int) and self.errno in _errno.errorcode
        text = os.strerror(self.errno) if known else "unknown error"
        return f"[Errno {self.errno}] {text} ({self.strerror})"


class LoaderError(ValueError):
    """An image kexec-tools (and so kjcore) refuses to load.

    ``field`` is the name of the header field or parameter that decided the rejection
    (``"e_machine"``, ``"p_paddr"``, ``"mem_max"``...); the message starts with it.

    >>> e = LoaderError("p_paddr", "0x100800 is not page aligned")
    >>> e.field, str(e)
    ('p_paddr', 'p_paddr: 0x100800 is not page aligned')
    >>> isinstance(e, ValueError)
    True
    """

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field


class MachineFileError(ValueError):
    """``PATH`` cannot be opened (or saved over) as a kjcore machine; ``.path`` says which."""

    def __init__(self, path, message):
        super().__init__(f"{path}: {message}")
        self.path = path


class ForeignMachineFile(MachineFileError):
    """``PATH`` is not a kjcore machine (another file or directory)."""


class DamagedMachineFile(MachineFileError):
    """``PATH`` is a kjcore machine whose files are missing, truncated, corrupted or edited."""


class MachineFileVersionError(MachineFileError):
    """``PATH`` was written in a format version this kjcore does not read."""


class MachineBusyError(MachineFileError):
    """Another process holds ``PATH``'s lock (a ``kjexec`` run, or a save)."""


class UsageError(ValueError):
    """A command-line value that cannot be used; printed as ``kjcore: error: ...``."""


class SwapBusError(BusError):
    """A swap pass (:mod:`kjcore.swap`) reached physical memory past the end of RAM on a
    strict bus; ``address`` is the first such address."""

    def __init__(self, address):
        super().__init__(f"physical access at {address:#010x} is past the end of RAM "
                         "(strict bus)")
        self.address = address
