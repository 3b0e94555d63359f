"""kjcore: Linux kexec jump (2.6.27, i386) simulated fast enough to run thousands of times.

The public API (SPEC §1): the ABI constants, :class:`Machine` with ``kexec_load`` and
``reboot``, :class:`Segment`, :class:`KImage`, :class:`KexecError`, and the results of a jump.
"""
from . import constants
from .constants import *  # noqa: F401,F403  (the ABI constants are public API)
from .errors import KexecError
from .kimage import KImage
from .machine import Machine
from .machine_kexec import ExecResult, JumpResult
from .segment import Segment

__version__ = "0.1.0"
__all__ = ["ExecResult", "JumpResult", "KImage", "KexecError", "Machine", "Segment",
           *(name for name in dir(constants) if name.isupper())]
