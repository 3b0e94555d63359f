"""Decimal-adjust family: DAA, DAS, AAA, AAS, AAM, AAD (SDM vol. 2 pseudocode).

Undefined flags: DAA/DAS clear OF; AAA/AAS keep OF/SF/ZF/PF; AAM/AAD clear
CF, AF and OF (the QEMU choices).  DAA/DAS follow the SDM pseudocode
(the *old* AL decides the high-nibble adjustment).
"""
from .jit import kernel
from .memory import exc
from .operands import szp
from .state import AF, CF, D_IMM, D_OP, DE_, EAX, EFLAGS, OF


@kernel("i", "sr")
def op_bcd(s, ram):
    op = s[D_OP]
    al = s[EAX] & 0xFF
    ah = (s[EAX] >> 8) & 0xFF
    f = s[EFLAGS]
    if op == 0x27 or op == 0x2F:                 # DAA / DAS
        cf = f & CF
        af = 0
        ncf = 0
        nal = al
        if (al & 0xF) > 9 or (f & AF):
            af = AF
            if op == 0x27:
                ncf = 1 if (cf or al + 6 > 0xFF) else 0
                nal = (al + 6) & 0xFF
            else:
                ncf = 1 if (cf or al < 6) else 0
                nal = (al - 6) & 0xFF
        if al > 0x99 or cf:
            nal = (nal + 0x60) & 0xFF if op == 0x27 else (nal - 0x60) & 0xFF
            ncf = 1
        elif op == 0x27:
            ncf = 0
        s[EAX] = (s[EAX] & 0xFFFFFF00) | nal
        s[EFLAGS] = (f & ~(CF | AF | 0x4 | 0x40 | 0x80 | OF)) | szp(nal, 1) | af | ncf
        return 0
    if op == 0x37 or op == 0x3F:                 # AAA / AAS
        if (al & 0xF) > 9 or (f & AF):
            if op == 0x37:
                carry = 1 if al > 0xF9 else 0
                al = (al + 6) & 0xF
                ah = (ah + 1 + carry) & 0xFF
            else:
                borrow = 1 if al < 6 else 0
                al = (al - 6) & 0xF
                ah = (ah - 1 - borrow) & 0xFF
            f |= CF | AF
        else:
            f &= ~(CF | AF)
            al &= 0xF
        s[EAX] = (s[EAX] & 0xFFFF0000) | (ah << 8) | al
        s[EFLAGS] = f
        return 0
    base = s[D_IMM]
    if op == 0xD4:                               # AAM
        if base == 0:
            exc(s, DE_, -1)
            return 0
        ah = al // base
        al = al % base
    else:                                        # AAD
        al = (al + ah * base) & 0xFF
        ah = 0
    s[EAX] = (s[EAX] & 0xFFFF0000) | (ah << 8) | al
    s[EFLAGS] = (f & ~(CF | AF | 0x4 | 0x40 | 0x80 | OF)) | szp(al, 1)
    return 0
