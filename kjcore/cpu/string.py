"""String family: MOVS CMPS STOS LODS SCAS INS OUTS, with REP/REPE/REPNE.

REP MOVS and REP STOS going forward run as page-chunked block copies: each
chunk is the run of elements that stays inside one source page and one
destination page (and inside the segment limits); both pages are
translated with full checks first, then the bytes move in one loop over
the flat RAM (8 bytes at a time when aligned).  A fault at a page boundary
leaves ESI/EDI/ECX describing exactly the elements already done, and EIP
at the instruction, as the hardware does (SDM vol. 2, REP: "the
instruction can be restarted").  Overlapping forward copies closer than
one chunk fall back to element order, so the result is always the
architectural one.

Every element is one step of the run's budget: the handler does at most
``D_BUDGET`` elements (the steps left), counts them in ``D_DONE`` (the run
loop charges them), and when the budget ends inside the string it stops with
EIP still on the instruction, as if an interrupt window had opened (SDM
vol. 2, REP: registers describe the progress and the instruction resumes).
So one step never runs unbounded, whatever ECX says, and a run's budget
bounds the bytes a guest can move.
"""
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .io import io_allowed, port_io
from .jit import kernel
from .memory import (
    ACC_WRITE,
    check_write_mem,
    in_rom,
    phys_read,
    phys_write,
    read_mem,
    seg_lin,
    translate,
    user_acc,
    write_mem,
)
from .operands import MASK, flags_sub, get_reg, set_arith, set_reg
from .state import (
    A_CODE,
    A_E,
    D_ASZ,
    D_BUDGET,
    D_DONE,
    D_EXC,
    D_OP,
    D_OSZ,
    D_REP,
    D_SEGOVR,
    D_START,
    DF,
    DS,
    EAX,
    ECX,
    EDI,
    EDX,
    EFLAGS,
    EIP,
    ES,
    ESI,
    M32,
    MH_N,
    S_ATTR,
    SEG,
    ZF,
)


@kernel("v", "siii")
def _adv(s, r, delta, am):
    s[r] = (s[r] & ~am & M32) | ((s[r] + delta) & am)


@kernel("ii", "siiiib")
def _chunk(s, seg, off, size, am, write):
    """Elements from seg:off that stay in one page and inside the segment."""
    b = SEG + 4 * seg
    lin = seg_lin(s, seg, off, size, write)
    if lin < 0:
        return -1, 0
    n = (4096 - (lin & 0xFFF)) // size
    attr = s[b + S_ATTR]
    if (attr & (A_CODE | A_E)) == A_E:
        return lin, 1 if n > 0 else 0          # expand-down: element at a time
    room = (min(s[b + 2], am) - off + 1) // size
    return lin, min(n, room)


@intrinsic
def _memmove(typingctx, ram, dp, sp, nb):
    """``memmove(&ram[dp], &ram[sp], nb)``; the caller has checked both ranges."""
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        cgutils.raw_memmove(builder, builder.gep(arr.data, [args[1]]),
                            builder.gep(arr.data, [args[2]]), args[3], 1)
        return context.get_dummy_value()
    return types.void(ram, types.int64, types.int64, types.int64), codegen


@intrinsic
def _memset(typingctx, ram, dp, nb, byte):
    """``memset(&ram[dp], byte, nb)``; the caller has checked the range."""
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        cgutils.memset(builder, builder.gep(arr.data, [args[1]]), args[2],
                       builder.trunc(args[3], cgutils.int8_t))
        return context.get_dummy_value()
    return types.void(ram, types.int64, types.int64, types.int64), codegen


@kernel("v", "riiii")
def _copy(ram, dp, sp, nb, size):
    if dp > sp and dp < sp + nb:
        # Forward overlap: element order gives the architectural result.
        for i in range(0, nb, size):
            v = 0
            for k in range(size):
                v |= np.int64(ram[sp + i + k]) << (8 * k)
            for k in range(size):
                ram[dp + i + k] = (v >> (8 * k)) & 0xFF
        return
    # No forward overlap: a forward element-by-element copy and memmove agree.
    _memmove(ram, dp, sp, nb)


@kernel("v", "rqiiii")
def _fill(ram, ram64, dp, nb, size, val):
    if size == 1:
        _memset(ram, dp, nb, val & 0xFF)
        return
    if ((dp | nb) & 7) == 0 and dp + nb <= ram64.shape[0] * 8:
        pat = val & MASK[size]
        if size == 2:
            pat |= pat << 16
        pat |= pat << 32
        d8 = dp >> 3
        for i in range(nb >> 3):
            ram64[d8 + i] = pat
        return
    for i in range(nb):
        ram[dp + i] = (val >> (8 * (i % size))) & 0xFF


