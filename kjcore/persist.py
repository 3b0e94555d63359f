"""Persistent machines: save a :class:`~kjcore.Machine` to a directory and open it again.

A saved machine is a directory (the ``PATH`` of ``kjcore machine new PATH`` and ``kjexec
--machine PATH``) holding one *generation* of three files::

    PATH/machine.json     metadata: format, version, constructor arguments, kexec slots, ...
    PATH/ram-7.bin        physical memory, ram_size raw bytes (sparse: zero chunks are holes)
    PATH/state-7.npz      the numpy arrays of the state (allocator free list, segment buffers)

``machine.json`` is the commit point. A save writes the next generation's RAM and array files
under new names, fsyncs them, writes ``machine.json.tmp``, fsyncs it, renames it over
``machine.json`` and fsyncs the directory; only then are the previous generation's files
removed. A save interrupted at any point (crash, full disk, exception) leaves the previous
``machine.json`` naming the previous, untouched files, so the machine opens as it was; the
next successful save removes the debris. Committed files are never written again.

:func:`open_machine` maps the RAM file copy-on-write (``numpy.memmap`` mode ``"c"``): the
machine starts without reading RAM, the pages it touches become private, and nothing reaches
the file until the next :func:`save_machine`. So a process that dies between a load and its
save leaves the file exactly as last saved.

What is saved is :func:`machine_state` (plus the RAM): one dict of plain values and numpy
arrays, built section by section, and put back by :func:`set_machine_state`. The same pair
serves in-memory snapshots (:func:`snapshot_machine` / :func:`restore_machine`).

>>> import os, tempfile, kjcore
>>> from kjcore.persist import save_machine, open_machine
>>> m = kjcore.Machine(ram_size=16 << 20)
>>> m.kexec_load(0x100000, [kjcore.Segment(b"\\xf4", 0x100000, 0x1000)],
...              kjcore.KEXEC_PRESERVE_CONTEXT)
>>> path = os.path.join(tempfile.mkdtemp(), "m")
>>> save_machine(m, path)
>>> m2 = open_machine(path)
>>> m2.kexec_image.preserve_context, hex(m2.kexec_image.start), m2.free_frames == m.free_frames
(True, '0x100000', True)
>>> bytes(m2.ram[m2.kexec_image.source_pages()[0]:][:1])
b'\\xf4'
"""
import contextlib
import errno
import hashlib
import json
import os
import re
import zlib
from .cpu.state import STATE_DTYPE
from typing import NamedTuple

import numpy as np

from .constants import PAGE_SIZE
from .kimage import KImage
from .pm import bound_log
from .segment import Segment

__all__ = ["FORMAT", "FORMAT_VERSION", "MachineFileError", "ForeignMachineFile",
           "DamagedMachineFile", "MachineFileVersionError", "machine_state",
           "set_machine_state", "check_config", "save_machine", "open_machine", "is_machine_dir",
           "Snapshot", "snapshot_machine", "restore_machine"]

#: value of the ``format`` field of ``machine.json``
FORMAT = "kjcore-machine"
#: bumped when an existing field changes meaning; new optional sections do not bump it
FORMAT_VERSION = 1
META_NAME = "machine.json"
_LOCK_NAME = ".lock"
_GEN_FILE = re.compile(r"^(ram|state)-(\d+)\.(bin|npz)$")
#: bytes per RAM write / checksum step (zero chunks are skipped, leaving holes)
_CHUNK = 4 << 20


# ---------------------------------------------------------------------------------- errors
class MachineFileError(ValueError):
    """``PATH`` cannot be opened (or saved over) as a kjcore machine; ``.path`` says which."""

    def __init__(self, path, message):
        super().__init__(f"{path}: {message}")
        self.path = path


class ForeignMachineFile(MachineFileError):
    """``PATH`` is not a kjcore machine (another file or directory)."""


class DamagedMachineFile(MachineFileError):
    """``PATH`` is a kjcore machine whose files are missing, truncated or corrupted."""


class MachineFileVersionError(MachineFileError):
    """``PATH`` was written in a format version this kjcore does not read."""


