"""Shift and rotate family: ROL ROR RCL RCR SHL SHR SAL SAR, SHLD, SHRD.

The count is masked to 5 bits; a masked count of 0 changes nothing, not
even flags (SDM vol. 2, SAL/SAR/SHL/SHR and RCL/RCR/ROL/ROR).

Undefined-flag rule (matches QEMU/Unicorn): OF for counts above 1 is
computed with the count-1 formula (ROL: MSB(r) xor CF; ROR: the two top
bits of r; RCL/RCR: MSB(src xor r); SHL: MSB(r) xor CF; SHR/SAR: MSB of
(src >> count-1) xor r); AF is cleared by SHL/SHR/SAR; CF of SHL/SHR for
counts above the operand width follows the shifted-out bit of the
widened value (0).  SHLD/SHRD with a 16-bit count above 16 leave an
undefined result (tests exclude it).
"""
from .jit import kernel
from .operands import (
    MASK,
    SIGN,
    check_rm_write,
    get_reg,
    read_rm,
    set_arith,
    szp,
    write_rm,
)
from .state import AF, CF, D_EXC, D_IMM, D_OP, D_OSZ, D_REG, ECX, EFLAGS, OF


@kernel("i", "siiii")
def shift_op(s, op, a, count, size):
    """Returns (result, changed). Updates flags when changed."""
    bits = 8 * size
    m = MASK[size]
    sign = SIGN[size]
    fl = s[EFLAGS]
    if op == 0:                                   # ROL
        c = count % bits
        r = ((a << c) | (a >> (bits - c))) & m
        cf = r & 1
        of = 1 if ((r & sign) != 0) != (cf != 0) else 0
        s[EFLAGS] = (fl & ~(CF | OF)) | cf | (OF if of else 0)
        return r
    if op == 1:                                   # ROR
        c = count % bits
        r = ((a >> c) | (a << (bits - c))) & m
        cf = 1 if r & sign else 0
        of = 1 if ((r & sign) != 0) != ((r & (sign >> 1)) != 0) else 0
        s[EFLAGS] = (fl & ~(CF | OF)) | cf | (OF if of else 0)
        return r
    if op == 2 or op == 3:                        # RCL / RCR through CF
        c = count % (bits + 1)
        if c == 0:
            return a
        w = a | ((fl & CF) << bits)               # bits+1 wide value
        wm = (m << 1) | 1
        if op == 2:
            w = ((w << c) | (w >> (bits + 1 - c))) & wm
        else:
            w = ((w >> c) | (w << (bits + 1 - c))) & wm
        r = w & m
        cf = (w >> bits) & 1
        of = OF if (a ^ r) & sign else 0
        s[EFLAGS] = (fl & ~(CF | OF)) | cf | of
        return r
    if op == 4 or op == 6:                        # SHL / SAL
        r = (a << count) & m
        cf = ((a << (count - 1)) >> (bits - 1)) & 1
        of = OF if ((r & sign) != 0) != (cf != 0) else 0
    elif op == 5:                                 # SHR
        r = a >> count
        src = a >> (count - 1)
        cf = src & 1
        of = OF if (src ^ r) & sign else 0
    else:                                         # SAR
        sa = a - (m + 1) if a & sign else a
        r = (sa >> count) & m
        cf = (sa >> (count - 1)) & 1
        of = 0
    set_arith(s, szp(r, size) | cf | of)
    return r


@kernel("i", "sri")
def _shld(s, ram, op):
    size = s[D_OSZ]
    bits = 8 * size
    m = MASK[size]
    count = (s[D_IMM] if (op & 1) == 0 else s[ECX]) & 31
    a = read_rm(s, ram, size)
    if s[D_EXC] >= 0 or count == 0:
        return 0
    if not check_rm_write(s, ram, size):
        return 0
    b = get_reg(s, s[D_REG], size)
    if size == 2:
        # 16-bit forms: count may exceed 16 (undefined result); model the
        # operand as the 48-bit pattern a:b:a (resp. b:a:b) so every count
        # gives a deterministic value.  Fits in int64.
        if op <= 0x1A5:
            w = (a << 32) | (b << 16) | a
            r = (w >> (32 - count)) & m
            cf = (w >> (48 - count)) & 1
        else:
            w = (b << 32) | (a << 16) | b
            r = (w >> (16 + count)) & m
            cf = (w >> (15 + count)) & 1
    elif op <= 0x1A5:
        r = ((a << count) | (b >> (bits - count))) & m
        cf = (a >> (bits - count)) & 1
    else:
        r = ((a >> count) | (b << (bits - count))) & m
        cf = (a >> (count - 1)) & 1
    of = OF if (a ^ r) & SIGN[size] else 0
    set_arith(s, szp(r, size) | cf | of)
    write_rm(s, ram, size, r)
    return 0


@kernel("i", "sr")
def op_shift(s, ram):
    op = s[D_OP]
    size = 1 if (op & 1) == 0 else s[D_OSZ]
    if op == 0x1A4 or op == 0x1A5 or op == 0x1AC or op == 0x1AD:
        return _shld(s, ram, op)
    if op <= 0xC1:
        count = s[D_IMM] & 31
    elif op <= 0xD1:
        count = 1
    else:
        count = s[ECX] & 31
    a = read_rm(s, ram, size)
    if s[D_EXC] >= 0 or count == 0:
        return 0
    if not check_rm_write(s, ram, size):
        return 0
    r = shift_op(s, s[D_REG], a, count, size)
    write_rm(s, ram, size, r)
    return 0


_unused = AF
