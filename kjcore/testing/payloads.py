"""Random physical-mode payloads for kexec jump campaigns (SPEC §7.8, §11, §12).

A payload is a small i386 program, generated as machine code in Python (no assembler needed),
that stays *within the ABI* of a preserve-context image: it uses the swap page as its stack,
writes only its own destination pages, prints to the debug console (port 0xE9), changes every
register it likes (callee-saved ones, ESP and DF included), and comes back either with a plain
``ret`` or through the jump-back protocol (it ``call``\\ s the jump-back entry it found on its
stack, so its own re-entry point is its return address).

Each payload carries an exact **model** of what one round does to its pages and to the console,
so a test can check SPEC §12 invariants 7-9 and 11 byte for byte without trusting the CPU.

Layout of the ``npages`` destination pages at ``dest`` (``npages >= 2``):

==================  ===================================================================
``dest + 0x000``    code: ``entry`` (the checkpoint ``out``, the prologue, the random
                    operations, the exit) and ``reentry`` (``jmp entry``)
``dest + 0xF00``    ``SLOT_JUMP_BACK``: the jump-back entry read at [ESP] on entry
``dest + 0xF04``    ``SLOT_ESP``: ESP on entry (restored before a ``ret`` exit)
``dest + 0xF08``    ``SLOT_COUNTER``: rounds run so far (incremented first thing)
``dest + 0x1000..`` data pages: the random stores land here
==================  ===================================================================

``exit="call"`` always uses the jump-back protocol (the next exec enters at ``reentry``),
``exit="ret"`` always returns (the first kernel then reads the re-entry point from the word
after the swap page, SPEC §7.9), ``exit="mixed"`` returns on even rounds and calls back on odd
ones.  With ``checkpoint_port`` the program's first instruction is ``out %al, $port``: a
handler registered with ``cpu.on_port`` then sees the destination pages as the payload finds
them (invariant 7).

>>> import numpy as np, kjcore
>>> from kjcore.testing.payloads import random_payload
>>> m = kjcore.Machine(ram_size=1 << 20, kernel_reserved=64 << 10)
>>> p = random_payload(np.random.default_rng(1), dest=0x80000, npages=2, exit="call")
>>> m.kexec_load(p.entry, p.segments(), kjcore.KEXEC_PRESERVE_CONTEXT)
>>> img = m.kexec_image
>>> pages = p.initial_pages()
>>> for _ in range(3):
...     r = m.kernel_kexec()
...     console, returned = p.run_round(pages, img.control_page, img.swap_page)
...     assert r.start == p.reentry and r.debugcon == console and not returned
...     got = b"".join(bytes(m.ram[s:s + 4096]) for s in img.source_pages())
...     assert got == bytes(pages)          # invariant 9: sources hold what the payload left
>>> p.counter(pages)
3
"""
import struct
from dataclasses import dataclass, field

import numpy as np

from .. import relocate
from ..constants import PAGE_OFFSET, PAGE_SIZE
from ..machine_kexec import PRESERVED_STATE
from ..relocate import jump_back_entry
from ..segment import Segment

SLOT_JUMP_BACK = 0xF00
SLOT_ESP = 0xF04
SLOT_COUNTER = 0xF08
CODE_LIMIT = 0xF00
DEBUGCON_PORT = 0xE9
#: bytes of the swap page the payload's pushes may use (below the return address)
STACK_BUDGET = 2048

# register numbers in ModRM order; ESP (4) is moved only by the stack operations
_EAX, _ECX, _EDX, _EBX, _ESP, _EBP, _ESI, _EDI = range(8)
_FREE_REGS = (_EAX, _ECX, _EDX, _EBX, _EBP, _ESI, _EDI)
#: EFLAGS bits a payload may set with POPF: the arithmetic flags and DF (never TF or IF)
_POPF_MASK = 0x8D5 | 0x400


