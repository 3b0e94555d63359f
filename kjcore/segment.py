"""``Segment``: the user's view of ``struct kexec_segment``."""
from .constants import U32


def check_u32(name, value):
    """Return *value* if it is an int that fits an unsigned long of the i386 syscall ABI,
    else raise ``TypeError`` / ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= U32:
        raise ValueError(f"{name}={value:#x} does not fit a 32-bit unsigned long")
    return value


def _byte_view(buf):
    """``buf`` as a 1-D unsigned-byte memoryview: a view of a C-contiguous buffer, else a copy."""
    if buf is None:
        raise TypeError("buf must be bytes-like (use Segment.zero for an all-zero buffer)")
    try:
        view = memoryview(buf)
    except (TypeError, ValueError) as e:
        raise TypeError(f"buf must support the buffer protocol ({type(buf).__name__}: {e})") \
            from None
    if view.format.lstrip("@=<>!") == "O":
        raise TypeError("buf holds Python object pointers, not bytes")
    check_u32("bufsz", view.nbytes)  # before copying anything
    if not view.nbytes:
        return memoryview(b"")
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class Segment:
    """One ``struct kexec_segment``: ``bufsz`` bytes of ``buf``, ``memsz`` bytes at ``mem``.

    ``buf`` is any object with the buffer protocol: ``bytes``, ``bytearray``, ``memoryview``,
    ``array.array``, ``mmap``, numpy arrays of any dtype, shape and strides.  Its bytes are
    taken in C order (``memoryview(buf).tobytes()``) and ``bufsz`` is their number.  A
    C-contiguous buffer is *referenced*, not copied: ``kexec_load`` reads it when it runs, as
    the kernel's ``copy_from_user`` does, so writing into the buffer between ``Segment(...)``
    and the load changes what is loaded (the buffer cannot be resized or closed meanwhile: the
    segment holds an export of it).  Any other buffer (a strided numpy view, a Fortran-order
    array) is copied when the segment is created: later writes to it are not seen.
    ``Segment.zero`` describes a buffer of zero bytes without building it, so huge fuzzed
    segments cost nothing.

    >>> s = Segment(b"\\x90" * 10, mem=0x100000, memsz=0x1000)
    >>> s.bufsz, hex(s.mem), s.memsz
    (10, '0x100000', 4096)
    >>> import numpy as np
    >>> Segment(np.arange(4, dtype=np.uint16)[::2], 0, 0x1000).read(0, 4).tobytes()
    b'\\x00\\x00\\x02\\x00'
    >>> Segment.zero(0, 0x200000, 0x2000)
    Segment(bufsz=0, mem=0x200000, memsz=0x2000, zero)
    """

    __slots__ = ("_buf", "bufsz", "mem", "memsz")

    def __init__(self, buf, mem, memsz):
        self._buf = _byte_view(buf)
        self.bufsz = self._buf.nbytes
        self.mem = check_u32("mem", mem)
        self.memsz = check_u32("memsz", memsz)

    @classmethod
    def zero(cls, bufsz, mem, memsz):
        """A segment whose buffer is ``bufsz`` zero bytes, never materialised."""
        self = cls.__new__(cls)
        self._buf = None
        self.bufsz = check_u32("bufsz", bufsz)
        self.mem = check_u32("mem", mem)
        self.memsz = check_u32("memsz", memsz)
        return self

    @property
    def buf(self):
        """The buffer as a read-only memoryview (``None`` for a zero segment)."""
        return None if self._buf is None else self._buf.toreadonly()

    def read(self, offset, size):
        """``size`` bytes of the buffer from ``offset`` (zeros for a zero segment)."""
        if self._buf is None:
            return bytes(size)
        return self._buf[offset:offset + size]

    def __repr__(self):
        kind = ", zero" if self._buf is None else ""
        return f"Segment(bufsz={self.bufsz}, mem={self.mem:#x}, memsz={self.memsz:#x}{kind})"

    def __eq__(self, other):
        if not isinstance(other, Segment):
            return NotImplemented
        return (self.mem, self.memsz, self.bufsz) == (other.mem, other.memsz, other.bufsz) and \
            bytes(self.read(0, self.bufsz)) == bytes(other.read(0, other.bufsz))

    __hash__ = None
