"""What a kexec jump may change, and an oracle that checks one round trip (SPEC §8, §12).

:func:`preserved_mask` is the one definition of SPEC §12 invariant 8's "first-kernel memory":
the bytes of RAM a preserve-context round trip must leave as they were.  :class:`JumpOracle`
(the campaigns, the tests) and ``kjcore demo`` both check a jump against it.

>>> import kjcore
>>> from kjcore.fuzz.oracle import preserved_mask
>>> m = kjcore.Machine(ram_size=1 << 20, kernel_reserved=64 << 10)
>>> m.kexec_load(0x80000, [kjcore.Segment(b"\\xc3", 0x80000, 4096)], kjcore.KEXEC_PRESERVE_CONTEXT)
>>> keep = preserved_mask(m, m.kexec_image)
>>> before = m.ram.copy()
>>> r = m.kernel_kexec()
>>> bool((m.ram[keep] == before[keep]).all()), bool(keep[m.kexec_image.control_page])
(True, False)
"""
import struct

import numpy as np

from .. import relocate
from ..constants import PAGE_OFFSET, PAGE_SIZE
from ..machine_kexec import PRESERVED_STATE


def _get32(buf, off):
    return struct.unpack_from("<I", buf, off)[0]


def scratch_pages(machine, image):
    """Page addresses a round trip of ``image`` may overwrite: the control page, the swap page,
    the source and indirection pages and the kexec page tables (SPEC §12 invariant 8)."""
    return [image.control_page, image.swap_page, *image.source_pages().tolist(),
            *image.indirection_pages().tolist(), *machine.first_kernel.kexec_tables()]


def preserved_mask(machine, image, *, stack_top=None, out=None):
    """Boolean mask of the RAM bytes a round trip of ``image`` must leave unchanged.

    Everything except :func:`scratch_pages` and the first kernel's stack from its bottom up to
    the physical address ``stack_top`` (default: the whole stack in use at the jump, up to the
    kernel's ESP, which includes the call frame ``machine_kexec`` writes).  An oracle that
    models that call frame itself passes the ESP of the call instead (see :class:`JumpOracle`).
    ``out``: a RAM-sized bool array to fill instead of a new one.
    """
    fk = machine.first_kernel
    if stack_top is None:
        stack_top = fk.kernel_esp - PAGE_OFFSET
    keep = np.ones(len(machine.ram), dtype=bool) if out is None else out
    keep[:] = True
    for page in scratch_pages(machine, image):
        keep[page:page + PAGE_SIZE] = False
    keep[fk.stack_bottom:stack_top] = False
    return keep