def _d(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def _get32(buf, off):
    return struct.unpack_from("<I", buf, off)[0]


def _put32(buf, off, v):
    struct.pack_into("<I", buf, off, v & 0xFFFFFFFF)


@dataclass
class Payload:
    """A generated payload: its bytes, where it lives, and the model of one round.

    ``ops`` is the list of operations of the random body as ``(kind, args)`` tuples;
    :meth:`run_round` replays them on a bytearray of the payload's pages.
    """
    dest: int
    npages: int
    image: bytes
    entry: int
    reentry: int
    exit: str
    ops: list = field(repr=False)
    exit_regs: dict = field(repr=False, default_factory=dict)

    @property
    def size(self):
        return self.npages * PAGE_SIZE

    def segments(self):
        """The one kexec segment (``bufsz`` may be shorter than ``memsz``: zero padding)."""
        return [Segment(self.image, self.dest, self.size)]

    def initial_pages(self):
        """The pages as loaded: the image bytes, zero-padded."""
        return bytearray(self.image) + bytearray(self.size - len(self.image))

    def counter(self, pages):
        """Rounds the payload has run, read from a model (or real) copy of its pages."""
        return _get32(pages, SLOT_COUNTER)

    def image_pages(self, pages):
        """``{destination page: bytes}`` of a model copy, for :meth:`JumpOracle.check`."""
        return {self.dest + k: bytes(pages[k:k + PAGE_SIZE]) for k in range(0, self.size,
                                                                            PAGE_SIZE)}

    def returns_with_ret(self, counter):
        """Whether the round numbered ``counter`` (1 = first) exits with ``ret``."""
        return self.exit == "ret" or (self.exit == "mixed" and counter % 2 == 0)

    def run_round(self, pages, control_page, swap_page):
        """Apply one round to ``pages`` (in place); ``(console bytes, returned_with_ret)``.

        ``control_page`` and ``swap_page`` give the values the prologue stores: the jump-back
        entry and ESP on entry (``swap_page + 4096 - 4``).
        """
        ctr = (_get32(pages, SLOT_COUNTER) + 1) & 0xFFFFFFFF
        _put32(pages, SLOT_COUNTER, ctr)
        _put32(pages, SLOT_JUMP_BACK, jump_back_entry(control_page))
        _put32(pages, SLOT_ESP, swap_page + PAGE_SIZE - 4)
        out = bytearray()
        base = self.dest
        for kind, a in self.ops:
            if kind == "store32":
                _put32(pages, a[0] - base, a[1])
            elif kind == "add32":
                off = a[0] - base
                _put32(pages, off, _get32(pages, off) + a[1])
            elif kind == "xor8":
                pages[a[0] - base] ^= a[1]
            elif kind == "ctr32":
                _put32(pages, a[0] - base, ctr ^ a[1])
            elif kind == "out":
                out.append(a[0])
            elif kind == "stos":
                lo, n, value = a[0] - base, a[1], a[2]
                pages[lo:lo + n] = bytes([value]) * n
            elif kind == "movs":
                src, dst, n, down = a[0] - base, a[1] - base, a[2], a[3]
                order = range(n - 1, -1, -1) if down else range(n)
                for i in order:         # byte by byte, as REP MOVSB does (overlap included)
                    pages[dst + i] = pages[src + i]
        return bytes(out), self.returns_with_ret(ctr)


class _Asm:
    """Just enough of an i386 encoder for the payloads (absolute disp32 addressing)."""

    def __init__(self, origin):
        self.origin = origin
        self.code = bytearray()

    @property
    def here(self):
        return self.origin + len(self.code)

    def emit(self, *parts):
        for p in parts:
            self.code += bytes([p]) if isinstance(p, int) else p

    def mov_imm(self, reg, v):          # mov $v, %reg
        self.emit(0xB8 + reg, _d(v))

    def jmp(self, target):              # jmp rel32
        self.emit(0xE9, _d(target - (self.here + 5)))


def _data_range(rng, dest, npages, max_len):
    """A random ``(address, length)`` inside the data pages."""
    lo, hi = dest + PAGE_SIZE, dest + npages * PAGE_SIZE
    n = int(rng.integers(1, max_len + 1))
    return int(rng.integers(lo, hi - n + 1)), n


def random_payload(rng, dest, npages=2, *, n_ops=16, exit="call", checkpoint_port=None,
                   bufsz=None):
    """Generate a :class:`Payload` at physical ``dest`` (page-aligned) using ``rng``.

    ``rng`` is a ``numpy.random.Generator``; the same seed gives the same payload.
    ``n_ops`` random operations form the body; ``exit`` is ``"call"``, ``"ret"`` or
    ``"mixed"``; ``bufsz`` (default: random, at least the code) is how many bytes the
    segment's buffer holds -- the data pages start with random bytes up to it.
    """
    if dest % PAGE_SIZE or npages < 2:
        raise ValueError("dest must be page-aligned and npages >= 2")
    if exit not in ("call", "ret", "mixed"):
        raise ValueError(f"exit must be 'call', 'ret' or 'mixed', not {exit!r}")
    a = _Asm(dest)
    ops = []
    if checkpoint_port is not None:
        a.emit(0xE6, checkpoint_port)                       # out %al, $port
    a.emit(b"\x8b\x04\x24", 0xA3, _d(dest + SLOT_JUMP_BACK))  # mov (%esp),%eax; mov %eax,jb
    a.emit(b"\x89\x25", _d(dest + SLOT_ESP))                # mov %esp, esp slot
    a.emit(b"\xff\x05", _d(dest + SLOT_COUNTER))            # incl counter
    depth = 0
    kinds = ("store32", "add32", "xor8", "ctr32", "out", "stos", "movs", "reg", "push",
             "lea_esp", "popf")
    for _ in range(n_ops):
        kind = kinds[int(rng.integers(len(kinds)))]
        v = int(rng.integers(0, 1 << 32))
        if kind in ("store32", "add32", "ctr32"):
            addr, _n = _data_range(rng, dest, npages, 1)
            addr = min(addr, dest + npages * PAGE_SIZE - 4)
            if kind == "store32":
                a.emit(0xC7, 0x05, _d(addr), _d(v))         # movl $v, addr
            elif kind == "add32":
                a.emit(0x81, 0x05, _d(addr), _d(v))         # addl $v, addr
            else:                                           # mov ctr,%eax; xor; mov %eax,addr
                a.emit(0xA1, _d(dest + SLOT_COUNTER), 0x35, _d(v), 0xA3, _d(addr))
            ops.append((kind, (addr, v)))
        elif kind == "xor8":
            addr, _n = _data_range(rng, dest, npages, 1)
            a.emit(0x80, 0x35, _d(addr), v & 0xFF)          # xorb $v, addr
            ops.append((kind, (addr, v & 0xFF)))
        elif kind == "out":
            a.emit(0xB0, v & 0xFF, 0xE6, DEBUGCON_PORT)     # mov $v,%al; out %al,$0xe9
            ops.append((kind, (v & 0xFF,)))
        elif kind == "stos":
            lo, n = _data_range(rng, dest, npages, 300)
            down = bool(v & 0x100)
            a.emit(0xFD if down else 0xFC)                  # std / cld
            a.mov_imm(_EDI, lo + n - 1 if down else lo)
            a.mov_imm(_ECX, n)
            a.emit(0xB0, v & 0xFF, 0xF3, 0xAA)              # mov $v,%al; rep stosb
            ops.append((kind, (lo, n, v & 0xFF)))
        elif kind == "movs":
            src, n = _data_range(rng, dest, npages, 300)
            dst, _n = _data_range(rng, dest, npages, 1)
            dst = min(dst, dest + npages * PAGE_SIZE - n)
            down = bool(v & 1)
            a.emit(0xFD if down else 0xFC)
            a.mov_imm(_ESI, src + n - 1 if down else src)
            a.mov_imm(_EDI, dst + n - 1 if down else dst)
            a.mov_imm(_ECX, n)
            a.emit(0xF3, 0xA4)                              # rep movsb
            ops.append((kind, (src, dst, n, down)))
        elif kind == "reg":
            a.mov_imm(_FREE_REGS[v % len(_FREE_REGS)], int(rng.integers(0, 1 << 32)))
        elif kind == "push" and depth + 8 <= STACK_BUDGET:
            a.emit(0x68, _d(v), 0x58 + _FREE_REGS[v % 7], 0x68, _d(~v))  # push; pop; push
            depth += 4
        elif kind == "lea_esp" and depth + 256 <= STACK_BUDGET:
            k = 4 * int(rng.integers(1, 64))
            a.emit(b"\x8d\xa4\x24", _d(-k))                 # lea -k(%esp), %esp
            depth += k
        elif kind == "popf":
            a.emit(0x68, _d(v & _POPF_MASK | 0x2), 0x9D)    # push $flags; popf
    regs = {r: int(rng.integers(0, 1 << 32)) for r in (_EBX, _EBP, _ESI, _EDI)}

    def scramble_and_std():
        for r, val in regs.items():
            a.mov_imm(r, val)
        a.emit(0xFD)                                        # the first kernel must cope: DF=1

    if checkpoint_port is not None:
        a.emit(0xE6, checkpoint_port)                       # the pages as the payload leaves them
    call_exit = []
    if exit == "mixed":
        a.emit(0xF6, 0x05, _d(dest + SLOT_COUNTER), 0x01)   # testb $1, counter
        a.emit(0x0F, 0x85)                                  # jnz call_exit (odd round)
        call_exit.append(len(a.code))
        a.emit(_d(0))
    if exit in ("ret", "mixed"):
        scramble_and_std()
        a.emit(0x8B, 0x25, _d(dest + SLOT_ESP), 0xC3)       # mov esp slot,%esp; ret
    if call_exit:
        _put32(a.code, call_exit[0], a.here - (a.origin + call_exit[0] + 4))
    reentry = None
    if exit in ("call", "mixed"):
        a.emit(0xA1, _d(dest + SLOT_JUMP_BACK))             # mov jb,%eax
        scramble_and_std()
        a.emit(0xFF, 0xD0)                                  # call *%eax
        reentry = a.here
        a.jmp(dest)                                         # entered again: run the body again
    if len(a.code) > CODE_LIMIT:
        raise ValueError(f"n_ops={n_ops} gives {len(a.code)} bytes of code, more than "
                         f"{CODE_LIMIT}")
    size = npages * PAGE_SIZE
    if bufsz is None:
        bufsz = int(rng.integers(PAGE_SIZE, size + 1))
    bufsz = max(bufsz, len(a.code))
    image = bytearray(rng.integers(0, 256, bufsz, dtype="u1").tobytes())
    image[:len(a.code)] = a.code
    image[len(a.code):min(bufsz, PAGE_SIZE)] = bytes(max(0, min(bufsz, PAGE_SIZE) - len(a.code)))
    return Payload(dest=dest, npages=npages, image=bytes(image), entry=dest, reentry=reentry,
                   exit=exit, ops=ops, exit_regs=regs)


class JumpOracle:
    """Checks one preserve-context round trip of ``machine`` against SPEC §8 and §12 (7-9, 11).

    Create it after the image is loaded, call :meth:`before` right before the jump and
    :meth:`check` after it.  ``image_pages`` maps a destination page address to the 4096 bytes
    the image left there; destinations not in it are expected to hold what their source page
    held before the jump.  Failures raise ``AssertionError`` naming the first differing byte.

    RAM that may change (SPEC §12 invariant 8): the control page, the swap page, the source
    and indirection pages, the kexec page tables and the first kernel's stack below the ESP
    the routine saved -- and the five words the routine pushed at that ESP (SPEC 7.1), which
    are checked to hold the caller's EFLAGS, EBP, EDI, ESI and EBX.  Everything else must equal the RAM before the jump, where "before"
    includes the call frame ``machine_kexec`` writes (``page_list`` and the five arguments).
    """

    def __init__(self, machine):
        m = self.m = machine
        img = self.image = m.kexec_image
        self.sources = [int(a) for a in img.source_pages()]
        self.dests = [int(a) for a in img.destination_pages()]
        self.dest_of = dict(zip(self.sources, self.dests))
        self.source_of = dict(zip(self.dests, self.sources))
        layout = m.first_kernel
        mask = np.ones(len(m.ram), dtype=bool)
        for page in ([img.control_page, img.swap_page] + self.sources
                     + [int(a) for a in img.indirection_pages()] + list(layout.kexec_tables())):
            mask[page:page + PAGE_SIZE] = False
        self.mask = mask
        self.ram_before = self.state_before = self.call_esp = self.call_regs = None

    def before(self):
        """Record RAM and CPU state; returns self."""
        m, img = self.m, self.image
        self.ram_before = m.ram.copy()
        regs = relocate.prepare_call(self.ram_before, m.first_kernel, img.head, img.start,
                                     img.control_page, img.swap_page, m.pae, True,
                                     m.fix_pae_return)
        self.call_esp = regs["esp"]
        self.call_regs = regs
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
        mask = self.mask.copy()
        mask[m.first_kernel.stack_bottom:at + 20] = False
        diff = np.flatnonzero((m.ram != before) & mask)
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
