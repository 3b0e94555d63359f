"""Far control transfers and far-pointer loads: JMP/CALL ptr16:32, RETF,
IRET, LDS/LES/LSS/LFS/LGS (SDM vol. 3, 5.8).

Direct code-segment targets are supported at the same privilege level;
RETF and IRET may return to an outer ring (stack switch from the popped
SS:ESP, data segments the outer ring may not use become null).  Call gates
and task switches are not modelled: a gate or TSS selector as a far target
stops the run with Status.UNSUPPORTED.  In real mode every selector is a
plain paragraph number (``segments.check_code_target``): no descriptor is
read, no privilege changes.
"""
from .jit import kernel
from .memory import exc, read_mem, write_mem
from .operands import get_reg, set_reg, sp_add, stack32, stack_read
from .segments import (
    check_code_target,
    load_seg,
    null_outer_segments,
    read_desc,
    real_mode,
    set_cache,
)
from .stack import write_eflags
from .state import (
    A_S,
    CPL,
    CS,
    D_EAOFF,
    D_EASEG,
    D_EXC,
    D_IMM,
    D_IMM2,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    DS,
    EFLAGS,
    EIP,
    ES,
    ESP,
    FS,
    GP_,
    GS,
    M32,
    NT,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    S_SEL,
    SEG,
    SS,
    ST_UNSUPPORTED,
    UD_,
    VM,
)


@kernel("b", "sri")
def _system_target(s, ram, sel):
    """True if ``sel`` names a system descriptor (gate/TSS): unsupported."""
    if (sel & 0xFFFC) == 0 or real_mode(s):
        return False
    a, lo, hi = read_desc(s, ram, sel, GP_)
    if a < 0:
        s[D_EXC] = -1
        return False
    return ((hi >> 8) & A_S) == 0


@kernel("i", "si")
def _cs_selector(s, sel):
    """The CS selector a far JMP/CALL to ``sel`` loads: RPL = CPL in protected mode."""
    if real_mode(s):
        return sel & 0xFFFF
    return (sel & 0xFFFC) | s[CPL]


@kernel("i", "sriii")
def far_jmp(s, ram, sel, off, osz):
    if _system_target(s, ram, sel):
        return ST_UNSUPPORTED
    ok, base, limit, attr = check_code_target(s, ram, sel, -1)
    if not ok:
        return 0
    if osz == 2:
        off &= 0xFFFF
    if off > limit:
        exc(s, GP_, 0)
        return 0
    set_cache(s, CS, _cs_selector(s, sel), base, limit, attr)
    s[EIP] = off
    return 0


@kernel("i", "sriii")
def far_call(s, ram, sel, off, osz):
    if _system_target(s, ram, sel):
        return ST_UNSUPPORTED
    ok, base, limit, attr = check_code_target(s, ram, sel, -1)
    if not ok:
        return 0
    if osz == 2:
        off &= 0xFFFF
    if off > limit:
        exc(s, GP_, 0)
        return 0
    am = M32 if stack32(s) else 0xFFFF
    sp = s[ESP]
    write_mem(s, ram, SS, (sp - osz) & am, osz, s[SEG + 4 * CS + S_SEL])
    if s[D_EXC] >= 0:
        return 0
    write_mem(s, ram, SS, (sp - 2 * osz) & am, osz, s[EIP])
    if s[D_EXC] >= 0:
        return 0
    sp_add(s, -2 * osz)
    set_cache(s, CS, _cs_selector(s, sel), base, limit, attr)
    s[EIP] = off
    return 0


@kernel("i", "sriib")
def far_return(s, ram, osz, extra, iret):
    """RETF (``extra`` = imm16) and IRET; in real mode always to the same level."""
    real = real_mode(s)
    if iret and (s[EFLAGS] & NT) and not real:
        return ST_UNSUPPORTED                     # task return
    off = stack_read(s, ram, osz, 0)
    if s[D_EXC] >= 0:
        return 0
    sel = stack_read(s, ram, osz, osz) & 0xFFFF
    if s[D_EXC] >= 0:
        return 0
    n = 2 * osz
    fl = 0
    if iret:
        fl = stack_read(s, ram, osz, n)
        if s[D_EXC] >= 0:
            return 0
        n += osz
        if (fl & VM) and osz == 4 and s[CPL] == 0 and not real:
            return ST_UNSUPPORTED                 # return to virtual-8086 mode
    rpl = sel & 3
    ok, base, limit, attr = check_code_target(s, ram, sel, rpl)
    if not ok:
        return 0
    if osz == 2:
        off &= 0xFFFF
    if off > limit:
        exc(s, GP_, 0)
        return 0
    if rpl == s[CPL] or real:
        if iret:
            write_eflags(s, fl, osz, False)
        sp_add(s, n + extra)
        set_cache(s, CS, sel, base, limit, attr)
        s[EIP] = off
        return 0
    # Return to an outer ring: pop SS:ESP too and load SS for the new CPL.
    new_sp = stack_read(s, ram, osz, n + extra)
    if s[D_EXC] >= 0:
        return 0
    new_ss = stack_read(s, ram, osz, n + extra + osz) & 0xFFFF
    if s[D_EXC] >= 0:
        return 0
    old_cpl = s[CPL]
    b = SEG + 4 * SS
    sv0, sv1, sv2, sv3 = s[b], s[b + 1], s[b + 2], s[b + 3]
    s[CPL] = rpl
    if not load_seg(s, ram, SS, new_ss):
        s[CPL] = old_cpl
        s[b], s[b + 1], s[b + 2], s[b + 3] = sv0, sv1, sv2, sv3
        return 0
    s[CPL] = old_cpl
    if iret:
        write_eflags(s, fl, osz, False)
    set_cache(s, CS, sel, base, limit, attr)
    s[EIP] = off
    if osz == 2:
        s[ESP] = (s[ESP] & 0xFFFF0000) | (new_sp & 0xFFFF)
    else:
        s[ESP] = new_sp & M32
    null_outer_segments(s)
    return 0


@kernel("i", "sr")
def op_far(s, ram):
    op = s[D_OP]
    osz = s[D_OSZ]
    if op == 0xEA:
        return far_jmp(s, ram, s[D_IMM2], s[D_IMM], osz)
    if op == 0x9A:
        return far_call(s, ram, s[D_IMM2], s[D_IMM], osz)
    if op == 0xCA:
        return far_return(s, ram, osz, s[D_IMM], False)
    if op == 0xCB:
        return far_return(s, ram, osz, 0, False)
    # LES C4, LDS C5, LSS 0F B2, LFS 0F B4, LGS 0F B5: r, m16:16/32.
    if s[D_MOD] == 3:
        exc(s, UD_, -1)
        return 0
    if op == 0xC4:
        seg = ES
    elif op == 0xC5:
        seg = DS
    elif op == 0x1B2:
        seg = SS
    elif op == 0x1B4:
        seg = FS
    else:
        seg = GS
    off = read_mem(s, ram, s[D_EASEG], s[D_EAOFF], osz)
    if s[D_EXC] >= 0:
        return 0
    sel = read_mem(s, ram, s[D_EASEG], (s[D_EAOFF] + osz) & M32, 2)
    if s[D_EXC] >= 0:
        return 0
    if load_seg(s, ram, seg, sel):
        set_reg(s, s[D_REG], osz, off)
    return 0


_unused = (get_reg, S_ATTR, S_BASE, S_LIMIT)
