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

from .constants import KEXEC_SEGMENT_MAX, PAGE_SIZE
from .cpu import CPU
from .cpu.state import A20_BIT, NSTATE, STATE_DTYPE, SYSENTER_EIP
from .kimage import KImage, list_limit, walk_list
from .pm import PM_LOG_LIMIT
from .segment import Segment

__all__ = ["SAVED_ATTRIBUTES", "UNSAVED_ATTRIBUTES", "machine_config", "config_arguments",
           "machine_state", "set_machine_state", "check_config", "Snapshot", "snapshot",
           "restore"]

#: Machine attributes captured by :func:`machine_state` (directly or as derived values)
SAVED_ATTRIBUTES = frozenset({
    "ram_size", "pae", "nx", "profile", "crashkernel", "kexec_jump", "cap_sys_boot",
    "kernel_reserved", "engine", "strict_bus", "fix_pae_return",     # section "config"
    "fix_peer_df",                                                     # section "config"
    "_crash_region", "_profile_id",            # derived from "config" by the constructor
    "allocator",                               # section "allocator" (+ seed in "config")
    "kexec_image", "kexec_crash_image",        # sections of the same names
    "pm_log", "pm_log_dropped",                # section "pm" (optional: default empty)
    "ram",                                     # saved beside the state (ram-N.bin)
    "cpu", "state",                            # section "cpu" (optional: the boot state)
    "debugcon", "debugcon_dropped",            # section "console" (optional: empty)
    "first_kernel",                            # derived from "config"; its pages are in RAM
    "disks",                                   # by reference: kjcore.store's "disks" entry
    "bios",                 # "bios" in "config" (absent: False); IVT, BDA, EBDA, ROM are in RAM
})
#: Machine attributes deliberately not saved, with the reason
UNSAVED_ATTRIBUTES = {
    "kexec_lock": "a saved machine never holds the kexec lock; save refuses while it is held",
    "devices": "Python objects with callbacks (SPEC section 8): scripts re-attach them",
    "ata": "the controller's registers are not saved; it is rebuilt for the disks",
    "freeze_processes": "a research hook (a Python callable): scripts set it again",
    "last_result": "the result of the last jump made by this process",
    "keyboard": "keys a script queues for INT 16h: scripts queue them again",
    "store_origin": "where this process opened or saved the machine (kjcore.store's check "
                    "that a save does not overwrite another process's newer save)",
}


def machine_config(machine):
    """The constructor arguments that rebuild ``machine`` (without ``ram``), ``bios`` included
    (a state saved before the BIOS existed has no ``bios``: see :func:`config_arguments`)."""
    config = {
        "ram_size": machine.ram_size, "pae": machine.pae, "nx": machine.nx,
        "profile": machine.profile,
        "crashkernel": None if machine.crashkernel is None else list(machine.crashkernel),
        "kexec_jump": machine.kexec_jump, "cap_sys_boot": machine.cap_sys_boot,
        "kernel_reserved": machine.kernel_reserved, "engine": machine.engine,
        "strict_bus": machine.strict_bus, "fix_pae_return": machine.fix_pae_return,
        "fix_peer_df": machine.fix_peer_df,
        "alloc_seed": machine.allocator.seed,
    }
    config["bios"] = machine.bios is not None
    return config


def config_arguments(config):
    """The ``Machine`` keyword arguments of a saved ``config``: one without ``bios`` was saved
    before machines had a BIOS (or when only ``bios=True`` was recorded) and had none, so it
    gets ``bios=False``.  ``ValueError`` for a ``bios`` that is not a bool."""
    if not isinstance(config, dict):
        raise ValueError("the machine config is not a dict")
    args = dict(config)
    args["bios"] = _bool(args.get("bios", False), "config bios")
    return args


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