# ---------------------------------------------------------------------------------- state
#: Machine attributes captured by :func:`machine_state` (directly or as derived values)
SAVED_ATTRIBUTES = frozenset({
    "ram_size", "pae", "nx", "profile", "crashkernel", "kexec_jump", "cap_sys_boot",
    "kernel_reserved", "engine", "strict_bus", "fix_pae_return",     # section "config"
    "_crash_region", "_profile_id",            # derived from "config" by the constructor
    "allocator",                               # section "allocator" (+ seed in "config")
    "kexec_image", "kexec_crash_image",        # sections of the same names
    "pm_log", "pm_log_dropped",                # section "pm" (optional: default empty)
    "ram",                                     # saved beside the state (ram-N.bin)
    "cpu", "state",                            # section "cpu" (optional: the boot state)
    "debugcon", "debugcon_dropped",            # section "console" (optional: empty)
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
    """The constructor arguments that rebuild ``machine`` (without ``ram_file``)."""
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
        "ind_frames": np.array(image._ind_frames, dtype=np.int64),
        "parked_frames": np.array(image._parked_frames, dtype=np.int64),
        # recorded at load time from the list in RAM; saved so a payload that scribbled
        # over the list cannot change what the unload frees
        "free_order": np.array(image.frames_to_free(), dtype=np.int64),
        "segments": [{"mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz, "buf": s.buf}
                     for s in image.segments],
    }


def kimage_from_state(machine, state):
    """Inverse of :func:`kimage_state`: a :class:`KImage` of ``machine`` (or ``None``).

    ``machine.ram`` must already hold the saved RAM: the constructor reads the list.
    """
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
    image = KImage(machine, type=state["type"], start=int(state["start"]),
                  head=int(state["head"]), segments=segments,
                  preserve_context=bool(state["preserve_context"]),
                  control_page=int(state["control_page"]),
                  swap_page=None if swap is None else int(swap),
                  ind_frames=np.asarray(state["ind_frames"], dtype=np.int64),
                  parked_frames=np.asarray(state["parked_frames"], dtype=np.int64))
    if state.get("free_order") is not None and hasattr(image, "_free_order"):
        image._free_order = np.array(state["free_order"], dtype=np.int64)
    return image


def machine_state(machine):
    """Everything about ``machine`` except its RAM, as a dict of sections.

    Values are JSON types, numpy arrays or bytes-like buffers. Arrays are copies (mutating
    the machine afterwards does not change the state); segment buffers are shared.

    Sections: ``config`` (constructor arguments), ``allocator`` (the free-frame stack),
    ``kexec_image`` and ``kexec_crash_image`` (:func:`kimage_state`), ``pm`` (the log of
    power-management steps, ``Machine.pm_log``).

    To save new machine state (CPU registers, the first kernel's page tables, ...): add a
    section here, put it back in :func:`set_machine_state`, and list the attribute in
    :data:`SAVED_ATTRIBUTES` (a test fails for any ``Machine`` attribute listed nowhere).
    If older files lack the section, give it a default in :func:`set_machine_state`; bump
    :data:`FORMAT_VERSION` only when an existing section changes meaning.
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

    RAM is not touched, and must be restored *first*: the kimages are rebuilt from the
    indirection lists in RAM. Raises ``ValueError`` when ``machine`` was built with other
    constructor arguments than the state's (nothing is changed then).
    """
    check_config(machine, state)
    free = np.asarray(state["allocator"]["free_stack"], dtype=np.int64)
    if len(free) > machine.allocator.nr_frames:
        raise ValueError("allocator state holds more frames than the machine has")
    images = (kimage_from_state(machine, state["kexec_image"]),
              kimage_from_state(machine, state["kexec_crash_image"]))
    machine.allocator.set_state(free)
    machine.kexec_image, machine.kexec_crash_image = images
    pm = state.get("pm", {})
    machine.pm_log = list(pm.get("log", []))
    machine.pm_log_dropped = _count(pm.get("dropped", 0), "pm.dropped")
    bound_log(machine)
    cpu = state.get("cpu")
    if cpu is not None:
        regs = np.asarray(cpu["registers"], dtype=np.int64)
        machine.cpu.set_state(regs.view(STATE_DTYPE)[0])
        machine.state = str(cpu["state"])
    console = state.get("console") or {}
    machine.debugcon = bytes(np.asarray(console.get("debugcon", ()), dtype=np.uint8))
    machine.debugcon_dropped = _count(console.get("dropped", 0), "console.dropped")


def _count(value, name):
    """A non-negative integer from saved state, or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"saved state: {name} must be a non-negative integer, not {value!r}")
    return value


class Snapshot(NamedTuple):
    """An in-memory copy of a machine: its RAM and its :func:`machine_state`."""
    ram: np.ndarray
    state: dict


def snapshot_machine(machine):
    """A :class:`Snapshot` of ``machine`` (copies RAM once)."""
    return Snapshot(np.array(machine.ram, copy=True), machine_state(machine))


def restore_machine(machine, snap):
    """Put ``machine`` back into the state of ``snap`` (RAM written in place, not replaced)."""
    if len(snap.ram) != len(machine.ram):
        raise ValueError("the snapshot belongs to a machine of another RAM size")
    check_config(machine, snap.state)
    machine.ram[:] = snap.ram
    set_machine_state(machine, snap.state)


# ---------------------------------------------------------------------------------- encoding
def _encode(value, arrays, name):
    """JSON tree of ``value`` with every array or buffer moved into ``arrays[name]``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"state key {k!r} at {name or 'top'} is not a str")
            out[k] = _encode(v, arrays, f"{name}.{k}" if name else k)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays, f"{name}.{i}") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.frombuffer(memoryview(value).cast("B"), dtype=np.uint8)
        except TypeError:
            raise TypeError(f"state value at {name} has unsupported type "
                            f"{type(value).__name__}") from None
    if arr.dtype.hasobject:
        raise TypeError(f"state array at {name} holds Python objects")
    arrays[name] = arr
    return {"__array__": name}