@kernel("i", "srqiiii")
def _rep_fast(s, ram, ram64, op, size, am, src):
    movs = op <= 0xA5
    nram = ram.shape[0]
    acc = user_acc(s)
    val = get_reg(s, EAX, size)
    budget = s[D_BUDGET]
    while True:
        count = s[ECX] & am
        if count == 0:
            return 0
        if s[D_DONE] >= budget:
            s[EIP] = s[D_START]                 # out of steps; the instruction resumes
            return 0
        dlin, n = _chunk(s, ES, s[EDI] & am, size, am, True)
        if dlin < 0:
            return 0
        if movs:
            slin, n2 = _chunk(s, src, s[ESI] & am, size, am, False)
            if slin < 0:
                return 0
            n = min(n, n2)
        n = min(n, count, budget - s[D_DONE])
        if n <= 0:
            # An element straddles a page (or the segment edge): do it alone.
            if movs:
                v = read_mem(s, ram, src, s[ESI] & am, size)
                if s[D_EXC] >= 0:
                    return 0
                write_mem(s, ram, ES, s[EDI] & am, size, v)
            else:
                write_mem(s, ram, ES, s[EDI] & am, size, val)
            if s[D_EXC] >= 0:
                return 0
            n = 1
        else:
            nb = n * size
            sp = 0
            if movs:
                sp = translate(s, ram, slin, acc)
                if sp < 0:
                    return 0
            dp = translate(s, ram, dlin, acc | ACC_WRITE)
            if dp < 0:
                return 0
            # past RAM or into the ROM: element by element (phys_write drops or misses)
            inside = dp + nb <= nram and (not movs or sp + nb <= nram) and not in_rom(s, dp, nb)
            if not inside:
                for i in range(n):
                    v = phys_read(s, ram, sp + i * size, size) if movs else val
                    phys_write(s, ram, dp + i * size, size, v)
            elif movs:
                _copy(ram, dp, sp, nb, size)
            else:
                _fill(ram, ram64, dp, nb, size, val)
        if movs:
            s[ESI] = (s[ESI] & ~am & M32) | ((s[ESI] + n * size) & am)
        s[EDI] = (s[EDI] & ~am & M32) | ((s[EDI] + n * size) & am)
        s[ECX] = (s[ECX] & ~am & M32) | ((count - n) & am)
        s[D_DONE] += n


@kernel("i", "srqc")
def op_string(s, ram, ram64, con):
    op = s[D_OP]
    size = 1 if (op & 1) == 0 else s[D_OSZ]
    am = M32 if s[D_ASZ] == 4 else 0xFFFF
    rep = s[D_REP]
    delta = -size if (s[EFLAGS] & DF) else size
    src = s[D_SEGOVR] if s[D_SEGOVR] >= 0 else DS
    if rep:
        if (s[ECX] & am) == 0:
            return 0
        # (with memory hooks set every element goes through read_mem/write_mem: memhook.py)
        if delta > 0 and s[MH_N] == 0 and op in (0xA4, 0xA5, 0xAA, 0xAB):
            return _rep_fast(s, ram, ram64, op, size, am, src)
    kind = op & 0xFE
    if kind == 0x6C or kind == 0x6E:
        if not io_allowed(s):
            return 0
    budget = s[D_BUDGET]
    while True:
        if kind == 0xA4:                         # MOVS
            v = read_mem(s, ram, src, s[ESI] & am, size)
            if s[D_EXC] >= 0:
                return 0
            write_mem(s, ram, ES, s[EDI] & am, size, v)
            if s[D_EXC] >= 0:
                return 0
            _adv(s, ESI, delta, am)
            _adv(s, EDI, delta, am)
        elif kind == 0xAA:                       # STOS
            write_mem(s, ram, ES, s[EDI] & am, size, get_reg(s, EAX, size))
            if s[D_EXC] >= 0:
                return 0
            _adv(s, EDI, delta, am)
        elif kind == 0xAC:                       # LODS
            v = read_mem(s, ram, src, s[ESI] & am, size)
            if s[D_EXC] >= 0:
                return 0
            set_reg(s, EAX, size, v)
            _adv(s, ESI, delta, am)
        elif kind == 0xA6:                       # CMPS: [ESI] - [EDI]
            a = read_mem(s, ram, src, s[ESI] & am, size)
            if s[D_EXC] >= 0:
                return 0
            b = read_mem(s, ram, ES, s[EDI] & am, size)
            if s[D_EXC] >= 0:
                return 0
            set_arith(s, flags_sub(a, b, a - b, size))
            _adv(s, ESI, delta, am)
            _adv(s, EDI, delta, am)
        elif kind == 0xAE:                       # SCAS: eAX - [EDI]
            b = read_mem(s, ram, ES, s[EDI] & am, size)
            if s[D_EXC] >= 0:
                return 0
            a = get_reg(s, EAX, size)
            set_arith(s, flags_sub(a, b, a - b, size))
            _adv(s, EDI, delta, am)
        elif kind == 0x6C:                       # INS: write check precedes the port read
            if not check_write_mem(s, ram, ES, s[EDI] & am, size):
                return 0                         # fault before the port is read
            st, v = port_io(s, con, s[EDX] & 0xFFFF, size, False, 0)
            if st != 0:
                return st
            write_mem(s, ram, ES, s[EDI] & am, size, v)
            if s[D_EXC] >= 0:
                return 0
            _adv(s, EDI, delta, am)
        else:                                    # OUTS
            v = read_mem(s, ram, src, s[ESI] & am, size)
            if s[D_EXC] >= 0:
                return 0
            st, _ = port_io(s, con, s[EDX] & 0xFFFF, size, True, v)
            if st != 0:
                return st
            _adv(s, ESI, delta, am)
        s[D_DONE] += 1
        if not rep:
            return 0
        c = (s[ECX] - 1) & am
        s[ECX] = (s[ECX] & ~am & M32) | c
        if c == 0:
            return 0
        if kind == 0xA6 or kind == 0xAE:
            zf = (s[EFLAGS] & ZF) != 0
            if (rep == 0xF3 and not zf) or (rep == 0xF2 and zf):
                return 0
        if s[D_DONE] >= budget:
            s[EIP] = s[D_START]                 # out of steps; the instruction resumes
            return 0
