"""System instruction family: descriptor-table registers, control and debug
registers, MSRs, CPUID, RDTSC, HLT, ARPL/LAR/LSL/VERR/VERW, UD2.

Privileged instructions raise #GP(0) at CPL > 0.  Writes to CR0, CR3, CR4
and EFER drop the matching TLB entries; the next fetch uses the new mode
(so the instruction after ``mov %eax, %cr0`` is fetched with paging as it
now is, as on the hardware).  CPUID describes a P6-class part without FPU:
PSE, TSC, MSR, PAE, CX8, PGE, CMOV and (extended leaf) NX.  The time stamp
counter counts executed instructions.
"""
from .jit import kernel
from .memory import exc, read_mem, sys_read, sys_write, tlb_flush, tlb_flush_page, write_mem
from .operands import get_reg, read_rm, set_reg, write_rm
from .segments import desc_attr, desc_base, desc_limit, read_desc, set_cache
from .state import (
    A_CODE,
    A_E,
    A_P,
    A_S,
    A_USABLE,
    A_W,
    CPL,
    CPU_SIGNATURE,
    CR0,
    CR0_CD,
    CR0_ET,
    CR0_NW,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR0_WP,
    CR2,
    CR3,
    CR4,
    CR4_DE,
    CR4_PAE,
    CR4_PGE,
    CR4_PSE,
    CR4_TSD,
    CR4_VALID,
    D_EAOFF,
    D_EASEG,
    D_EXC,
    D_MOD,
    D_OP,
    D_OSZ,
    D_REG,
    D_RM,
    DR0,
    EAX,
    EBX,
    ECX,
    EDX,
    EFER,
    EFER_NXE,
    EFLAGS,
    GDTR_BASE,
    GDTR_LIMIT,
    GP_,
    IDTR_BASE,
    IDTR_LIMIT,
    LDTR,
    M32,
    NP_,
    S_ATTR,
    S_SEL,
    SEG,
    ST_HLT,
    STEPS,
    SYSENTER_CS,
    SYSENTER_EIP,
    SYSENTER_ESP,
    TR,
    TSC,
    UD_,
    ZF,
)

CPUID_FEATURES = ((1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 8) | (1 << 13)
                  | (1 << 15))
MSR_TSC = 0x10
MSR_EFER = 0xC0000080

D_ERR_SLOT = 97


@kernel("b", "s")
def _priv(s):
    if s[CPL] != 0:
        exc(s, GP_, 0)
        return False
    return True


@kernel("i", "si")
def write_cr0(s, v):
    v = (v | CR0_ET) & M32
    if ((v & CR0_PG) and not (v & CR0_PE)) or ((v & CR0_NW) and not (v & CR0_CD)):
        exc(s, GP_, 0)
        return 0
    if (v & CR0_PG) and (s[CR4] & CR4_PAE):
        pass        # PDPTEs are read at walk time (see docs/cpu.rst)
    old = s[CR0]
    s[CR0] = v
    if (old ^ v) & (CR0_PG | CR0_WP | CR0_PE):
        tlb_flush(s, False)
    return 0                                   # PE = 0: real mode, descriptor caches kept


@kernel("v", "si")
def write_cr4(s, v):
    if v & ~CR4_VALID:
        exc(s, GP_, 0)
        return
    old = s[CR4]
    s[CR4] = v & M32
    if (old ^ v) & (CR4_PAE | CR4_PGE | CR4_PSE):
        tlb_flush(s, False)


@kernel("biii", "srib")
def _selector_check(s, ram, sel, lar):
    """Common part of LAR/LSL/VERR/VERW: (ok, lo, hi, attr) for a visible descriptor."""
    if (sel & 0xFFFC) == 0:
        return False, 0, 0, 0
    a, lo, hi = read_desc(s, ram, sel, GP_)
    if a < 0:
        if s[D_EXC] == GP_ and s[D_ERR_SLOT] == (sel & 0xFFFC):
            s[D_EXC] = -1                      # outside the table: ZF = 0, no fault
        return False, 0, 0, 0
    attr = desc_attr(hi)
    dpl = (attr >> 5) & 3
    if attr & A_S:
        conforming_code = (attr & A_CODE) and (attr & A_E)
        if not conforming_code and (dpl < s[CPL] or dpl < (sel & 3)):
            return False, lo, hi, attr
        return True, lo, hi, attr
    typ = attr & 0xF
    ok = typ == 1 or typ == 2 or typ == 3 or typ == 9 or typ == 11
    if lar:
        ok = ok or typ == 4 or typ == 5 or typ == 12
    if not ok or dpl < s[CPL] or dpl < (sel & 3):
        return False, lo, hi, attr
    return True, lo, hi, attr


@kernel("v", "sb")
def _set_zf(s, on):
    if on:
        s[EFLAGS] |= ZF
    else:
        s[EFLAGS] &= ~ZF


