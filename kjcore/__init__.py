"""kjcore: Linux kexec jump (2.6.27, i386) simulated fast enough to run thousands of times."""
from .constants import *  # noqa: F401,F403  (the ABI constants are public API)
from .errors import KexecError
from .segment import Segment

__version__ = "0.1.0"
from .kimage import KImage
from .machine import Machine
from .machine_kexec import ExecResult, JumpResult
