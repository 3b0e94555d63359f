"""Persistent machines: save a :class:`~kjcore.Machine` to a directory and open it again.

This module is the directory format: files, checksums, locks, atomic save and open. What a
machine's state is (and how it is put back) is :mod:`kjcore.machine_state`'s.

A saved machine is a directory (the ``PATH`` of ``kjcore machine new PATH`` and ``kjexec
--machine PATH``) holding one *generation* of three files::

    PATH/machine.json     metadata: format, version, constructor arguments, kexec slots, ...
    PATH/ram-7.bin        physical memory, ram_size raw bytes (allocated in full)
    PATH/state-7.npz      the numpy arrays of the state (allocator free list, segment buffers)
    PATH/.lock            the machine's lock (flock(2)), see :func:`machine_lock`

``machine.json`` is the commit point. A save writes the next generation's RAM and array files
under new names (created exclusively, never through a symbolic link), fsyncs them, writes
``machine.json.N.tmp``, fsyncs it, renames it over ``machine.json`` and fsyncs the directory;
only then are the previous generation's files removed. A save that fails (full disk,
read-only file system, I/O error, exception) removes the files it created and leaves the
previous ``machine.json`` naming the previous, untouched files; a save killed outright leaves
debris that the next successful save removes. Committed files are never written again.

:func:`open_machine` maps the RAM file copy-on-write (``numpy.memmap`` mode ``"c"``): the
machine starts without reading RAM, the pages it touches become private, and nothing reaches
the file until the next :func:`save_machine`. So a process that dies between a load and its
save leaves the file exactly as last saved. Everything read is checked before it is used:
a damaged or edited directory is one :class:`DamagedMachineFile`.

The machine's disks are kept by reference: ``machine.json`` names their files (a save never
copies one); a missing or changed disk file makes the machine a :class:`DamagedMachineFile`.

What is saved is :func:`kjcore.machine_state.machine_state` (plus the RAM): one dict of
plain values and numpy arrays, put back by :func:`kjcore.machine_state.set_machine_state`.

>>> import os, tempfile, kjcore
>>> from kjcore.store import save_machine, open_machine
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
import stat
import zipfile
import zlib

import numpy as np

from . import progress
from .constants import MAX_RAM_SIZE, PAGE_SIZE
from .devices.disk import disk_from_reference, disk_reference
from .errors import (
    DamagedMachineFile,
    ForeignMachineFile,
    MachineBusyError,
    MachineFileError,
    MachineFileVersionError,
)
from .machine import Machine
from .machine_state import config_arguments, machine_state, set_machine_state
from .state_codec import decode, encode, load_npz, npz_bytes

__all__ = ["FORMAT", "FORMAT_VERSION", "MachineFileError", "ForeignMachineFile",
           "DamagedMachineFile", "MachineFileVersionError", "MachineBusyError",
           "save_machine", "open_machine", "is_machine_dir", "machine_lock"]

#: value of the ``format`` field of ``machine.json``
FORMAT = "kjcore-machine"
#: bumped when an existing field changes meaning; new optional sections do not bump it
FORMAT_VERSION = 1
META_NAME = "machine.json"
#: the lock file of a machine directory (created only in machine directories)
LOCK_NAME = ".lock"
_DATA_FILE = re.compile(r"^(?:ram-(\d+)\.bin|state-(\d+)\.npz)$")
_TMP_META = re.compile(r"^machine\.json\.(?:(\d+)\.)?tmp$")   # older kjcore: no N
#: bytes per RAM write / checksum step (zero chunks are not written: allocated is zero)
_CHUNK = 4 << 20
#: largest machine.json read (the arrays live in the .npz; the tree is small)
_MAX_META = 16 << 20
#: exceptions a damaged or hostile file turns into while it is decoded and checked
_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
                  zipfile.BadZipFile)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


# ---------------------------------------------------------------------------------- checksums
def _body_digest(meta):
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------- locks
def is_machine_dir(path):
    """Whether ``path`` is a directory holding a ``machine.json`` (not checked further)."""
    return os.path.isfile(os.path.join(os.fspath(path), META_NAME))


@contextlib.contextmanager
def _lock(path, exclusive):
    """flock PATH/.lock without waiting; yields False when another holder has it."""
    try:
        import fcntl
    except ImportError:           # not POSIX: no inter-process locking
        yield True
        return
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError:
        if exclusive:
            raise
        yield True                # read-only directory: nobody can be saving into it
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def machine_lock(path):
    """Hold machine directory ``path``'s lock exclusively; yields False when it is busy.

    ``kjexec`` holds it for a whole open-act-save run; :func:`open_machine` (shared) and
    :func:`save_machine` (exclusive) take it too, so a script and a shell never interleave.
    Inside, pass ``locked=True`` to :func:`open_machine` and :func:`save_machine`. A path
    that is not a machine directory gets no lock file (yields True: opening it explains).
    """
    path = os.fspath(path)
    if not is_machine_dir(path):
        yield True
        return
    with _lock(path, exclusive=True) as free:
        yield free


def _busy(path):
    return MachineBusyError(path, f"{os.strerror(errno.EBUSY)}: another process is using this "
                                  "machine (its lock is held); try again when it is done")


# ---------------------------------------------------------------------------------- reading
def _open_regular(path, name):
    """PATH/name opened for reading and its size, refusing links, FIFOs and devices (the
    check is repeated on the open file: the name may have been swapped meanwhile); never
    blocks."""
    full = os.path.join(path, name)
    try:
        if not stat.S_ISREG(os.lstat(full).st_mode):
            raise DamagedMachineFile(path, f"{name} is not a regular file")
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW)
    except FileNotFoundError:
        raise DamagedMachineFile(path, f"missing {name}") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise DamagedMachineFile(path, f"{name} is not a regular file")
    return f, st.st_size


def _read_file(path, name, max_size):
    """The bytes of regular file PATH/name, at most ``max_size`` of them."""
    f, size = _open_regular(path, name)
    with f:
        if size > max_size:
            raise DamagedMachineFile(path, f"{name} holds {size} bytes, more than "
                                           f"{max_size}")
        return f.read(max_size + 1)


def _read_meta(path):
    if not os.path.lexists(os.path.join(path, META_NAME)):
        raise ForeignMachineFile(path, f"no {META_NAME}: not a kjcore machine")
    raw = _read_file(path, META_NAME, _MAX_META)
    try:
        meta = json.loads(raw)
        digest = _body_digest(meta) if isinstance(meta, dict) else None
    except (ValueError, RecursionError) as e:
        raise DamagedMachineFile(path, f"{META_NAME} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ForeignMachineFile(path, f"{META_NAME} is not a {FORMAT} file")
    version = meta.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise MachineFileVersionError(path, f"format version {version!r}; this kjcore reads "
                                            f"version {FORMAT_VERSION}")
    if meta.get("meta_sha256") != digest:
        raise DamagedMachineFile(path, f"{META_NAME} checksum mismatch (damaged or edited)")
    return meta


def _meta_file(path, meta, key):
    name = meta.get(key)
    if not isinstance(name, str) or not _DATA_FILE.match(name):
        raise DamagedMachineFile(path, f"{META_NAME}: bad {key} {name!r}")
    return name


def _map_ram(path, name, ram_size):
    """Map PATH/name copy-on-write, after checking it is a regular file of ram_size bytes."""
    f, size = _open_regular(path, name)
    with f:
        if size != ram_size:
            raise DamagedMachineFile(path, f"{name} holds {size} bytes, ram_size is "
                                           f"{ram_size}")
        return np.memmap(f, dtype=np.uint8, mode="c", shape=(ram_size,))


def _ram_crc(ram):
    crc = 0
    with progress.ram_bar(len(ram), "verify RAM") as bar:
        for off in range(0, len(ram), _CHUNK):
            crc = zlib.crc32(ram[off:off + _CHUNK], crc)
            bar.update(min(_CHUNK, len(ram) - off))
    return crc


def _identity(path, meta):
    """What a machine remembers of the directory it was opened from or saved to."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, meta["meta_sha256"]