@kernel("i", "sr")
def _grp6(s, ram):
    sub = s[D_REG]
    osz = s[D_OSZ]
    if sub == 0 or sub == 1:                   # SLDT / STR
        sel = s[SEG + 4 * (LDTR if sub == 0 else TR) + S_SEL]
        if s[D_MOD] == 3:
            set_reg(s, s[D_RM], osz, sel)
        else:
            write_rm(s, ram, 2, sel)
        return 0
    if sub == 2 or sub == 3:                   # LLDT / LTR
        if not _priv(s):
            return 0
        sel = read_rm(s, ram, 2)
        if s[D_EXC] >= 0:
            return 0
        if sub == 2 and (sel & 0xFFFC) == 0:
            s[SEG + 4 * LDTR + S_SEL] = sel
            s[SEG + 4 * LDTR + S_ATTR] = 0
            return 0
        if (sel & 0xFFFC) == 0 or (sel & 4):
            exc(s, GP_, sel & 0xFFFC)
            return 0
        a, lo, hi = read_desc(s, ram, sel, GP_)
        if a < 0:
            return 0
        attr = desc_attr(hi)
        typ = attr & 0x1F                      # S bit included: system types only
        if (sub == 2 and typ != 2) or (sub == 3 and typ != 9 and typ != 1):
            exc(s, GP_, sel & 0xFFFC)
            return 0
        if (attr & A_P) == 0:
            exc(s, NP_, sel & 0xFFFC)
            return 0
        if sub == 3:
            sys_write(s, ram, (a + 4) & M32, 4, hi | 0x200)    # mark the TSS busy
            if s[D_EXC] >= 0:
                return 0
            attr |= 2
        set_cache(s, LDTR if sub == 2 else TR, sel, desc_base(lo, hi), desc_limit(hi, lo), attr)
        return 0
    if sub == 4 or sub == 5:                   # VERR / VERW
        sel = read_rm(s, ram, 2)
        if s[D_EXC] >= 0:
            return 0
        ok, lo, hi, attr = _selector_check(s, ram, sel, True)
        if s[D_EXC] >= 0:
            return 0
        if ok:
            if (attr & A_S) == 0:
                ok = False
            elif sub == 4:
                ok = (attr & A_CODE) == 0 or (attr & A_W) != 0
            else:
                ok = (attr & A_CODE) == 0 and (attr & A_W) != 0
        _set_zf(s, ok)
        return 0
    exc(s, UD_, -1)
    return 0


@kernel("i", "sr")
def _grp7(s, ram):
    sub = s[D_REG]
    if s[D_MOD] == 3 and sub != 4 and sub != 6:
        exc(s, UD_, -1)                        # MONITOR, VMCALL, SWAPGS, ... not present
        return 0
    seg = s[D_EASEG]
    off = s[D_EAOFF]
    if sub == 0 or sub == 1:                   # SGDT / SIDT: full 32-bit base stored
        b = GDTR_BASE if sub == 0 else IDTR_BASE
        write_mem(s, ram, seg, off, 2, s[b + 1])
        if s[D_EXC] < 0:
            write_mem(s, ram, seg, (off + 2) & M32, 4, s[b])
        return 0
    if sub == 2 or sub == 3:                   # LGDT / LIDT
        if not _priv(s):
            return 0
        lim = read_mem(s, ram, seg, off, 2)
        base = read_mem(s, ram, seg, (off + 2) & M32, 4)
        if s[D_EXC] >= 0:
            return 0
        if s[D_OSZ] == 2:
            base &= 0xFFFFFF
        b = GDTR_BASE if sub == 2 else IDTR_BASE
        s[b] = base
        s[b + 1] = lim
        return 0
    if sub == 4:                               # SMSW
        if s[D_MOD] == 3:
            set_reg(s, s[D_RM], s[D_OSZ], s[CR0])
        else:
            write_rm(s, ram, 2, s[CR0] & 0xFFFF)
        return 0
    if sub == 6:                               # LMSW: PE can be set, never cleared
        if not _priv(s):
            return 0
        v = read_rm(s, ram, 2)
        if s[D_EXC] >= 0:
            return 0
        return write_cr0(s, (s[CR0] & ~0xE) | (v & 0xF) | (s[CR0] & 1))
    if sub == 7:                               # INVLPG
        if not _priv(s):
            return 0
        tlb_flush_page(s, (s[SEG + 4 * seg + 1] + off) & M32)
        return 0
    exc(s, UD_, -1)
    return 0


@kernel("i", "sr")
def _mov_cr(s, ram):
    op = s[D_OP]
    n = s[D_REG]
    r = s[D_RM]
    if not _priv(s):
        return 0
    if op == 0x121 or op == 0x123:             # MOV DRn
        if (n == 4 or n == 5) and (s[CR4] & CR4_DE):
            exc(s, UD_, -1)
            return 0
        if n == 4 or n == 5:
            n += 2
        if op == 0x121:
            s[r] = s[DR0 + n]
        else:
            s[DR0 + n] = s[r]
        return 0
    if n == 1 or n > 4:
        exc(s, UD_, -1)
        return 0
    if op == 0x120:
        if n == 0:
            s[r] = s[CR0]
        elif n == 2:
            s[r] = s[CR2]
        elif n == 3:
            s[r] = s[CR3]
        else:
            s[r] = s[CR4]
        return 0
    v = s[r]
    if n == 0:
        return write_cr0(s, v)
    if n == 2:
        s[CR2] = v
    elif n == 3:
        s[CR3] = v
        tlb_flush(s, (s[CR4] & CR4_PGE) != 0)
    else:
        write_cr4(s, v)
    return 0


