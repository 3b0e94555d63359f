"""The debugger's view of memory: translations and reads through the current page tables
without any side effect (no Accessed/Dirty bits, no TLB fill, no fault)."""
from . import state as S
from .jit import kernel
from .memory import ACC_FETCH, ACC_USER, ACC_WRITE, walk


class MemoryViewMixin:
    """``translate`` and ``read_linear`` of :class:`~kjcore.cpu.CPU`."""

    def translate(self, linear, write=False, user=False, fetch=False):
        """Physical address for ``linear`` or None; no side effects at all."""
        acc = (ACC_WRITE if write else 0) | (ACC_USER if user else 0) | (ACC_FETCH if fetch else 0)
        p = int(_peek_translate(self._s, self.ram, int(linear) & S.M32, acc))
        return None if p < 0 else p

    def read_linear(self, linear, n):
        """Read ``n`` bytes through the page tables (debugger view, no side effects)."""
        out = bytearray()
        for i in range(n):
            p = self.translate((linear + i) & S.M32)
            out.append(int(self.ram[p]) if p is not None and p < len(self.ram) else 0xFF)
        return bytes(out)


@kernel("i", "srii", entry=True)
def _peek_translate(s, ram, lin, acc):
    if (s[S.CR0] & S.CR0_PG) == 0:
        return lin & ~s[S.A20_CLEAR]
    saved = s[S.BUS_ADDR]
    p = walk(s, ram, lin, acc, False)
    s[S.BUS_ADDR] = saved
    return p