def open_machine(path, *, verify=False, locked=False):
    """Open the machine saved in directory ``path``.

    RAM is mapped copy-on-write: changes stay in this process until :func:`save_machine`.
    ``verify=True`` also checks the RAM file's CRC-32 (reads all of it). ``locked=True``:
    the caller holds :func:`machine_lock` (else the lock is taken shared while reading).

    Raises ``FileNotFoundError`` if ``path`` does not exist, :class:`ForeignMachineFile` if
    it is not a kjcore machine, :class:`MachineFileVersionError` for another format version,
    :class:`MachineBusyError` while another process holds the lock and
    :class:`DamagedMachineFile` for missing, truncated, corrupted or inconsistent files.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such machine", path)
    if not os.path.isdir(path):
        raise ForeignMachineFile(path, "is not a directory; a kjcore machine is a directory "
                                       "(create one with 'kjcore machine new PATH')")
    if locked or not is_machine_dir(path):
        return _open_locked(path, verify)
    with _lock(path, exclusive=False) as free:
        if not free:
            raise _busy(path)
        return _open_locked(path, verify)


def _open_locked(path, verify):
    meta = _read_meta(path)
    ram_size = meta.get("ram_size")
    if type(ram_size) is not int or not 0 < ram_size <= MAX_RAM_SIZE or ram_size % PAGE_SIZE:
        raise DamagedMachineFile(path, f"{META_NAME}: bad ram_size {ram_size!r}")
    ram_name = _meta_file(path, meta, "ram_file")
    state_name = _meta_file(path, meta, "state_file")
    ram = _map_ram(path, ram_name, ram_size)
    # the array file holds segment buffers (at most RAM) and frame lists (RAM / 512)
    blob = _read_file(path, state_name, 2 * ram_size + (1 << 20))
    if hashlib.sha256(blob).hexdigest() != meta.get("state_sha256"):
        raise DamagedMachineFile(path, f"{state_name} checksum mismatch")
    try:
        state = decode(meta["state"], load_npz(blob))
        if state["config"]["ram_size"] != ram_size:
            raise ValueError("config ram_size differs from the RAM file's")
        machine = Machine(**config_arguments(state["config"]), ram=ram)
        set_machine_state(machine, state)
    except MachineFileError:
        raise
    except _DECODE_ERRORS as e:
        raise DamagedMachineFile(path, f"inconsistent state ({type(e).__name__}: {e})") \
            from None
    disks = meta.get("disks", [])   # files referred to, not copied (SPEC §15)
    try:
        if not isinstance(disks, list) or len(disks) > 2:
            raise ValueError(f"bad disk list {disks!r:.80}")
        for ref in disks:
            machine.attach_disk(disk_from_reference(ref, path))
    except ValueError as e:
        raise DamagedMachineFile(path, f"{META_NAME}: {e}") from None
    if verify and _ram_crc(ram) != meta.get("ram_crc32"):
        raise DamagedMachineFile(path, f"{ram_name} CRC-32 mismatch")
    machine.store_origin = _identity(path, meta)
    return machine


# ---------------------------------------------------------------------------------- writing
def _prepare_dir(path):
    """Check ``path`` can hold a machine; create it if missing. True if it was created."""
    if os.path.isdir(path):
        if os.listdir(path) and not is_machine_dir(path):
            raise ForeignMachineFile(path, "is a non-empty directory that is not a kjcore "
                                           "machine; refusing to save into it")
        return False
    if os.path.lexists(path):
        raise ForeignMachineFile(path, "exists and is not a directory; a kjcore machine is a "
                                       "directory")
    os.mkdir(path)
    return True


def _current_digest(path):
    """``meta_sha256`` of the machine.json in ``path`` now, or None."""
    try:
        return _read_meta(path)["meta_sha256"]
    except MachineFileError:
        return None


def _check_not_stale(machine, path):
    """Refuse to overwrite a save made by someone else since ``machine`` came from ``path``."""
    origin = machine.store_origin
    st = os.stat(path)
    if origin is None or origin[:2] != (st.st_dev, st.st_ino) or not is_machine_dir(path):
        return
    if _current_digest(path) != origin[2]:
        raise MachineFileError(path, "was saved by another process since this machine was "
                                     "opened from it; refusing to lose that save (open it "
                                     "again, or save to another path)")


def _next_generation(path):
    gens = [int(g) for name in os.listdir(path)
            for m in (_DATA_FILE.match(name) or _TMP_META.match(name),) if m
            for g in m.groups() if g]
    with contextlib.suppress(MachineFileError, OSError, KeyError, TypeError, ValueError):
        gens.append(int(_read_meta(path)["generation"]))
    return max(gens, default=0) + 1


def _create(path, name, created):
    """Create PATH/name exclusively, never through a link; remember it in ``created``."""
    fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW,
                 0o644)
    created.append(name)
    return fd


def _write_all(fd, data, offset):
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _write_ram(fd, ram):
    """Write ``ram`` and fsync; return its CRC-32.

    The whole file is allocated first (posix_fallocate), then the non-zero chunks written
    with pwrite(2), never through a mapping: a full file system is ENOSPC here. A sparse file
    would save, and the machine opened from it would die of SIGBUS the first time it touched
    a hole once the file system (a tmpfs, typically) had filled up.
    """
    crc = 0
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, len(ram))
    else:                                   # no fallocate: zero chunks stay holes
        os.ftruncate(fd, len(ram))
    with progress.ram_bar(len(ram), "save RAM") as bar:
        for off in range(0, len(ram), _CHUNK):
            chunk = ram[off:off + _CHUNK]
            crc = zlib.crc32(chunk, crc)
            if chunk.any():
                _write_all(fd, chunk, off)
            bar.update(len(chunk))
    os.fsync(fd)
    return crc


def _write_file(fd, data):
    _write_all(fd, data, 0)
    os.fsync(fd)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path, names):
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))


def _remove_stale(path, keep):
    """Remove other generations' files and leftover ``machine.json.N.tmp`` files."""
    _remove(path, [name for name in os.listdir(path)
                   if (_DATA_FILE.match(name) and name not in keep) or _TMP_META.match(name)])