class JumpOracle:
    """Checks one preserve-context round trip of ``machine`` against SPEC §8 and §12 (7-9, 11).

    Create it after the image is loaded, call :meth:`before` right before the jump and
    :meth:`check` after it.  ``image_pages`` maps a destination page address to the 4096 bytes
    the image left there; destinations not in it are expected to hold what their source page
    held before the jump.  Failures raise ``AssertionError`` naming the first differing byte.

    RAM that may change is :func:`preserved_mask`'s complement, with the stack up to the ESP
    of the call: the five words the routine pushes below it (SPEC 7.1) are checked to hold the
    caller's EFLAGS, EBP, EDI, ESI and EBX, and everything else must equal the RAM before the
    jump, where "before" includes the call frame ``machine_kexec`` writes (``page_list`` and
    the five arguments).

    ``reuse``: an earlier oracle of the same machine whose RAM-sized buffers this one takes
    over.  A campaign checks thousands of jumps; allocating and freeing RAM-sized arrays for
    each costs page faults wherever the C allocator returns freed memory to the system at once
    (a Dask worker: its nanny sets ``MALLOC_TRIM_THRESHOLD_``), about half the campaign's time.
    """

    def __init__(self, machine, reuse=None):
        m = self.m = machine
        img = self.image = m.kexec_image
        self.sources = [int(a) for a in img.source_pages()]
        self.dests = [int(a) for a in img.destination_pages()]
        self.dest_of = dict(zip(self.sources, self.dests))
        self.source_of = dict(zip(self.dests, self.sources))
        self.state_before = self.call_esp = self.call_regs = None
        self.mask = None                # preserved_mask up to the call's ESP, once known
        self.ram_before = self._changed = self._mask_buffer = None
        if reuse is not None and reuse.m is machine and reuse.ram_before is not None:
            self.ram_before, self._changed = reuse.ram_before, reuse._changed
            self._mask_buffer = reuse.mask

    def before(self):
        """Record RAM and CPU state; returns self."""
        m, img = self.m, self.image
        if self.ram_before is None:
            self.ram_before = m.ram.copy()
            self._changed = np.empty(len(m.ram), dtype=bool)
        else:
            np.copyto(self.ram_before, m.ram)
        regs = relocate.prepare_call(self.ram_before, m.first_kernel, img.head, img.start,
                                     img.control_page, img.swap_page, m.pae, True,
                                     m.fix_pae_return, fix_peer_df=m.fix_peer_df)
        self.call_esp = regs["esp"]
        self.call_regs = regs
        if self.mask is None:
            self.mask = preserved_mask(m, img, stack_top=self.call_esp - PAGE_OFFSET,
                                       out=self._mask_buffer)
        self.state_before = m.cpu.get_state()
        return self

    def image_before(self, dest_page):
        """The image's bytes at ``dest_page`` before the jump (held by its source page)."""
        s = self.source_of[dest_page]
        return self.ram_before[s:s + PAGE_SIZE].tobytes()

    def expected_ret_start(self, image_pages=None):
        """The re-entry point a plain ``ret`` produces: the word after the swap page, as it
        is at re-entry time -- image bytes if that page is a destination (SPEC §7.9)."""
        addr = relocate.return_point_after_ret(self.image.swap_page)
        page, off = addr & ~(PAGE_SIZE - 1), addr & (PAGE_SIZE - 1)
        if addr + 4 > len(self.m.ram):
            return 0xFFFFFFFF                   # empty bus
        if page in self.source_of:              # a destination holds the image now
            data = (image_pages or {}).get(page) or self.image_before(page)
            return _get32(data, off)
        if page in self.dest_of:                # a source holds its destination's old bytes
            addr = self.dest_of[page] + off
        if page == self.image.control_page:
            return _get32(relocate.ROUTINE, off)
        return _get32(self.ram_before, addr)

    def check(self, image_pages=None):
        """Invariants 8 and 9 and the processor state of SPEC §8 after the round trip."""
        m, before = self.m, self.ram_before
        image_pages = image_pages or {}
        saved_esp = relocate.read_data_area(m.ram, self.image.control_page)["esp"]
        assert saved_esp == self.call_esp - 20, \
            f"saved ESP {saved_esp:#x}, expected {self.call_esp - 20:#x} (five pushes)"
        # The five words at the saved ESP are the routine's own pushes (SPEC 7.1): they hold
        # the caller's EFLAGS, EBP, EDI, ESI, EBX; the stack below them is scratch.
        at = saved_esp - PAGE_OFFSET
        pushed = struct.unpack("<5I", m.ram[at:at + 20].tobytes())
        regs = self.call_regs
        want = tuple(regs[r] for r in ("eflags", "ebp", "edi", "esi", "ebx"))
        assert pushed == want, f"saved registers on the stack {pushed}, expected {want}"
        changed = np.not_equal(m.ram, before, out=self._changed)
        diff = np.flatnonzero(np.logical_and(changed, self.mask, out=changed))
        assert diff.size == 0, (f"invariant 8: {diff.size} first-kernel bytes changed, first at "
                                f"{int(diff[0]):#x}: {int(before[diff[0]]):#04x} -> "
                                f"{int(m.ram[diff[0]]):#04x}")
        for s, d in zip(self.sources, self.dests):
            want = image_pages.get(d) or self.image_before(d)
            got = m.ram[s:s + PAGE_SIZE].tobytes()
            if got != want:
                i = next(k for k in range(PAGE_SIZE) if got[k] != want[k])
                raise AssertionError(f"invariant 9: source {s:#x} (destination {d:#x}) differs "
                                     f"at +{i:#x}: {got[i]:#04x}, image left {want[i]:#04x}")
        now = m.cpu.get_state()
        bad = [f for f in PRESERVED_STATE if now[f] != self.state_before[f]]
        assert not bad, "SPEC 8: processor state not restored: " + ", ".join(
            f"{f} {int(self.state_before[f]):#x} -> {int(now[f]):#x}" for f in bad)
