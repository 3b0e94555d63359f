"""kjcore's i386 CPU (SPEC section 9): a Numba-compiled interpreter over numpy state.

See docs/cpu.rst for the design and the fidelity rules.
"""
from .cpu import CPU
from .status import (
    STATUS_EXCEPTION,
    BusError,
    CPUFault,
    GuestHalted,
    GuestIdle,
    GuestTimeout,
    Status,
    StepLimit,
    Stopped,
    TripleFault,
    UnsupportedOperation,
)

__all__ = ["CPU", "Status", "STATUS_EXCEPTION", "CPUFault", "TripleFault", "StepLimit",
           "GuestTimeout", "BusError", "UnsupportedOperation", "GuestHalted", "GuestIdle",
           "Stopped"]
