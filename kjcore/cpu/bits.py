"""Bit family: BT/BTS/BTR/BTC (register and immediate offsets), BSF/BSR, BSWAP.

A register bit offset on a memory operand addresses beyond the ModRM
location (signed, in operand-size units: SDM vol. 2, BT "bit base").
Undefined flags: BT* leave OF/SF/AF/PF/ZF unchanged; BSF/BSR leave all but
ZF unchanged and keep the destination when the source is zero (the
documented AMD and QEMU behaviour).  BSWAP with a 16-bit operand clears
the low word (undefined in the manual).
"""
from .jit import kernel
from .memory import check_write_mem, exc, read_mem, write_mem
from .operands import MASK, check_rm_write, get_reg, read_rm, set_reg, sext, write_rm
from .state import (
    CF,
    D_ASZ,
    D_EAOFF,
    D_EASEG,
    D_EXC,
    D_IMM,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    D_RM,
    EFLAGS,
    M32,
    UD_,
    ZF,
)


@kernel("i", "sr")
def op_bits(s, ram):
    op = s[D_OP]
    size = s[D_OSZ]
    bits = 8 * size
    if op >= 0x1C8:                              # BSWAP
        r = op & 7
        v = s[r]
        if size == 4:
            s[r] = ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)
        else:
            s[r] = v & 0xFFFF0000
        return 0
    if op == 0x1BC or op == 0x1BD:               # BSF / BSR
        v = read_rm(s, ram, size)
        if s[D_EXC] >= 0:
            return 0
        if v == 0:
            s[EFLAGS] |= ZF
            return 0
        s[EFLAGS] &= ~ZF
        if op == 0x1BC:
            i = 0
            while ((v >> i) & 1) == 0:
                i += 1
        else:
            i = bits - 1
            while ((v >> i) & 1) == 0:
                i -= 1
        set_reg(s, s[D_REG], size, i)
        return 0
    if op == 0x1BA:
        sub = s[D_REG]
        if sub < 4:
            exc(s, UD_, -1)
            return 0
        kind = sub - 4                           # 0 BT, 1 BTS, 2 BTR, 3 BTC
        off = s[D_IMM] & (bits - 1)
        seg = s[D_EASEG]
        addr = s[D_EAOFF]
    else:
        kind = (op >> 3) & 3                     # A3 BT, AB BTS, B3 BTR, BB BTC
        off = get_reg(s, s[D_REG], size)
        seg = s[D_EASEG]
        addr = s[D_EAOFF]
        if s[D_MOD] != 3:
            so = sext(off, size)
            # The bit base is added in address-size arithmetic.
            amask = M32 if s[D_ASZ] == 4 else 0xFFFF
            addr = (addr + size * (so >> (4 if size == 2 else 5))) & amask
            off = so & (bits - 1)
        else:
            off &= bits - 1
    if s[D_MOD] == 3:
        v = get_reg(s, s[D_RM], size)
    else:
        v = read_mem(s, ram, seg, addr, size)
        if s[D_EXC] >= 0:
            return 0
    bit = (v >> off) & 1
    if kind != 0:
        if kind == 1:
            v |= 1 << off
        elif kind == 2:
            v &= ~(1 << off) & MASK[size]
        else:
            v ^= 1 << off
        if s[D_MOD] == 3:
            set_reg(s, s[D_RM], size, v)
        else:
            write_mem(s, ram, seg, addr, size, v)
            if s[D_EXC] >= 0:
                return 0
    s[EFLAGS] = (s[EFLAGS] & ~CF) | bit
    return 0


_unused = (check_rm_write, write_rm, check_write_mem)
