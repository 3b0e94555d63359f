"""Near control transfer family: Jcc, JMP, CALL, RET, LOOP/LOOPcc/JCXZ, and
group 5 (INC/DEC r/m, indirect CALL/JMP near and far, PUSH r/m).

The step loop has already advanced EIP past the instruction; a branch
overwrites it.  A target outside the CS limit is #GP(0) raised by the
branch itself, with nothing committed (SDM vol. 2, JMP/CALL/RET).
"""
from .alu import inc_dec
from .far import far_call, far_jmp
from .jit import kernel
from .memory import exc, read_mem
from .operands import (
    MASK,
    check_rm_write,
    cond,
    push,
    read_rm,
    sp_add,
    stack_read,
    write_rm,
)
from .state import (
    CS,
    D_ASZ,
    D_EAOFF,
    D_EASEG,
    D_EXC,
    D_IMM,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    ECX,
    EFLAGS,
    EIP,
    GP_,
    M32,
    S_LIMIT,
    SEG,
    UD_,
    ZF,
)


@kernel("b", "sii")
def branch(s, target, osz):
    """Jump to ``target`` (already relative-resolved); False on #GP."""
    target &= M32 if osz == 4 else 0xFFFF
    if target > s[SEG + 4 * CS + S_LIMIT]:
        exc(s, GP_, 0)
        return False
    s[EIP] = target
    return True


@kernel("i", "ii")
def rel(v, size):
    if size == 1:
        return v - 0x100 if v & 0x80 else v
    if size == 2:
        return v - 0x10000 if v & 0x8000 else v
    return v - 0x100000000 if v & 0x80000000 else v


@kernel("i", "sr")
def op_jump(s, ram):
    op = s[D_OP]
    osz = s[D_OSZ]
    nxt = s[EIP]
    if op >= 0x70 and op <= 0x7F:
        if cond(s, op & 15):
            branch(s, nxt + rel(s[D_IMM], 1), osz)
        return 0
    if op >= 0x180:
        if cond(s, op & 15):
            branch(s, nxt + rel(s[D_IMM], osz), osz)
        return 0
    if op == 0xEB:
        branch(s, nxt + rel(s[D_IMM], 1), osz)
        return 0
    if op == 0xE9:
        branch(s, nxt + rel(s[D_IMM], osz), osz)
        return 0
    if op == 0xE8:
        t = (nxt + rel(s[D_IMM], osz)) & MASK[osz]
        if t > s[SEG + 4 * CS + S_LIMIT]:
            exc(s, GP_, 0)
            return 0
        if push(s, ram, osz, nxt):
            s[EIP] = t
        return 0
    if op == 0xC3 or op == 0xC2:
        t = stack_read(s, ram, osz, 0)
        if s[D_EXC] >= 0:
            return 0
        if branch(s, t, osz):
            sp_add(s, osz + (s[D_IMM] if op == 0xC2 else 0))
        return 0
    # E0..E3: LOOPNE, LOOPE, LOOP, JCXZ; the count register follows the address size.
    cm = M32 if s[D_ASZ] == 4 else 0xFFFF
    c = s[ECX] & cm
    if op == 0xE3:
        if c == 0:
            branch(s, nxt + rel(s[D_IMM], 1), osz)
        return 0
    c = (c - 1) & cm
    take = c != 0
    if op == 0xE0:
        take = take and (s[EFLAGS] & ZF) == 0
    elif op == 0xE1:
        take = take and (s[EFLAGS] & ZF) != 0
    if take and not branch(s, nxt + rel(s[D_IMM], 1), osz):
        return 0
    s[ECX] = (s[ECX] & ~cm & M32) | c
    return 0


@kernel("i", "sr")
def op_grp5(s, ram):
    op = s[D_OP]
    sub = s[D_REG]
    osz = s[D_OSZ]
    if op == 0xFE:
        if sub > 1:
            exc(s, UD_, -1)
            return 0
        size = 1
    else:
        size = osz
    if sub < 2:
        a = read_rm(s, ram, size)
        if s[D_EXC] >= 0 or not check_rm_write(s, ram, size):
            return 0
        f = s[EFLAGS]
        r = inc_dec(s, a, size, sub == 1)
        if not write_rm(s, ram, size, r):
            s[EFLAGS] = f
        return 0
    if sub == 7:
        exc(s, UD_, -1)
        return 0
    if sub == 3 or sub == 5:                     # far pointer m16:16/32
        if s[D_MOD] == 3:
            exc(s, UD_, -1)
            return 0
        off = read_mem(s, ram, s[D_EASEG], s[D_EAOFF], osz)
        if s[D_EXC] >= 0:
            return 0
        sel = read_mem(s, ram, s[D_EASEG], (s[D_EAOFF] + osz) & M32, 2)
        if s[D_EXC] >= 0:
            return 0
        if sub == 3:
            return far_call(s, ram, sel, off, osz)
        return far_jmp(s, ram, sel, off, osz)
    v = read_rm(s, ram, osz)
    if s[D_EXC] >= 0:
        return 0
    if sub == 2:                                 # CALL near r/m
        if v > s[SEG + 4 * CS + S_LIMIT]:
            exc(s, GP_, 0)
            return 0
        if push(s, ram, osz, s[EIP]):
            s[EIP] = v
        return 0
    if sub == 4:
        branch(s, v, osz)
        return 0
    push(s, ram, osz, v)                         # PUSH r/m
    return 0
