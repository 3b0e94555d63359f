"""The two starting states of a CPU: the flat protected-mode state a new ``CPU`` has (SPEC 9.2)
and the architectural reset state (SPEC 14.1, SDM vol. 3, 9.1.1).

Both write the state vector in place and keep what belongs to the machine rather than the
processor: the bus mode (``STRICT_BUS``), the A20 gate (``A20_CLEAR``) and the read-only ROM
range (``ROM_LO``, ``ROM_HI``).
"""
from . import state as S

#: CR0 after reset (SDM vol. 3, table 9-1: CD, NW and ET set)
RESET_CR0 = S.CR0_CD | S.CR0_NW | S.CR0_ET
#: attribute word of every segment after reset: present, writable, accessed, 16-bit, usable
RESET_ATTR = 0x93 | S.A_USABLE
FLAT_CODE = 0x9B | S.A_DB | S.A_G | S.A_USABLE
FLAT_DATA = 0x93 | S.A_DB | S.A_G | S.A_USABLE


def _set_seg(s, seg, sel, base, limit, attr):
    b = S.SEG + 4 * seg
    s[b:b + 4] = (sel, base, limit, attr)


def _clear(s):
    kept = s[S.STRICT_BUS], s[S.A20_CLEAR], s[S.ROM_LO], s[S.ROM_HI]
    s[:] = 0
    s[S.STRICT_BUS], s[S.A20_CLEAR], s[S.ROM_LO], s[S.ROM_HI] = kept
    s[S.EFLAGS] = 2
    s[S.BUS_ADDR] = -1
    s[S.DR0 + 6] = 0xFFFF0FF0
    s[S.DR0 + 7] = 0x400
    s[S.TLB:S.TLB_END:3] = -1
    s[S.D_FPAGE] = -1


def flat_state(s):
    """CR0 = PE|ET, paging off, flat 4 GiB ring-0 code (0x08) and data (0x10) segments."""
    _clear(s)
    s[S.CR0] = S.CR0_PE | S.CR0_ET
    for seg in (S.ES, S.SS, S.DS, S.FS, S.GS):
        _set_seg(s, seg, 0x10, 0, S.M32, FLAT_DATA)
    _set_seg(s, S.CS, 0x08, 0, S.M32, FLAT_CODE)


def reset_state(s):
    """Real mode at the reset vector: CS = 0xF000 with base 0xFFFF0000, EIP = 0xFFF0, the
    other segments 0 with limit 0xFFFF, EDX = the processor signature, IDTR = (0, 0x3FF)."""
    _clear(s)
    s[S.CR0] = RESET_CR0
    for seg in (S.ES, S.SS, S.DS, S.FS, S.GS):
        _set_seg(s, seg, 0, 0, 0xFFFF, RESET_ATTR)
    _set_seg(s, S.CS, 0xF000, 0xFFFF0000, 0xFFFF, RESET_ATTR)
    _set_seg(s, S.LDTR, 0, 0, 0xFFFF, 0x82 | S.A_USABLE)
    _set_seg(s, S.TR, 0, 0, 0xFFFF, 0x8B | S.A_USABLE)
    s[S.EIP] = 0xFFF0
    s[S.EDX] = S.CPU_SIGNATURE
    s[S.IDTR_LIMIT] = 0x3FF
    s[S.GDTR_LIMIT] = 0xFFFF
