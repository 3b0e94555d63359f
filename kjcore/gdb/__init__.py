"""A gdb remote stub for kjcore's CPU (SPEC §16): attach ``gdb`` to a kexec jump.

``Machine.gdbserver(port)`` / ``kjcore gdbserver MACHINE --port N`` / ``kjexec -e --gdb N``
wait for ``gdb -ex 'target remote :N'`` and stop before the relocation routine's first
instruction.  :mod:`.packets` is the wire format, :mod:`.target` the i386 registers and target
description, :mod:`.commands` the packets, :mod:`.stub` the session run from CPU hooks.
"""
from .stub import GdbSession, gdbserver, listen

__all__ = ["GdbSession", "gdbserver", "listen"]