def _int(value, what, lo, hi):
    """``value`` as an int in ``[lo, hi)``; ``ValueError`` for anything else (bools too)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} is {type(value).__name__}, not an integer")
    if not lo <= value < hi:
        raise ValueError(f"{what}={int(value):#x} is out of range")
    return int(value)


def _bool(value, what):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} is {type(value).__name__}, not a bool")
    return bool(value)


def _array(value, what, kind, max_len):
    """``value`` as a 1-D numpy array of integer ``kind`` (``"i"`` or ``"u"``), at most
    ``max_len`` long."""
    if not isinstance(value, np.ndarray) or value.ndim != 1 or (
            value.size and value.dtype.kind != kind):
        raise ValueError(f"{what} is not a 1-D integer array")
    if len(value) > max_len:
        raise ValueError(f"{what} holds {len(value)} values, more than {max_len}")
    return value


def _section(state, key, optional=False):
    value = state.get(key) if optional else state[key]
    if not (value is None and optional) and not isinstance(value, dict):
        raise ValueError(f"section {key!r} is not a dict")
    return value


def _segment_from_state(s, i, ram_size):
    if not isinstance(s, dict):
        raise ValueError(f"segment {i} is not a dict")
    mem = _int(s["mem"], f"segment {i} mem", 0, ram_size)
    memsz = _int(s["memsz"], f"segment {i} memsz", 0, ram_size - mem + 1)
    bufsz = _int(s["bufsz"], f"segment {i} bufsz", 0, memsz + 1)
    if s["buf"] is None:
        return Segment.zero(bufsz, mem, memsz)
    seg = Segment(s["buf"], mem, memsz)
    if seg.bufsz != bufsz:
        raise ValueError(f"segment {i} buffer holds {seg.bufsz} bytes, bufsz says {bufsz}")
    return seg


def _check_list(ram, image):
    """``ValueError`` unless ``image``'s list in ``ram`` ends within the words a list built
    by ``kexec_load`` for its segments reads (:func:`~kjcore.kimage.list_limit`).

    A self-linked or cyclic list, or a head or link pointing past RAM (read as all ones:
    DESTINATION words forever), fails. Words the guest overwrote but that still end the list
    pass: every walker bounds its reads, and the unload frees the recorded frames.
    """
    limit = list_limit(image.segments)
    if walk_list(ram, image.head, limit, np.empty(limit, dtype=np.int64),
                 np.empty(limit, dtype=np.int64)) < 0:
        raise ValueError(f"the {image.type} image's indirection list in RAM does not end "
                         f"within {limit} words (cyclic or corrupted)")


def kimage_from_state(machine, ram, state):
    """Inverse of :func:`kimage_state`: a :class:`KImage` reading ``machine.ram``, or ``None``.

    Every value is checked first (``ValueError``): types, addresses inside RAM, frame numbers
    the allocator manages (the caller checks they are distinct across the machine), and the
    indirection list as it is in ``ram`` (the RAM about to become the machine's).
    """
    if state is None:
        return None
    if not isinstance(state, dict):
        raise ValueError("a kexec slot is not a dict")
    ram_size = machine.ram_size
    kind = state["type"]
    if kind not in ("default", "crash"):
        raise ValueError(f"image type {kind!r} is neither 'default' nor 'crash'")
    segs = state["segments"]
    if not isinstance(segs, list) or not 1 <= len(segs) <= KEXEC_SEGMENT_MAX:
        raise ValueError(f"an image has 1 to {KEXEC_SEGMENT_MAX} segments")
    segments = [_segment_from_state(s, i, ram_size) for i, s in enumerate(segs)]
    nr_frames = machine.allocator.nr_frames
    frames = {k: _array(state[k], k, "i", nr_frames)
              for k in ("ind_frames", "parked_frames", "free_order")}
    control = _int(state["control_page"], "control_page", 0, ram_size)
    swap = state["swap_page"]
    if kind == "crash":
        base, size = machine.crashkernel or (0, 0)
        if not base <= control < base + size or swap is not None or len(frames["free_order"]):
            raise ValueError("a crash image lives in the crashkernel region and owns no frames")
    else:
        swap = _int(swap, "swap_page", 0, ram_size)
        if swap % PAGE_SIZE:
            raise ValueError("swap_page is not page-aligned")
    if control % PAGE_SIZE:
        raise ValueError("control_page is not page-aligned")
    owned = frames["free_order"]
    for k in ("ind_frames", "parked_frames"):
        if not np.isin(frames[k], owned).all():
            raise ValueError(f"{k} names a frame the image does not own")
    if kind == "default" and not np.isin([control // PAGE_SIZE, swap // PAGE_SIZE], owned).all():
        raise ValueError("the control or swap page is not a frame the image owns")
    image = KImage(machine.ram, type=kind, start=_int(state["start"], "start", 0, 1 << 32),
                   head=_int(state["head"], "head", 0, 1 << 32), segments=segments,
                   preserve_context=_bool(state["preserve_context"], "preserve_context"),
                   control_page=control, swap_page=swap, **frames)
    _check_list(ram, image)
    return image


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
        "pm": {"log": [str(step) for step in machine.pm_log], "dropped": machine.pm_log_dropped},
        "cpu": {"registers": _cpu_registers(machine.cpu), "state": machine.state},
        "console": {"debugcon": np.frombuffer(machine.debugcon, dtype=np.uint8).copy(),
                    "dropped": machine.debugcon_dropped},
    }


def _cpu_registers(cpu):
    """The CPU's architectural state record as a plain int64 array."""
    return np.array(cpu.get_state()).reshape(1).view(np.int64).copy()


def _cpu_record(cpu, section):
    """The machine's CPU record with the saved architectural registers put in.

    Only the architectural slots (general, segment, control, debug and descriptor-table
    registers, each checked against its width) come from the state: the others steer the
    compiled run loop (breakpoint count, trace position, ...) and are the CPU's own.
    """
    regs = _array(section["registers"], "cpu registers", "i", NSTATE)
    if len(regs) != NSTATE:
        raise ValueError(f"cpu registers hold {len(regs)} slots, not {NSTATE}")
    saved = regs.view(STATE_DTYPE)[0]
    record = cpu.get_state()
    for name in _ARCH_REGISTERS:
        top = 4 if name == "cpl" else 1 << 16 if name.endswith("_sel") else \
            1 << 63 if name == "tsc" else 1 << 32
        record[name] = _int(saved[name], f"register {name}", 0, top)
    for name, allowed in _GATE_SLOTS.items():
        value = _int(saved[name], f"register {name}", 0, 1 << 32)
        if value not in allowed:
            raise ValueError(f"register {name}={value:#x} is not one of {allowed}")
        record[name] = value
    return record


#: the saved CPU slots that are architectural state (the rest is run-loop bookkeeping)
_ARCH_REGISTERS = STATE_DTYPE.names[:SYSENTER_EIP + 1]
#: machine-level gates kept in CPU slots: the A20 mask (0 when the gate is open) and the
#: keyboard controller's "output port write comes next" latch, with their only legal values
_GATE_SLOTS = {"a20_clear": (0, A20_BIT), "kbc_d1": (0, 1)}
#: values of ``Machine.state``
_RUN_STATES = ("kernel", "image", "lost", "crash-kernel", "panicked")


def _normalized(value):
    return json.loads(json.dumps(value))


def check_config(machine, state):
    """``ValueError`` unless ``machine`` was built with the state's constructor arguments."""
    config = _normalized(machine_config(machine))
    saved = _normalized(config_arguments(state["config"]))
    if config != saved:
        diff = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
        raise ValueError(f"the state belongs to a machine built with other arguments "
                         f"({', '.join(diff)} differ)")


def set_machine_state(machine, state):
    """Put a :func:`machine_state` back into ``machine`` (built with the same ``config``).

    RAM is not touched, and must be restored *first*: the kimages read their lists in RAM.
    Raises ``ValueError`` when ``machine`` was built with other constructor arguments than
    the state's, or the state is not one a machine could be in (nothing is changed then).
    """
    _apply(machine, _checked(machine, state, machine.ram))


def _checked(machine, state, ram):
    """Everything :func:`set_machine_state` sets, each value checked; ``ram`` is the RAM
    the machine will have (its indirection lists are checked there)."""
    if not isinstance(state, dict):
        raise ValueError("the state is not a dict")
    check_config(machine, state)
    free = machine.allocator.check_state(_array(_section(state, "allocator")["free_stack"],
                                                "allocator free stack", "i",
                                                machine.allocator.nr_frames))
    images = (kimage_from_state(machine, ram, state["kexec_image"]),
              kimage_from_state(machine, ram, state["kexec_crash_image"]))
    # every frame is either free or owned by one image, once
    machine.allocator.check_state(np.concatenate([free] + [
        image.frames_to_free() for image in images if image is not None]))
    pm = _section(state, "pm", optional=True) or {"log": []}
    if not isinstance(pm["log"], list) or not all(isinstance(x, str) for x in pm["log"]):
        raise ValueError("the power-management log is not a list of strings")
    if len(pm["log"]) > PM_LOG_LIMIT:
        raise ValueError(f"the power-management log holds more than {PM_LOG_LIMIT} steps")
    pm_dropped = _int(pm.get("dropped", 0), "pm.dropped", 0, 1 << 63)
    cpu = _section(state, "cpu", optional=True)
    record, run_state = machine.cpu.get_state(), machine.state
    if cpu is not None:
        record = _cpu_record(machine.cpu, cpu)
        run_state = cpu["state"]
        if run_state not in _RUN_STATES:
            raise ValueError(f"machine state {run_state!r} is not one of {_RUN_STATES}")
    console = _section(state, "console", optional=True) or {"debugcon": np.zeros(0, np.uint8)}
    debugcon = _array(console["debugcon"], "debugcon", "u", CPU.DEBUGCON_LIMIT).tobytes()
    con_dropped = _int(console.get("dropped", 0), "console.dropped", 0, 1 << 63)
    return (free, images, list(pm["log"]), pm_dropped, record, run_state, debugcon,
            con_dropped)


def _apply(machine, checked):
    free, images, log, pm_dropped, record, run_state, debugcon, con_dropped = checked
    machine.allocator.set_state(free)
    machine.kexec_image, machine.kexec_crash_image = images
    machine.pm_log, machine.pm_log_dropped = log, pm_dropped
    machine.cpu.set_state(record)
    machine.state = run_state
    machine.debugcon, machine.debugcon_dropped = debugcon, con_dropped


class Snapshot(NamedTuple):
    """An in-memory copy of a machine: its RAM and its :func:`machine_state`."""
    ram: np.ndarray
    state: dict


def snapshot(machine):
    """A :class:`Snapshot` of ``machine`` (copies RAM once)."""
    return Snapshot(np.array(machine.ram, copy=True), machine_state(machine))


def restore(machine, snap):
    """Put ``machine`` back into the state of ``snap`` (RAM written in place, not replaced).

    ``snap`` is checked whole before anything changes (``ValueError``).
    """
    ram = snap.ram
    if not isinstance(ram, np.ndarray) or ram.dtype != np.uint8 or ram.shape != machine.ram.shape:
        raise ValueError("the snapshot's RAM is not a uint8 array of this machine's RAM size")
    checked = _checked(machine, snap.state, ram)
    machine.ram[:] = ram
    _apply(machine, checked)