def _write_new(path, name, created, write):
    """``write(fd)`` into a new file PATH/name (see :func:`_create`); returns its result."""
    fd = _create(path, name, created)
    try:
        return write(fd)
    finally:
        os.close(fd)


def _write_generation(machine, path, created):
    """Write the next generation's files, the metadata as ``machine.json.N.tmp`` last.

    Returns the metadata and the temporary name (renaming it commits).
    """
    from . import __version__
    arrays = {}
    tree = encode(machine_state(machine), arrays, "")
    blob = npz_bytes(arrays)
    gen = _next_generation(path)
    ram_name, state_name = f"ram-{gen}.bin", f"state-{gen}.npz"
    crc = _write_new(path, ram_name, created, lambda fd: _write_ram(fd, machine.ram))
    _write_new(path, state_name, created, lambda fd: _write_file(fd, blob))
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "generation": gen,
            "kjcore": __version__, "ram_file": ram_name, "ram_size": len(machine.ram),
            "ram_crc32": crc, "state_file": state_name,
            "state_sha256": hashlib.sha256(blob).hexdigest(), "state": tree,
            "disks": [disk_reference(d, path) for d in machine.disks]}
    meta["meta_sha256"] = _body_digest(meta)
    text = json.dumps(meta, indent=1, sort_keys=True) + "\n"
    tmp_name = f"{META_NAME}.{gen}.tmp"
    _write_new(path, tmp_name, created, lambda fd: _write_file(fd, text.encode()))
    return meta, tmp_name


