"""Stack family: PUSH/POP (registers, immediates, r/m, segment registers),
PUSHA/POPA, PUSHF/POPF, ENTER/LEAVE.

Every instruction reads and writes memory first and commits registers
last, so a fault leaves the registers as they were (precise exceptions).
A 32-bit push of a segment register writes the zero-extended selector (one
of the two behaviours SDM vol. 2 PUSH allows; QEMU/Unicorn do the same,
while recent Intel cores write only the low 16 bits).
"""
from .jit import kernel
from .memory import exc, read_mem, write_mem
from .operands import (
    get_reg,
    push,
    set_reg,
    sp_add,
    stack32,
    stack_read,
    write_rm,
)
from .segments import load_seg
from .state import (
    AC,
    AF,
    CF,
    CPL,
    CS,
    D_BASE,
    D_EAOFF,
    D_EXC,
    D_IMM,
    D_IMM2,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    DF,
    EBP,
    EFLAGS,
    ESP,
    GP_,
    ID,
    IF,
    IOPL,
    M32,
    NT,
    OF,
    PF,
    RF,
    SEG,
    SF,
    SS,
    TF,
    UD_,
    VM,
    ZF,
)

POPF_BITS = CF | PF | AF | ZF | SF | TF | DF | OF | NT | AC | ID


@kernel("v", "siib")
def write_eflags(s, v, size, popf):
    """Load EFLAGS from POPF/IRET image ``v`` obeying CPL/IOPL rules (SDM vol. 2, POPF)."""
    cpl = s[CPL]
    iopl = (s[EFLAGS] >> 12) & 3
    mask = POPF_BITS
    if cpl == 0:
        mask |= IOPL | IF
    elif cpl <= iopl:
        mask |= IF
    if not popf:
        mask |= RF
    if size == 2:
        mask &= 0xFFFF
    s[EFLAGS] = ((s[EFLAGS] & ~mask) | (v & mask) | 2) & ~0x8028 & M32


@kernel("i", "srii")
def stack_read_at(s, ram, size, off):
    return read_mem(s, ram, SS, off, size)


@kernel("i", "sri")
def _enter(s, ram, osz):
    """ENTER imm16, imm8 (SDM vol. 2, ENTER), committed only if no fault."""
    alloc = s[D_IMM]
    level = s[D_IMM2] & 31
    big = stack32(s)
    am = M32 if big else 0xFFFF
    sp = s[ESP] & am
    bp = s[EBP] & am
    sp = (sp - osz) & am
    write_mem(s, ram, SS, sp, osz, get_reg(s, EBP, osz))
    if s[D_EXC] >= 0:
        return 0
    frame = sp
    if level > 0:
        for _ in range(1, level):
            bp = (bp - osz) & am
            v = stack_read_at(s, ram, osz, bp)
            if s[D_EXC] >= 0:
                return 0
            sp = (sp - osz) & am
            write_mem(s, ram, SS, sp, osz, v)
            if s[D_EXC] >= 0:
                return 0
        sp = (sp - osz) & am
        write_mem(s, ram, SS, sp, osz, frame)
        if s[D_EXC] >= 0:
            return 0
    sp = (sp - alloc) & am
    set_reg(s, EBP, osz, frame)
    if big:
        s[ESP] = sp
    else:
        s[ESP] = (s[ESP] & 0xFFFF0000) | sp
    return 0


@kernel("i", "sr")
def op_stack(s, ram):
    op = s[D_OP]
    osz = s[D_OSZ]
    if op >= 0x50 and op <= 0x57:
        push(s, ram, osz, get_reg(s, op & 7, osz))
        return 0
    if op >= 0x58 and op <= 0x5F:
        v = stack_read(s, ram, osz, 0)
        if s[D_EXC] < 0:
            sp_add(s, osz)
            set_reg(s, op & 7, osz, v)
        return 0
    if op == 0x68:
        push(s, ram, osz, s[D_IMM])
        return 0
    if op == 0x6A:
        v = s[D_IMM]
        push(s, ram, osz, (v | 0xFFFFFF00) if v & 0x80 else v)
        return 0
    if op == 0x8F:                               # POP r/m
        if s[D_REG] != 0:
            exc(s, UD_, -1)
            return 0
        v = stack_read(s, ram, osz, 0)
        if s[D_EXC] >= 0:
            return 0
        old = s[ESP]
        sp_add(s, osz)
        if s[D_MOD] != 3 and s[D_BASE] == ESP:
            # The address is computed with the incremented ESP (SDM: POP).
            s[D_EAOFF] = (s[D_EAOFF] + osz) & M32
        if not write_rm(s, ram, osz, v):
            s[ESP] = old
        return 0
    if op == 0x9C:                               # PUSHF: VM and RF read as 0
        push(s, ram, osz, s[EFLAGS] & ~(VM | RF))
        return 0
    if op == 0x9D:                               # POPF
        v = stack_read(s, ram, osz, 0)
        if s[D_EXC] < 0:
            sp_add(s, osz)
            write_eflags(s, v, osz, True)
        return 0
    if op == 0x60:                               # PUSHA
        sp = s[ESP]
        for i in range(8):
            v = sp if i == ESP else s[i]
            off = (sp - (i + 1) * osz) & (M32 if stack32(s) else 0xFFFF)
            write_mem(s, ram, SS, off, osz, v)
            if s[D_EXC] >= 0:
                return 0
        sp_add(s, -8 * osz)
        return 0
    if op == 0x61:                               # POPA (the ESP image is skipped)
        # Read all eight slots first (any may fault), then commit.
        for i in range(8):
            stack_read(s, ram, osz, i * osz)
            if s[D_EXC] >= 0:
                return 0
        for i in range(8):
            r = 7 - i
            if r != ESP:
                set_reg(s, r, osz, stack_read(s, ram, osz, i * osz))
        sp_add(s, 8 * osz)
        return 0
    if op == 0xC9:                               # LEAVE
        big = stack32(s)
        bp = s[EBP] if big else s[EBP] & 0xFFFF
        v = stack_read_at(s, ram, osz, bp)
        if s[D_EXC] >= 0:
            return 0
        if big:
            s[ESP] = (bp + osz) & M32
        else:
            s[ESP] = (s[ESP] & 0xFFFF0000) | ((bp + osz) & 0xFFFF)
        set_reg(s, EBP, osz, v)
        return 0
    if op == 0xC8:
        return _enter(s, ram, osz)
    # Segment registers: 06/0E/16/1E push, 07/17/1F pop, 0F A0/A1/A8/A9 FS/GS.
    if op >= 0x100:
        seg = 4 if op < 0x1A8 else 5
        is_pop = (op & 1) == 1
    else:
        seg = (op >> 3) & 3
        is_pop = (op & 1) == 1
    if not is_pop:
        push(s, ram, osz, s[SEG + 4 * seg])
        return 0
    v = stack_read(s, ram, osz, 0)
    if s[D_EXC] >= 0:
        return 0
    if load_seg(s, ram, seg, v & 0xFFFF):
        sp_add(s, osz)
    return 0


_unused = (CS, GP_, IF)
