"""``KImage``: a loaded kexec image, read back from simulated RAM (SPEC §1.2, §5).

The indirection list is never kept on the Python side: ``entries()`` and friends walk the words
that the load wrote into RAM, exactly as the relocation routine will walk them, so what a user
inspects is what the jump will do.
"""
import numpy as np
from numba import njit

from .constants import (
    IND_DESTINATION,
    IND_DONE,
    IND_INDIRECTION,
    IND_SOURCE,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
)

_U32 = 0xFFFFFFFF


@njit(cache=True)
def _read_word(ram, addr):
    """A 32-bit little-endian word at a 4-aligned physical address; all ones past RAM."""
    if addr + 4 > len(ram):
        return np.int64(_U32)
    return (np.int64(ram[addr]) | (np.int64(ram[addr + 1]) << 8)
            | (np.int64(ram[addr + 2]) << 16) | (np.int64(ram[addr + 3]) << 24))


@njit(cache=True)
def walk_list(ram, head, limit, words, dests):
    """Walk an indirection list the way swap_pages does (SPEC §7.6).

    Fills ``words`` with every word read, the head first, and ``dests`` with the destination
    each IND_SOURCE word is swapped with (0 for other words).  Returns the number of words,
    or -1 when more than ``limit`` words were read without reaching IND_DONE (a corrupted,
    cyclic list).
    """
    n = 0
    word = np.int64(head)
    ptr = np.int64(0)
    dest = 0
    while True:
        if n == limit:
            return -1
        words[n] = word
        dests[n] = 0
        n += 1
        if word & IND_DESTINATION:
            dest = word & PAGE_MASK
        elif word & IND_INDIRECTION:
            ptr = word & PAGE_MASK
            word = _read_word(ram, ptr)
            ptr += 4
            continue
        elif word & IND_DONE:
            return n
        elif word & IND_SOURCE:
            dests[n - 1] = dest
            dest = (dest + PAGE_SIZE) & _U32
        word = _read_word(ram, ptr)
        ptr = (ptr + 4) & _U32


def effective_flags(words):
    """:func:`decode_flag` over a numpy array of words."""
    return np.select([words & f != 0 for f in _FLAG_ORDER], _FLAG_ORDER, 0)


_FLAG_ORDER = (IND_DESTINATION, IND_INDIRECTION, IND_DONE, IND_SOURCE)


def decode_flag(word):
    """The flag a walker acts on: the first of DESTINATION, INDIRECTION, DONE, SOURCE set."""
    for flag in _FLAG_ORDER:
        if word & flag:
            return flag
    return 0


