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
        return f"[Errno {self.errno}] {os.strerror(self.errno)} ({self.strerror})"
