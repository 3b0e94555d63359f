"""The state of a :class:`~kjcore.Machine` as data: what is saved, and putting it back.

:func:`machine_state` is everything about a machine except its RAM: one dict of sections of
plain values and numpy arrays. :func:`set_machine_state` puts one back into a machine built
with the same constructor arguments (:func:`machine_config`). :func:`snapshot` and
:func:`restore` (``Machine.snapshot()`` / ``Machine.restore()``) pair it with a copy of RAM;
:mod:`kjcore.store` writes it to a machine directory.

This module sits below ``Machine`` (it never builds one); the directory format, checksums
and locks are :mod:`kjcore.store`'s.

>>> import kjcore
>>> m = kjcore.Machine(ram_size=16 << 20)
>>> snap = m.snapshot()
>>> m.kexec_load(0x100000, [kjcore.Segment(b"\\xf4", 0x100000, 0x1000)])
>>> m.restore(snap)
>>> m.kexec_image is None, m.free_frames
(True, 3072)
"""
import json
from typing import NamedTuple

import numpy as np

from .cpu.state import STATE_DTYPE
from .kimage import KImage
from .segment import Segment

__all__ = ["SAVED_ATTRIBUTES", "UNSAVED_ATTRIBUTES", "machine_config", "machine_state",
           "set_machine_state", "check_config", "Snapshot", "snapshot", "restore"]

#: Machine attributes captured by :func:`machine_state` (directly or as derived values)
SAVED_ATTRIBUTES = frozenset({
    "ram_size", "pae", "nx", "profile", "crashkernel", "kexec_jump", "cap_sys_boot",
    "kernel_reserved", "engine", "strict_bus", "fix_pae_return",     # section "config"
    "_crash_region", "_profile_id",            # derived from "config" by the constructor
    "allocator",                               # section "allocator" (+ seed in "config")
    "kexec_image", "kexec_crash_image",        # sections of the same names
    "pm_log",                                  # section "pm" (optional: default empty)
    "ram",                                     # saved beside the state (ram-N.bin)
    "cpu", "state",                            # section "cpu" (optional: the boot state)
    "debugcon",                                # section "console" (optional: empty)
    "first_kernel",                            # derived from "config"; its pages are in RAM
})
#: Machine attributes deliberately not saved, with the reason
UNSAVED_ATTRIBUTES = {
    "kexec_lock": "a saved machine never holds the kexec lock; save refuses while it is held",
    "devices": "Python objects with callbacks (SPEC section 8): scripts re-attach them",
    "freeze_processes": "a research hook (a Python callable): scripts set it again",
    "last_result": "the result of the last jump made by this process",
}


def machine_config(machine):
    """The constructor arguments that rebuild ``machine`` (without ``ram``)."""
    return {
        "ram_size": machine.ram_size, "pae": machine.pae, "nx": machine.nx,
        "profile": machine.profile,
        "crashkernel": None if machine.crashkernel is None else list(machine.crashkernel),
        "kexec_jump": machine.kexec_jump, "cap_sys_boot": machine.cap_sys_boot,
        "kernel_reserved": machine.kernel_reserved, "engine": machine.engine,
        "strict_bus": machine.strict_bus, "fix_pae_return": machine.fix_pae_return,
        "alloc_seed": machine.allocator.seed,
    }


