"""Live Python views of registers in the state vector (the attributes of :class:`~kjcore.cpu.CPU`).

Each view reads and writes the CPU's state vector directly, so ``cpu.cs.base = 0x1000`` takes
effect at the next run; writes that change how code is fetched or translated drop the cached
code page (and, for control registers, the software TLB).
"""
from types import MappingProxyType

from . import state as S


def _load_limits():
    limits = dict.fromkeys(S.REG_NAMES + S.CONTROL_NAMES + S.TABLE_NAMES, S.M32)
    limits.update(gdtr_limit=0xFFFF, idtr_limit=0xFFFF)
    seg_max = dict(zip(S.SEG_KEYS, (0xFFFF, S.M32, S.M32, 0xFF, 0xF)))
    for seg in S.SEG_NAMES:
        limits.update({f"{seg}_{key}": top for key, top in seg_max.items()})
    return MappingProxyType(limits)


#: every key ``CPU.load`` accepts, with the largest value it takes
LOAD_LIMITS = _load_limits()


class SegmentRegister:
    """Live view of one segment register (selector + hidden descriptor cache)."""

    def __init__(self, s, index):
        self._s = s
        self._b = S.SEG + 4 * index
        self.name = S.SEG_NAMES[index]

    def _set_selector(self, v):
        self._s[self._b] = v & 0xFFFF
        if self._b == S.SEG + 4 * S.CS:
            self._s[S.CPL] = v & 3 if self._s[S.CR0] & S.CR0_PE else 0  # CS.RPL; 0 in real mode
            self._s[S.D_FPAGE] = -1

    selector = property(lambda self: int(self._s[self._b]), _set_selector)

    def _set_cache(self, k, v):
        self._s[self._b + k] = v
        self._s[S.D_FPAGE] = -1

    base = property(lambda self: int(self._s[self._b + 1]),
                    lambda self, v: self._set_cache(1, v & S.M32))
    limit = property(lambda self: int(self._s[self._b + 2]),
                     lambda self, v: self._set_cache(2, v & S.M32))
    #: access byte (bits 0-7), AVL/L/D-B/G (bits 8-11), usable (bit 16)
    attrib = property(lambda self: int(self._s[self._b + 3]),
                      lambda self, v: self._set_cache(3, v))
    flags = attrib

    @property
    def dpl(self):
        return (self.attrib >> 5) & 3

    def __repr__(self):
        return (f"<{self.name} sel={self.selector:#06x} base={self.base:#010x} "
                f"limit={self.limit:#010x} attr={self.attrib:#07x}>")


class TableRegister:
    """GDTR / IDTR (base, limit)."""

    def __init__(self, s, slot, name):
        self._s = s
        self._b = slot
        self.name = name

    base = property(lambda self: int(self._s[self._b]),
                    lambda self, v: self._s.__setitem__(self._b, v & S.M32))
    limit = property(lambda self: int(self._s[self._b + 1]),
                     lambda self, v: self._s.__setitem__(self._b + 1, v & 0xFFFF))

    def __repr__(self):
        return f"<{self.name} base={self.base:#010x} limit={self.limit:#06x}>"


def reg_property(slot, doc):
    """A CPU property for the 32-bit register in ``slot``; control registers flush the TLB."""

    def get(self):
        return int(self._s[slot])

    def put(self, v):
        self._s[slot] = int(v) & S.M32
        if slot in (S.CR0, S.CR3, S.CR4, S.EFER):
            self.flush_tlb()

    return property(get, put, doc=doc)