class KImage:
    """Read-only view of a loaded kexec image.

    Attributes: ``start`` (entry point; updated after each preserve-context jump), ``head``
    (the raw head word), ``type`` (``"default"`` or ``"crash"``), ``preserve_context``,
    ``segments`` (tuple of :class:`kjcore.Segment`), ``control_page`` and ``swap_page``
    (physical addresses; ``swap_page`` is None for crash images), ``ind_frames`` and
    ``parked_frames`` (frame numbers the load allocated for the list and parked).

    ``ram`` is the machine's RAM array (the list is read from it); ``free_order`` is
    :meth:`frames_to_free` when known (a saved image), else it is read from the list now.

    >>> import kjcore
    >>> m = kjcore.Machine(ram_size=16 << 20)
    >>> m.kexec_load(0x100000, [kjcore.Segment(b"hi", 0x100000, 0x2000)],
    ...              kjcore.KEXEC_PRESERVE_CONTEXT)
    >>> img = m.kexec_image
    >>> [kjcore.kimage.flag_name(f) for f, a in img.entries()]
    ['INDIRECTION', 'DESTINATION', 'SOURCE', 'SOURCE', 'DONE']
    >>> [hex(d) for d in img.destination_pages()]
    ['0x100000', '0x101000']
    """

    def __init__(self, ram, *, type, start, head, segments, preserve_context, control_page,
                 swap_page=None, ind_frames=(), parked_frames=(), free_order=None):
        # The image reads the machine's RAM array, not the machine: no reference cycle
        # between a Machine and its slots, so a dropped machine is freed at once.
        self._ram = ram
        self.type = type
        self.start = start
        self.head = head
        self.segments = tuple(segments)
        #: source pages the load put in the list (one per destination page; 0 for a crash
        #: image): counted once here, not by walking the list at every jump
        self.nr_source_pages = 0 if type == "crash" else sum(
            -(-seg.memsz // PAGE_SIZE) for seg in self.segments)
        self._list_limit = list_limit(self.segments)
        self.preserve_context = preserve_context
        self.control_page = control_page
        self.swap_page = swap_page
        #: indirection-page frames the load allocated, in chain order
        self.ind_frames = np.asarray(ind_frames, dtype=np.int64)
        #: frames the load parked (allocated, then not used) and still holds
        self.parked_frames = np.asarray(parked_frames, dtype=np.int64)
        if free_order is None:
            free_order = self._recorded_free_order()
        self._free_order = np.asarray(free_order, dtype=np.int64)

    def __repr__(self):
        swap = "None" if self.swap_page is None else f"{self.swap_page:#x}"
        return (f"KImage(type={self.type!r}, start={self.start:#x}, head={self.head:#x}, "
                f"segments={len(self.segments)}, preserve_context={self.preserve_context}, "
                f"control_page={self.control_page:#x}, swap_page={swap})")

    def _walk(self):
        ram = self._ram
        # A list built by kexec_load has one word per segment and per page, DONE, and one link
        # per 1023 words; only a list corrupted in RAM is longer (then walk up to every word).
        for limit in (self._list_limit, len(ram) // 4 + 2):
            out = np.empty(limit, dtype=np.int64)
            dests = np.empty(limit, dtype=np.int64)
            n = walk_list(ram, self.head, limit, out, dests)
            if n >= 0:
                return out[:n], dests[:n]
        raise RuntimeError("the indirection list in RAM does not terminate (corrupted)")

    def entries(self):
        """Iterate ``(flag, address)`` for every word of the list, decoded from RAM.

        Starts with the head word and includes the IND_INDIRECTION links and the final
        IND_DONE, in the order the relocation routine reads them.
        """
        words, _ = self._walk()
        for w in words.tolist():
            yield decode_flag(w), w & PAGE_MASK

    def _pages(self, flag):
        words, dests = self._walk()
        sel = effective_flags(words) == flag
        return words[sel] & PAGE_MASK, dests[sel]

    def source_pages(self):
        """Physical addresses of the source pages, in list order (numpy int64 array)."""
        return self._pages(IND_SOURCE)[0]

    def destination_pages(self):
        """The destination of each source page, in list order (numpy int64 array)."""
        return self._pages(IND_SOURCE)[1]

    def indirection_pages(self):
        """Physical addresses of the indirection pages, in chain order (numpy int64 array)."""
        return self._pages(IND_INDIRECTION)[0]

    def frames_to_free(self):
        """Frames this image owns, in the order ``kimage_free`` returns them to the allocator.

        Parked frames (most recently parked first), then sources and indirection pages in list
        order (an indirection page when the walk has left it), then the swap and control pages.
        Recorded at load time, so scribbling over RAM later cannot lose frames.
        """
        return self._free_order

    def _recorded_free_order(self):
        """:meth:`frames_to_free` as the list in RAM says right after the load."""
        if self.type == "crash":
            return np.empty(0, dtype=np.int64)
        order = [int(f) for f in self.parked_frames[::-1]]
        words, _ = self._walk()
        ind = None
        for w in words.tolist():
            flag = decode_flag(w)
            if flag == IND_INDIRECTION:
                if ind is not None:
                    order.append(ind)
                ind = w >> PAGE_SHIFT
            elif flag == IND_SOURCE:
                order.append(w >> PAGE_SHIFT)
        if ind is not None:
            order.append(ind)
        order += [self.swap_page >> PAGE_SHIFT, self.control_page >> PAGE_SHIFT]
        return np.asarray(order, dtype=np.int64)


def list_limit(segments):
    """How many words a list built by ``kexec_load`` for ``segments`` reads at most.

    One DESTINATION word per segment and one SOURCE word per page, the DONE word, and one
    INDIRECTION link per 1023 words (plus the head): a longer list was corrupted.
    """
    words = sum(-(-s.memsz // PAGE_SIZE) + 1 for s in segments) + 2
    return words + words // 1023 + 2


def flag_name(flag):
    """Name of an IND_* flag (``"DESTINATION"``, ...), ``"NONE"`` for 0."""
    return {IND_DESTINATION: "DESTINATION", IND_INDIRECTION: "INDIRECTION", IND_DONE: "DONE",
            IND_SOURCE: "SOURCE"}.get(flag, "NONE")
