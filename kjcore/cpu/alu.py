"""Integer ALU family: ADD OR ADC SBB AND SUB XOR CMP, TEST, INC/DEC, NOT/NEG.

One handler serves all eight ALU operations and all their encodings: the
operation is opcode bits 3-5 (or ModRM.reg for 0x80-0x83), the width bit 0,
the direction bit 1 (SDM vol. 2, appendix A).

Undefined flags: AND/OR/XOR/TEST clear AF (what Intel and AMD parts do).
"""
from .jit import kernel
from .muldiv import grp3_muldiv
from .operands import (
    MASK,
    check_rm_write,
    flags_add,
    flags_sub,
    get_reg,
    read_rm,
    set_arith,
    set_reg,
    szp,
    write_rm,
)
from .state import AF, CF, D_EXC, D_IMM, D_MOD, D_OP, D_OSZ, D_REG, EFLAGS, OF


@kernel("i", "siiii")
def alu_op(s, op, a, b, size):
    """Compute ALU operation ``op`` (0..7); sets the flags, returns the result."""
    m = MASK[size]
    if op == 0:
        r = a + b
        set_arith(s, flags_add(a, b, r, size))
    elif op == 2:
        r = a + b + (s[EFLAGS] & CF)
        set_arith(s, flags_add(a, b, r, size))
    elif op == 3:
        r = a - b - (s[EFLAGS] & CF)
        set_arith(s, flags_sub(a, b, r, size))
    elif op == 5 or op == 7:
        r = a - b
        set_arith(s, flags_sub(a, b, r, size))
    else:
        if op == 1:
            r = a | b
        elif op == 4:
            r = a & b
        else:
            r = a ^ b
        set_arith(s, szp(r, size))
    return r & m


@kernel("i", "sr")
def op_alu(s, ram):
    op = s[D_OP]
    osz = s[D_OSZ]
    if op < 0x40:
        aop = (op >> 3) & 7
        form = op & 7
        size = 1 if (form & 1) == 0 else osz
        if form >= 4:
            a = get_reg(s, 0, size)
            r = alu_op(s, aop, a, s[D_IMM], size)
            if aop != 7:
                set_reg(s, 0, size, r)
            return 0
        if form & 2:
            # r <- r op r/m
            b = read_rm(s, ram, size)
            if s[D_EXC] >= 0:
                return 0
            r = alu_op(s, aop, get_reg(s, s[D_REG], size), b, size)
            if aop != 7:
                set_reg(s, s[D_REG], size, r)
            return 0
        a = read_rm(s, ram, size)
        if s[D_EXC] >= 0:
            return 0
        b = get_reg(s, s[D_REG], size)
    elif op <= 0x83:
        aop = s[D_REG]
        size = 1 if (op & 1) == 0 else osz
        b = s[D_IMM]
        if op == 0x83:
            b = (b - 0x100 if b & 0x80 else b) & MASK[size]
        a = read_rm(s, ram, size)
        if s[D_EXC] >= 0:
            return 0
    else:
        # TEST: 84/85 r/m,r and A8/A9 acc,imm.
        size = 1 if (op & 1) == 0 else osz
        if op >= 0xA8:
            a = get_reg(s, 0, size)
            b = s[D_IMM]
        else:
            a = read_rm(s, ram, size)
            if s[D_EXC] >= 0:
                return 0
            b = get_reg(s, s[D_REG], size)
        set_arith(s, szp(a & b, size))
        return 0
    if aop == 7:
        alu_op(s, 7, a, b, size)
        return 0
    # Memory destination: make sure the write will succeed before flags change.
    if s[D_MOD] != 3 and not check_rm_write(s, ram, size):
        return 0
    f = s[EFLAGS]
    r = alu_op(s, aop, a, b, size)
    if not write_rm(s, ram, size, r):
        s[EFLAGS] = f
    return 0


@kernel("i", "siib")
def inc_dec(s, a, size, dec):
    """INC/DEC: like ADD/SUB 1 but CF is preserved."""
    cf = s[EFLAGS] & CF
    if dec:
        r = a - 1
        f = flags_sub(a, 1, r, size)
    else:
        r = a + 1
        f = flags_add(a, 1, r, size)
    set_arith(s, (f & ~CF) | cf)
    return r & MASK[size]


@kernel("i", "sr")
def op_incdec(s, ram):
    op = s[D_OP]
    r = op & 7
    size = s[D_OSZ]
    set_reg(s, r, size, inc_dec(s, get_reg(s, r, size), size, op >= 0x48))
    return 0


@kernel("i", "sr")
def op_grp3(s, ram):
    """F6/F7: TEST, NOT, NEG, MUL, IMUL, DIV, IDIV."""
    op = s[D_OP]
    size = 1 if op == 0xF6 else s[D_OSZ]
    sub = s[D_REG]
    if sub >= 4:
        return grp3_muldiv(s, ram, sub, size)
    a = read_rm(s, ram, size)
    if s[D_EXC] >= 0:
        return 0
    if sub < 2:
        set_arith(s, szp(a & s[D_IMM], size))
        return 0
    if not check_rm_write(s, ram, size):
        return 0
    if sub == 2:
        write_rm(s, ram, size, (~a) & MASK[size])
        return 0
    r = (-a) & MASK[size]
    f = flags_sub(0, a, -a, size)
    # NEG: CF = (operand != 0), which flags_sub(0, a) already gives.
    write_rm(s, ram, size, r)
    if s[D_EXC] < 0:
        set_arith(s, f)
    return 0


_unused = (AF, OF)