def _decode(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _decode(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    return tree


def _body_digest(meta):
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------- files
def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _dir_lock(path, exclusive):
    """flock on PATH/.lock: saves are exclusive, opens shared (a save deletes old files)."""
    try:
        import fcntl
    except ImportError:           # not POSIX: no inter-process locking
        yield
        return
    try:
        fd = os.open(os.path.join(path, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if exclusive:
            raise
        yield                     # read-only directory: nobody can be saving into it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def is_machine_dir(path):
    """Whether ``path`` is a directory holding a ``machine.json`` (not checked further)."""
    return os.path.isfile(os.path.join(os.fspath(path), META_NAME))


def _prepare_dir(path):
    if os.path.isdir(path):
        if os.listdir(path) and not is_machine_dir(path):
            raise ForeignMachineFile(path, "is a non-empty directory that is not a kjcore "
                                           "machine; refusing to save into it")
        return
    if os.path.lexists(path):
        raise ForeignMachineFile(path, "exists and is not a directory; a kjcore machine is a "
                                       "directory")
    os.mkdir(path)


def _next_generation(path):
    gens = [int(m.group(2)) for m in map(_GEN_FILE.match, os.listdir(path)) if m]
    try:
        with open(os.path.join(path, META_NAME)) as f:
            gens.append(int(json.load(f)["generation"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return max(gens, default=0) + 1


def _write_ram(filename, ram):
    """Write ``ram`` to a new sparse file, fsync it; return its CRC-32."""
    crc = 0
    fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, len(ram))
        for off in range(0, len(ram), _CHUNK):
            chunk = ram[off:off + _CHUNK]
            crc = zlib.crc32(chunk, crc)
            if chunk.any():
                view = memoryview(chunk)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], off + done)
        os.fsync(fd)
    finally:
        os.close(fd)
    return crc


def _write_arrays(filename, arrays):
    """Write the state arrays as an ``.npz``, fsync it; return its SHA-256."""
    with open(filename, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    with open(filename, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_meta(path, meta):
    """Write ``machine.json.tmp``, fsync, rename it over ``machine.json``: the commit."""
    tmp = os.path.join(path, META_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(path, META_NAME))
    _fsync_dir(path)


def _remove_stale(path, keep):
    """Remove other generations' files and a leftover ``machine.json.tmp``."""
    for name in os.listdir(path):
        if (_GEN_FILE.match(name) and name not in keep) or name == META_NAME + ".tmp":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))


def save_machine(machine, path):
    """Save ``machine`` to the directory ``path`` atomically (see the module docstring).

    ``path`` is created if missing; an existing kjcore machine there is replaced. Refuses
    (:class:`ForeignMachineFile`) a path that is a file or a non-empty foreign directory, and
    (``RuntimeError``) a machine whose kexec lock is held (a load or exec in progress).
    """
    from . import __version__
    path = os.fspath(path)
    _prepare_dir(path)
    if not machine.kexec_lock.acquire(blocking=False):
        raise RuntimeError("the kexec lock is held (a load or exec is in progress): the "
                           "machine has no consistent state to save")
    try:
        with _dir_lock(path, exclusive=True):
            arrays = {}
            tree = _encode(machine_state(machine), arrays, "")
            gen = _next_generation(path)
            ram_name, state_name = f"ram-{gen}.bin", f"state-{gen}.npz"
            crc = _write_ram(os.path.join(path, ram_name), machine.ram)
            digest = _write_arrays(os.path.join(path, state_name), arrays)
            meta = {"format": FORMAT, "version": FORMAT_VERSION, "generation": gen,
                    "kjcore": __version__, "ram_file": ram_name, "ram_size": len(machine.ram),
                    "ram_crc32": crc, "state_file": state_name, "state_sha256": digest,
                    "state": tree}
            meta["meta_sha256"] = _body_digest(meta)
            _write_meta(path, meta)
            _remove_stale(path, keep={ram_name, state_name})
    finally:
        machine.kexec_lock.release()


def _read_meta(path):
    meta_path = os.path.join(path, META_NAME)
    try:
        with open(meta_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ForeignMachineFile(path, f"no {META_NAME}: not a kjcore machine") from None
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise DamagedMachineFile(path, f"{META_NAME} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ForeignMachineFile(path, f"{META_NAME} is not a {FORMAT} file")
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise MachineFileVersionError(path, f"format version {version!r}; this kjcore reads "
                                            f"version {FORMAT_VERSION}")
    if meta.get("meta_sha256") != _body_digest(meta):
        raise DamagedMachineFile(path, f"{META_NAME} checksum mismatch (damaged or edited)")
    return meta


def _meta_file(path, meta, key):
    name = meta.get(key)
    if not isinstance(name, str) or not _GEN_FILE.match(name):
        raise DamagedMachineFile(path, f"{META_NAME}: bad {key} {name!r}")
    return os.path.join(path, name)


def _ram_crc(ram):
    crc = 0
    for off in range(0, len(ram), _CHUNK):
        crc = zlib.crc32(ram[off:off + _CHUNK], crc)
    return crc


def open_machine(path, *, verify=False):
    """Open the machine saved in directory ``path``.

    RAM is mapped copy-on-write: changes stay in this process until :func:`save_machine`.
    ``verify=True`` also checks the RAM file's CRC-32 (reads all of it).

    Raises ``FileNotFoundError`` if ``path`` does not exist, :class:`ForeignMachineFile` if
    it is not a kjcore machine, :class:`MachineFileVersionError` for another format version
    and :class:`DamagedMachineFile` for missing, truncated or corrupted files.
    """
    from .machine import Machine
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such machine", path)
    if not os.path.isdir(path):
        raise ForeignMachineFile(path, "is not a directory; a kjcore machine is a directory "
                                       "(create one with 'kjcore machine new PATH')")
    with _dir_lock(path, exclusive=False):
        meta = _read_meta(path)
        ram_path = _meta_file(path, meta, "ram_file")
        state_path = _meta_file(path, meta, "state_file")
        ram_size = meta.get("ram_size")
        if not isinstance(ram_size, int) or ram_size <= 0 or ram_size % PAGE_SIZE:
            raise DamagedMachineFile(path, f"{META_NAME}: bad ram_size {ram_size!r}")
        try:
            size = os.path.getsize(ram_path)
            with open(state_path, "rb") as f:
                blob = f.read()
        except FileNotFoundError as e:
            raise DamagedMachineFile(path, f"missing {os.path.basename(e.filename)}") from None
        if size != ram_size:
            raise DamagedMachineFile(path, f"{os.path.basename(ram_path)} holds {size} bytes, "
                                           f"ram_size is {ram_size}")
        if hashlib.sha256(blob).hexdigest() != meta.get("state_sha256"):
            raise DamagedMachineFile(path, f"{os.path.basename(state_path)} checksum mismatch")
        try:
            import io
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            state = _decode(meta["state"], arrays)
            machine = Machine(**state["config"])
            if machine.ram_size != ram_size:
                raise ValueError("config ram_size differs from the RAM file's")
            ram = np.memmap(ram_path, dtype=np.uint8, mode="c", shape=(ram_size,))
            machine._adopt_ram(ram)
            set_machine_state(machine, state)
        except (ValueError, KeyError, TypeError, OSError) as e:
            if isinstance(e, MachineFileError):
                raise
            raise DamagedMachineFile(path, f"inconsistent state ({type(e).__name__}: {e})") \
                from None
        if verify and _ram_crc(ram) != meta.get("ram_crc32"):
            raise DamagedMachineFile(path, f"{os.path.basename(ram_path)} CRC-32 mismatch")
    return machine
