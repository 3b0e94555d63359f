"""Disks: arrays of 512-byte sectors, in memory or mapped from a file (SPEC §15).

A :class:`Disk` is what the ATA controller (:mod:`kjcore.devices.ata`) and the BIOS's
INT 13h read and write.  Its sectors are one numpy ``uint8`` array: a ``numpy.memmap`` of
the file (writes reach the file; :meth:`Disk.flush` pushes them out) or an in-memory array.
Every access is checked against the number of sectors first, so nothing ever reads or
writes outside the array, whatever a guest asks for.
"""
import os
import stat

import numpy as np

__all__ = ["SECTOR_SIZE", "Disk", "as_disk", "disk_reference", "disk_from_reference"]

#: bytes per sector
SECTOR_SIZE = 512
#: the largest disk (2**48 sectors is ATA's limit; a file this big is not practical anyway)
MAX_SECTORS = 1 << 40

def _check_size(size):
    if size <= 0 or size % SECTOR_SIZE or size // SECTOR_SIZE > MAX_SECTORS:
        raise ValueError(f"a disk holds a positive whole number of {SECTOR_SIZE}-byte sectors "
                         f"(at most {MAX_SECTORS}), not {size} bytes")
    return size // SECTOR_SIZE


class Disk:
    """A disk of ``sectors`` 512-byte sectors.

    Build one with :meth:`memory`, :meth:`open` or :meth:`create`.  ``path`` is the
    absolute path of the backing file (None for an in-memory disk); ``readonly`` disks
    refuse :meth:`write` (``PermissionError``) and are mapped read-only.

    >>> d = Disk.memory(4 * SECTOR_SIZE)
    >>> d.write(1, b"hello".ljust(512, b"\\0"))
    >>> d.sectors, d.read(1, 1)[:5], d.path
    (4, b'hello', None)
    >>> d.read(3, 2)
    Traceback (most recent call last):
      ...
    ValueError: sectors 3..4 are outside the disk (4 sectors)
    """

    def __init__(self, array, path, readonly):
        self._data = array
        self.path = path
        self.readonly = bool(readonly)
        self.sectors = array.shape[0] // SECTOR_SIZE

    @classmethod
    def memory(cls, size, *, readonly=False):
        """A zero-filled in-memory disk of ``size`` bytes."""
        _check_size(int(size))
        return cls(np.zeros(int(size), np.uint8), None, readonly)

    @classmethod
    def open(cls, path, *, readonly=False):
        """The existing regular file ``path`` as a disk (its size: a multiple of 512)."""
        path = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(path)
        except OSError as e:
            raise ValueError(f"disk {path}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"disk {path}: not a regular file")
        try:
            _check_size(st.st_size)
        except ValueError as e:
            raise ValueError(f"disk {path}: {e}") from None
        if not readonly and not os.access(path, os.W_OK):
            raise ValueError(f"disk {path}: not writable (attach it read-only)")
        array = np.memmap(path, dtype=np.uint8, mode="r" if readonly else "r+",
                          shape=(st.st_size,))
        return cls(array, path, readonly)

    @classmethod
    def create(cls, path, size):
        """A new zero-filled (sparse) file ``path`` of ``size`` bytes, opened as a disk."""
        _check_size(int(size))
        path = os.path.abspath(os.fspath(path))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise ValueError(f"disk {path}: {e.strerror}") from None
        try:
            os.ftruncate(fd, int(size))
        finally:
            os.close(fd)
        return cls.open(path)

    @property
    def geometry(self):
        """(cylinders, heads, sectors per track) for CHS addressing: 16 heads and 63
        sectors a track, as many whole cylinders as fit (at least 1, at most 16383); CHS
        addresses past the last sector are refused by the devices."""
        return max(1, min(16383, self.sectors // (16 * 63))), 16, 63

    def _span(self, lba, n):
        """Byte range of sectors ``lba .. lba+n-1``; ``ValueError`` if any is outside."""
        lba, n = int(lba), int(n)
        if n < 0 or lba < 0 or lba + n > self.sectors:
            raise ValueError(f"sectors {lba}..{lba + n - 1} are outside the disk "
                             f"({self.sectors} sectors)")
        return lba * SECTOR_SIZE, (lba + n) * SECTOR_SIZE

    def view(self, lba, n):
        """The sectors ``lba .. lba+n-1`` as a uint8 array sharing the disk's memory
        (read-only for a read-only disk); for devices that copy in bulk."""
        a, b = self._span(lba, n)
        v = self._data[a:b]
        if self.readonly:
            v = v.view()
            v.flags.writeable = False
        return v

    def read(self, lba, n):
        """``n`` sectors from ``lba`` as bytes."""
        a, b = self._span(lba, n)
        return self._data[a:b].tobytes()

    def write(self, lba, data):
        """Write ``data`` (a whole number of sectors) at sector ``lba``."""
        if self.readonly:
            raise PermissionError(f"disk {self.path or '(memory)'} is read-only")
        buf = np.frombuffer(memoryview(data).cast("B"), np.uint8)
        if buf.shape[0] % SECTOR_SIZE:
            raise ValueError(f"{buf.shape[0]} bytes is not a whole number of sectors")
        a, b = self._span(lba, buf.shape[0] // SECTOR_SIZE)
        self._data[a:b] = buf

    def flush(self):
        """Push written sectors to the backing file (nothing to do in memory)."""
        if isinstance(self._data, np.memmap) and not self.readonly:
            self._data.flush()

    def __repr__(self):
        where = self.path or "memory"
        ro = ", readonly" if self.readonly else ""
        return f"<Disk {where}: {self.sectors} sectors{ro}>"


def as_disk(spec, readonly=False):
    """``spec`` as a :class:`Disk`: a Disk as it is, an int as an in-memory disk of that
    many bytes, a path as that existing file."""
    if isinstance(spec, Disk):
        return spec
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return Disk.memory(int(spec), readonly=readonly)
    if isinstance(spec, (str, bytes, os.PathLike)):
        return Disk.open(os.fsdecode(spec), readonly=readonly)
    raise TypeError(f"a disk is a kjcore.devices.Disk, a size in bytes or a file path, not "
                    f"{type(spec).__name__}")


def _check_outside(path, machine_dir):
    """A disk file inside the machine directory would be one of its own files (or be
    removed with an old generation): refused."""
    inside = os.path.realpath(machine_dir)
    if os.path.commonpath([os.path.realpath(path), inside]) == inside:
        raise ValueError(f"disk {path}: inside the machine directory")


def disk_reference(disk, machine_dir):
    """What the machine saved in ``machine_dir`` keeps of ``disk``: its file, never its
    sectors.  ``ValueError`` for an in-memory disk (it has no file to refer to) or a file
    inside ``machine_dir``."""
    if disk.path is None:
        raise ValueError("an in-memory disk cannot be saved with a machine (a save never "
                         "copies disk contents): attach a disk file instead")
    _check_outside(disk.path, machine_dir)
    return {"path": disk.path, "readonly": disk.readonly, "sectors": disk.sectors}


def disk_from_reference(ref, machine_dir):
    """The disk a :func:`disk_reference` names, checked: ``ValueError`` (one line) for a
    malformed entry, a missing or odd file, a file inside ``machine_dir`` or one whose
    size changed."""
    if not isinstance(ref, dict) or set(ref) != {"path", "readonly", "sectors"}:
        raise ValueError(f"bad disk entry {ref!r:.80}")
    path, readonly, sectors = ref["path"], ref["readonly"], ref["sectors"]
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path \
            or not isinstance(readonly, bool) or type(sectors) is not int:
        raise ValueError(f"bad disk entry {ref!r:.80}")
    _check_outside(path, machine_dir)
    disk = Disk.open(path, readonly=readonly)
    if disk.sectors != sectors:
        raise ValueError(f"disk {path}: {disk.sectors} sectors, the machine was saved with "
                         f"{sectors}")
    return disk