def _write_meta(path, tmp_name):
    """Rename the written ``machine.json.N.tmp`` over ``machine.json``: the commit."""
    os.replace(os.path.join(path, tmp_name), os.path.join(path, META_NAME))


def save_machine(machine, path, *, locked=False):
    """Save ``machine`` to the directory ``path`` atomically (see the module docstring).

    ``path`` is created if missing; an existing kjcore machine there is replaced, unless
    ``machine`` was opened from (or last saved to) that directory and another process has
    saved it since (:class:`MachineFileError`: that save would be lost). Refuses
    (:class:`ForeignMachineFile`) a path that is a file or a non-empty foreign directory,
    (:class:`MachineBusyError`) a directory whose lock another process holds and
    (``RuntimeError``) a machine whose kexec lock is held (a load or exec in progress).
    ``locked=True``: the caller holds :func:`machine_lock`. A failed save (``OSError``: full
    disk, read-only file system, I/O error) removes what it wrote; ``machine`` is unchanged.
    """
    path = os.fspath(path)
    for disk in machine.disks:
        disk_reference(disk, path)          # ValueError for an in-memory disk, before anything
        disk.flush()
    with machine.idle("save"):
        made_dir = _prepare_dir(path)
        try:
            if locked:
                _save_locked(machine, path)
            else:
                with _lock(path, exclusive=True) as free:
                    if not free:
                        raise _busy(path)
                    _save_locked(machine, path)
        except BaseException:
            if not is_machine_dir(path):        # no lock file left in a non-machine
                _remove(path, [LOCK_NAME])
                if made_dir:
                    with contextlib.suppress(OSError):
                        os.rmdir(path)
            raise


def _save_locked(machine, path):
    _check_not_stale(machine, path)
    created = []
    try:
        meta, tmp_name = _write_generation(machine, path, created)
        _write_meta(path, tmp_name)
    except BaseException:
        _remove(path, created)      # before the commit: only this save's own files
        raise
    machine.store_origin = _identity(path, meta)
    _fsync_dir(path)
    _remove_stale(path, keep={meta["ram_file"], meta["state_file"]})
