"""The open-act-save shape of the subcommands that change a persistent machine (``kjcore
panic``, ``kjcore machine attach``): the machine directory's lock is held from opening to
saving, so no other command reads or writes it half way."""
from contextlib import contextmanager

from ..errors import UsageError


@contextmanager
def locked_machine(path, verify=False):
    """Open machine directory ``path`` under its exclusive lock and yield the machine; the
    caller saves it with ``save_machine(m, path, locked=True)`` inside the block when its act
    succeeded.  A lock another process holds is a one-line :class:`UsageError`."""
    from ..store import machine_lock, open_machine
    with machine_lock(path) as free:
        if not free:
            raise UsageError(f"{path}: another process is using this machine")
        yield open_machine(path, verify=verify, locked=True)
