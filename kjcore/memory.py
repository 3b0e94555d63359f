"""Physical memory bookkeeping of the first kernel: the page-frame allocator.

RAM itself is one flat numpy ``uint8`` array owned by :class:`kjcore.Machine`; this module only
decides which page frames the running kernel may hand out.  The allocator models a buddy
allocator's free lists loosely but deterministically:

* frames below ``kernel_reserved`` belong to the first kernel and are never free;
* frames of the crashkernel region are reserved at boot and never handed out;
* ``excluded`` frames (the BIOS areas below 1 MiB on a machine with a BIOS) are never free;
* the remaining frames are grouped in blocks of ``BLOCK_FRAMES`` frames, the blocks are put in a
  seeded random order (free lists are not sorted on a running system) and frames are handed out
  block by block, ascending inside a block;
* a freed frame goes back on top of the free stack (the kernel's hot per-CPU list), so it is the
  next one handed out.

All state is two numpy arrays so Numba kernels (the kimage planner) can allocate directly.
"""
import numpy as np

from .constants import PAGE_SHIFT

#: frames per block of the initial free order (32 KiB blocks)
BLOCK_FRAMES = 8


class FrameAllocator:
    """Free page frames of one machine, handed out in a seeded, not-simply-ascending order.

    ``stack[:top[0]]`` are the free frames; ``alloc()`` pops from the end.

    >>> a = FrameAllocator(nr_frames=64, reserved_frames=16, seed=1)
    >>> a.nr_free
    48
    >>> f = a.alloc(); 16 <= f < 64
    True
    >>> a.free(f); a.alloc() == f      # a freed frame is the next one handed out
    True
    """

    def __init__(self, nr_frames, reserved_frames, crash_frames=(0, 0), seed=0, excluded=()):
        self.nr_frames = int(nr_frames)
        self.reserved_frames = int(reserved_frames)
        self.crash_frames = (int(crash_frames[0]), int(crash_frames[1]))
        self.excluded = np.unique(self._frames(list(excluded)))
        self.seed = int(seed)
        self.stack = np.empty(self.nr_frames, dtype=np.int64)
        self.top = np.zeros(1, dtype=np.int64)
        self.reset()

    def boot_order(self):
        """The order in which a freshly booted machine hands out its free frames."""
        frames = np.arange(self.reserved_frames, self.nr_frames, dtype=np.int64)
        c0, c1 = self.crash_frames
        if c1 > c0:
            frames = frames[(frames < c0) | (frames >= c1)]
        frames = frames[~np.isin(frames, self.excluded)]
        nblocks = -(-len(frames) // BLOCK_FRAMES)
        order = np.random.default_rng(self.seed).permutation(nblocks)
        idx = (order[:, None] * BLOCK_FRAMES + np.arange(BLOCK_FRAMES)).ravel()
        return frames[idx[idx < len(frames)]]

    def reset(self):
        """Return to the state right after boot (every free frame free, boot order)."""
        order = self.boot_order()
        self.top[0] = len(order)
        self.stack[:len(order)] = order[::-1]

    @property
    def nr_free(self):
        """Number of free frames."""
        return int(self.top[0])

    def alloc(self):
        """Pop one free frame number; ``MemoryError`` when none is left (the kernel's ENOMEM)."""
        t = int(self.top[0])
        if t == 0:
            raise MemoryError("no free page frame")
        self.top[0] = t - 1
        return int(self.stack[t - 1])

    def free(self, frame):
        """Give ``frame`` back; it becomes the next frame handed out.

        ``ValueError`` (nothing changed) unless ``frame`` is a frame this allocator hands out
        and is not free already.
        """
        self.free_many([frame])

    def free_many(self, frames):
        """Give back ``frames`` in order (the last one is handed out first).

        ``ValueError`` (nothing changed) unless the frames are distinct frames this allocator
        hands out, none of them free already: the compiled planner indexes its arrays with
        them, so a bad frame must never reach the free stack.
        """
        t = int(self.top[0])
        frames = self.check_state(np.concatenate([self.stack[:t], self._frames(frames)]))[t:]
        self.stack[t:t + len(frames)] = frames
        self.top[0] = t + len(frames)

    def is_free(self, frame):
        """Whether ``frame`` is free (linear scan: for tests and inspection)."""
        return bool(np.any(self.stack[:self.nr_free] == frame))

    def state(self):
        """A copy of the allocator state (for snapshots and rollback)."""
        return self.stack[:self.nr_free].copy()

    def check_state(self, free_stack):
        """``free_stack`` as an int64 array if it is a valid :meth:`state`, else ``ValueError``.

        Valid: distinct frame numbers, each one this allocator hands out (at or above
        ``reserved_frames``, below ``nr_frames``, outside the crashkernel region and not
        ``excluded``).
        """
        frames = self._frames(free_stack)
        c0, c1 = self.crash_frames
        bad = (frames < self.reserved_frames) | (frames >= self.nr_frames) | (
            (frames >= c0) & (frames < c1)) | np.isin(frames, self.excluded)
        if bad.any():
            raise ValueError(f"frame {int(frames[bad][0])} is not a free-able frame (frames "
                             f"{self.reserved_frames}..{self.nr_frames - 1} outside the "
                             f"crashkernel region)")
        twice = np.bincount(frames, minlength=self.nr_frames) > 1
        if twice.any():
            raise ValueError(f"frame {int(np.argmax(twice))} would be free twice")
        return frames

    def set_state(self, free_stack):
        """Restore a state returned by :meth:`state` (``ValueError`` as :meth:`check_state`)."""
        frames = self.check_state(free_stack)
        self.top[0] = len(frames)
        self.stack[:len(frames)] = frames

    @staticmethod
    def _frames(frames):
        """``frames`` as a 1-D int64 array; ``ValueError`` for anything but integers."""
        arr = np.asarray(frames)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise ValueError("frames must be a 1-D sequence of integers")
        if arr.size and arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"frame {int(arr.max())} is out of range")
        return arr.astype(np.int64)


def frame_of(addr):
    """Page frame number of a physical address."""
    return addr >> PAGE_SHIFT