def kimage_state(image):
    """One kexec slot as plain values (``None`` for an empty slot).

    Segment buffers are kept by reference (``memoryview``; ``None`` for ``Segment.zero``):
    they are never written after the load.
    """
    if image is None:
        return None
    return {
        "type": image.type, "start": int(image.start), "head": int(image.head),
        "preserve_context": bool(image.preserve_context),
        "control_page": int(image.control_page),
        "swap_page": None if image.swap_page is None else int(image.swap_page),
        "ind_frames": np.array(image.ind_frames, dtype=np.int64),
        "parked_frames": np.array(image.parked_frames, dtype=np.int64),
        # recorded at load time from the list in RAM; saved so a payload that scribbled
        # over the list cannot change what the unload frees
        "free_order": np.array(image.frames_to_free(), dtype=np.int64),
        "segments": [{"mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz, "buf": s.buf}
                     for s in image.segments],
    }


def kimage_from_state(ram, state):
    """Inverse of :func:`kimage_state`: a :class:`KImage` reading ``ram`` (or ``None``)."""
    if state is None:
        return None
    segments = []
    for s in state["segments"]:
        if s["buf"] is None:
            segments.append(Segment.zero(int(s["bufsz"]), int(s["mem"]), int(s["memsz"])))
        else:
            seg = Segment(s["buf"], int(s["mem"]), int(s["memsz"]))
            if seg.bufsz != int(s["bufsz"]):
                raise ValueError(f"segment buffer holds {seg.bufsz} bytes, bufsz says "
                                 f"{s['bufsz']}")
            segments.append(seg)
    swap = state["swap_page"]
    return KImage(ram, type=state["type"], start=int(state["start"]),
                  head=int(state["head"]), segments=segments,
                  preserve_context=bool(state["preserve_context"]),
                  control_page=int(state["control_page"]),
                  swap_page=None if swap is None else int(swap),
                  ind_frames=np.asarray(state["ind_frames"], dtype=np.int64),
                  parked_frames=np.asarray(state["parked_frames"], dtype=np.int64),
                  free_order=np.asarray(state["free_order"], dtype=np.int64))


def machine_state(machine):
    """Everything about ``machine`` except its RAM, as a dict of sections.

    Values are JSON types, numpy arrays or bytes-like buffers. Arrays are copies (mutating
    the machine afterwards does not change the state); segment buffers are shared.

    Sections: ``config`` (constructor arguments), ``allocator`` (the free-frame stack),
    ``kexec_image`` and ``kexec_crash_image`` (:func:`kimage_state`), ``pm`` (the log of
    power-management steps, ``Machine.pm_log``), ``cpu`` (registers and the machine's run
    state), ``console`` (``Machine.debugcon``).

    To save new machine state: add a section here, put it back in :func:`set_machine_state`,
    and list the attribute in :data:`SAVED_ATTRIBUTES` (a test fails for any ``Machine``
    attribute listed nowhere). If older files lack the section, give it a default in
    :func:`set_machine_state`; bump ``kjcore.store.FORMAT_VERSION`` only when an existing
    section changes meaning.
    """
    return {
        "config": machine_config(machine),
        "allocator": {"free_stack": machine.allocator.state()},
        "kexec_image": kimage_state(machine.kexec_image),
        "kexec_crash_image": kimage_state(machine.kexec_crash_image),
        "pm": {"log": [str(step) for step in machine.pm_log]},
        "cpu": {"registers": _cpu_registers(machine.cpu), "state": machine.state},
        "console": {"debugcon": np.frombuffer(machine.debugcon, dtype=np.uint8).copy()},
    }


def _cpu_registers(cpu):
    """The CPU's architectural state record as a plain int64 array."""
    return np.array(cpu.get_state()).reshape(1).view(np.int64).copy()


def _normalized(value):
    return json.loads(json.dumps(value))


def check_config(machine, state):
    """``ValueError`` unless ``machine`` was built with the state's constructor arguments."""
    config = _normalized(machine_config(machine))
    saved = _normalized(state["config"])
    if config != saved:
        diff = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
        raise ValueError(f"the state belongs to a machine built with other arguments "
                         f"({', '.join(diff)} differ)")


def set_machine_state(machine, state):
    """Put a :func:`machine_state` back into ``machine`` (built with the same ``config``).

    RAM is not touched, and must be restored *first*: the kimages read their lists in RAM.
    Raises ``ValueError`` when ``machine`` was built with other constructor arguments than
    the state's (nothing is changed then).
    """
    check_config(machine, state)
    free = np.asarray(state["allocator"]["free_stack"], dtype=np.int64)
    if len(free) > machine.allocator.nr_frames:
        raise ValueError("allocator state holds more frames than the machine has")
    images = (kimage_from_state(machine.ram, state["kexec_image"]),
              kimage_from_state(machine.ram, state["kexec_crash_image"]))
    machine.allocator.set_state(free)
    machine.kexec_image, machine.kexec_crash_image = images
    machine.pm_log = list(state.get("pm", {}).get("log", []))
    cpu = state.get("cpu")
    if cpu is not None:
        regs = np.asarray(cpu["registers"], dtype=np.int64)
        machine.cpu.set_state(regs.view(STATE_DTYPE)[0])
        machine.state = str(cpu["state"])
    console = state.get("console")
    machine.debugcon = b"" if console is None else bytes(np.asarray(console["debugcon"],
                                                                    dtype=np.uint8))


class Snapshot(NamedTuple):
    """An in-memory copy of a machine: its RAM and its :func:`machine_state`."""
    ram: np.ndarray
    state: dict


def snapshot(machine):
    """A :class:`Snapshot` of ``machine`` (copies RAM once)."""
    return Snapshot(np.array(machine.ram, copy=True), machine_state(machine))


def restore(machine, snap):
    """Put ``machine`` back into the state of ``snap`` (RAM written in place, not replaced)."""
    if len(snap.ram) != len(machine.ram):
        raise ValueError("the snapshot belongs to a machine of another RAM size")
    check_config(machine, snap.state)
    machine.ram[:] = snap.ram
    set_machine_state(machine, snap.state)
