"""kjcore's i386 CPU (SPEC section 9): a Numba-compiled interpreter over numpy state.

See docs/cpu.rst for the design and the fidelity rules.
"""
from .cpu import CPU, CPUFault, Status, StepLimit, TripleFault

__all__ = ["CPU", "Status", "CPUFault", "TripleFault", "StepLimit"]