@kernel("v", "s")
def _cpuid(s):
    leaf = s[EAX]
    a = b = c = d = 0
    if leaf == 0:
        a = 1
        b = 0x756E6547                          # "GenuineIntel"
        d = 0x49656E69
        c = 0x6C65746E
    elif leaf == 1:
        a = CPU_SIGNATURE
        d = CPUID_FEATURES
    elif leaf == 0x80000000:
        a = 0x80000001
    elif leaf == 0x80000001:
        d = 1 << 20                             # NX
    s[EAX] = a
    s[EBX] = b
    s[ECX] = c
    s[EDX] = d


@kernel("v", "sb")
def _msr(s, write):
    if not _priv(s):
        return
    idx = s[ECX]
    if write:
        v = s[EAX]
        hi = s[EDX]
        if idx == MSR_EFER:
            if hi != 0 or (v & ~EFER_NXE):
                exc(s, GP_, 0)
                return
            if (s[EFER] ^ v) & EFER_NXE:
                tlb_flush(s, False)
            s[EFER] = v
        elif idx == MSR_TSC:
            s[TSC] = ((hi << 32) | v) - s[STEPS]
        elif idx == 0x174:
            s[SYSENTER_CS] = v
        elif idx == 0x175:
            s[SYSENTER_ESP] = v
        elif idx == 0x176:
            s[SYSENTER_EIP] = v
        else:
            exc(s, GP_, 0)
        return
    if idx == MSR_EFER:
        v = s[EFER]
    elif idx == MSR_TSC:
        v = s[TSC] + s[STEPS]
    elif idx == 0x174:
        v = s[SYSENTER_CS]
    elif idx == 0x175:
        v = s[SYSENTER_ESP]
    elif idx == 0x176:
        v = s[SYSENTER_EIP]
    else:
        exc(s, GP_, 0)
        return
    s[EAX] = v & M32
    s[EDX] = (v >> 32) & M32


@kernel("i", "sr")
def _lar_lsl(s, ram):
    sel = read_rm(s, ram, 2)
    if s[D_EXC] >= 0:
        return 0
    ok, lo, hi, attr = _selector_check(s, ram, sel, s[D_OP] == 0x102)
    if s[D_EXC] >= 0:
        return 0
    _set_zf(s, ok)
    if ok:
        if s[D_OP] == 0x102:
            set_reg(s, s[D_REG], s[D_OSZ], hi & 0x00F0FF00)
        else:
            set_reg(s, s[D_REG], s[D_OSZ], desc_limit(hi, lo))
    return 0


@kernel("i", "sr")
def op_sys(s, ram):
    op = s[D_OP]
    if op == 0xF4:                             # HLT
        if _priv(s):
            return ST_HLT
        return 0
    if (op == 0x100 or op == 0x102 or op == 0x103 or op == 0x63) and (s[CR0] & CR0_PE) == 0:
        exc(s, UD_, -1)                        # LLDT, LTR, LAR, ARPL, ...: protected mode only
        return 0
    if op == 0x100:
        return _grp6(s, ram)
    if op == 0x101:
        return _grp7(s, ram)
    if op == 0x102 or op == 0x103:
        return _lar_lsl(s, ram)
    if op >= 0x120 and op <= 0x123:
        return _mov_cr(s, ram)
    if op == 0x106:                            # CLTS
        if _priv(s):
            s[CR0] &= ~CR0_TS
        return 0
    if op == 0x108 or op == 0x109:             # INVD / WBINVD: no caches modelled
        _priv(s)
        return 0
    if op == 0x10B:                            # UD2
        exc(s, UD_, -1)
        return 0
    if op == 0x1A2:
        _cpuid(s)
        return 0
    if op == 0x131:                            # RDTSC
        if (s[CR4] & CR4_TSD) and s[CPL] != 0:
            exc(s, GP_, 0)
            return 0
        tsc = s[TSC] + s[STEPS]                 # instructions retired so far
        s[EAX] = tsc & M32
        s[EDX] = (tsc >> 32) & M32
        return 0
    if op == 0x130 or op == 0x132:
        _msr(s, op == 0x130)
        return 0
    if op == 0x63:                             # ARPL r/m16, r16
        dst = read_rm(s, ram, 2)
        if s[D_EXC] >= 0:
            return 0
        src = get_reg(s, s[D_REG], 2)
        if (dst & 3) < (src & 3):
            if not write_rm(s, ram, 2, (dst & ~3) | (src & 3)):
                return 0
            _set_zf(s, True)
        else:
            _set_zf(s, False)
        return 0
    exc(s, UD_, -1)
    return 0


_unused = (A_USABLE, CR0_PG, EBX, EDX, sys_read, IDTR_LIMIT, GDTR_LIMIT, D_EASEG)
