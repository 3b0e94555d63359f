"""Exceptions raised at the boundary between the simulation and the user."""
import errno as _errno
import os


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
