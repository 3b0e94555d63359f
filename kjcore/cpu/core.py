"""The step loop: decode, dispatch to the family handler, deliver exceptions.

``run(s, ram, ram64, con, max_steps)`` executes up to ``max_steps``
steps and returns a status code (state.ST_*); it never raises for
anything the guest does.  A step is one instruction, or one element of a
REP string instruction: the string handler gets the steps left in
``D_BUDGET``, stops exactly there (registers describing the elements done,
EIP still on the instruction) and reports its elements in ``D_DONE``, so a
16 MiB ``rep movsb`` costs 16M steps of the budget, and a REP INS/OUTS
stopped at a port Python answers is charged for the elements it completed.
The trace ring holds one entry per instruction executed.

EIP is advanced past the instruction before the handler runs (branches
overwrite it); if the handler leaves an exception pending, EIP goes back
to the instruction for faults, stays past it for traps (INT n, INT3,
INTO), and the exception is delivered through the IDT.

The decoder, the family handlers, exception delivery and the 16-bit fast
path are called through ``lazy.py``'s table of entry points; while an entry
is empty the run ends with ``ST_COMPILE_REQUEST`` before anything is done
(Python compiles the kernel and runs again from there).
"""
import numpy as np

from .codestop import bp_hit
from .fastpath import fast_exec, flags_of
from .hotloop import REQUEST, enter_loop, loop16, loop_head
from .isa import F_IO, F_STRING, F_UD
from .jit import kernel
from .lazy import (
    DECODE,
    NFAM,
    RAISE,
    RUN16,
    call_decode,
    call_raise,
    call_run16,
    call_sr,
    call_src,
    call_srqc,
    entry,
)
from .memory import exc
from .state import (
    A_DB,
    BUS_ADDR,
    CS,
    D_BUDGET,
    D_DONE,
    D_ERR,
    D_EXC,
    D_FPAGE,
    D_FPHYS,
    D_NEXT,
    D_SOFT,
    D_START,
    DB_,
    DR0,
    EFLAGS,
    EIP,
    FT_CNT,
    FT_ON,
    HOOK_INT,
    HOOK_VEC,
    JIT_REQ,
    LAST_VEC,
    M32,
    MH_HITS,
    MH_N,
    NBP,
    NO_FAST,
    S_BASE,
    SEG,
    ST_BREAK,
    ST_BUS_ERROR,
    ST_COMPILE_REQUEST,
    ST_HLT,
    ST_HOOK,
    ST_JIT_REQUEST,
    ST_OK,
    ST_STEP_LIMIT,
    ST_TRIPLE_FAULT,
    STEPS,
    STRICT_BUS,
    TF,
    TRACE,
    TRACE_CNT,
    TRACE_N,
    TRACE_POS,
    TSC,
    UD_,
)


@kernel("i", "srqci")
def dispatch(s, ram, ram64, con, fam):
    """Run family ``fam``'s handler through its entry in the table of lazy.py;
    ``ST_COMPILE_REQUEST``, the instruction not begun, while the handler is not compiled."""
    if fam <= F_UD or fam >= NFAM:
        exc(s, UD_, -1)
        return 0
    fn = entry(fam)
    if fn == 0:
        s[JIT_REQ] = fam
        return ST_COMPILE_REQUEST
    if fam == F_STRING:
        return call_srqc(fn, s, ram, ram64, con)
    if fam == F_IO:
        return call_src(fn, s, ram, con)
    return call_sr(fn, s, ram)


@kernel("i", "srqci", entry=True)
def run(s, ram, ram64, con, max_steps):
    n = 0
    status = ST_STEP_LIMIT
    s[BUS_ADDR] = -1
    for k in (DECODE, RAISE):          # every run may need them: compiled before any step
        if entry(k) == 0:
            s[JIT_REQ] = k
            s[STEPS] = 0
            return ST_COMPILE_REQUEST
    cs_base = SEG + 4 * CS + S_BASE
    nbp = s[NBP]
    tp = s[TRACE_POS] & (TRACE_N - 1)   # trace ring position, kept in a register
    # CS and the cached code page, kept in registers while only the fast
    # path runs (it changes neither); reloaded after every decoded instruction.
    cbase = s[cs_base]
    climit = s[cs_base + 1]
    fpage = s[D_FPAGE] if (s[cs_base + 2] & A_DB) else -1
    fphys = s[D_FPHYS]
    nofast = s[NO_FAST] | s[FT_ON] | s[MH_N]   # the full trace and memory hooks need every
    #                                            instruction decoded, every access checked
    stop = False
    request = -1                       # a lazy.py slot to compile before going on
    while n < max_steps:
        start = s[EIP]
        f = s[EFLAGS]
        tf = f & TF
        if tf == 0 and fpage >= 0 and nofast == 0:
            # Fast path.  EIP and EFLAGS stay in registers, EFLAGS lazily
            # (fastpath.fast_exec), until an instruction needs the full
            # decoder or the run ends; only then are they written back.
            # The code page holds offsets [elo, elo + span] of CS with all
            # 8 bytes an instruction may fetch inside the page and the limit.
            elo = ((fpage << 12) - cbase) & M32
            span = min(4096 - 8, climit - 8 - elo)
            ldelta = (fpage << 12) - elo
            pdelta = fphys - elo
            fl = f                     # EFLAGS | lazy kind << 32 (L_NONE)
            la = 0
            lb = 0
            lr = 0
            eip = start
            toff = tp - n              # trace slot of step n: (n + toff) mod TRACE_N
            while n < max_steps:
                d = eip - elo
                if d < 0 or d > span:
                    break
                if n > 0 and s[NBP] > 0 and bp_hit(s, eip + ldelta):
                    status = ST_BREAK
                    stop = True
                    break
                ok, nxt, fl, la, lb, lr = fast_exec(s, ram, eip, fl, la, lb, lr,
                                                    eip + pdelta, climit)
                if not ok:
                    break
                # Trace ring buffer: linear address of every executed instruction.
                s[np.uint64(TRACE + ((n + toff) & (TRACE_N - 1)))] = eip + ldelta
                n += 1
                if nxt <= eip and nxt >= elo:
                    # A taken backward branch: a loop head for the translation tier.  A
                    # compiled region that leaves by a backward branch in the window asks
                    # again there (an outer loop's head: chaining).
                    k = loop_head(s, nxt + pdelta)
                    while k > 0:
                        j = enter_loop(s, ram, k, nxt + pdelta, nxt, nxt + ldelta, fl, la, lb,
                                       lr, max_steps - n, (n + toff) & (TRACE_N - 1),
                                       span - (nxt - elo), nxt - elo)
                        k = 0
                        if j > 0:
                            n += j
                            # a REP MOVSD in the region: one trace entry, many steps
                            toff -= s[D_DONE]
                            s[TRACE_CNT] -= s[D_DONE]
                            head = nxt
                            nxt = s[EIP]
                            fl = s[EFLAGS]     # exact (lazy kind L_NONE)
                            if nxt < head and nxt >= elo and n < max_steps:
                                k = loop_head(s, nxt + pdelta)
                    if k == REQUEST:
                        eip = nxt
                        status = ST_JIT_REQUEST
                        stop = True
                        break
                eip = nxt
            tp = (n + toff) & (TRACE_N - 1)
            s[EIP] = eip
            s[EFLAGS] = flags_of(fl & M32, fl >> 32, la, lb, lr)
            if stop or n >= max_steps:
                break
            start = eip
        elif tf == 0 and nofast == 0 and (s[cs_base + 2] & A_DB) == 0:
            fn16 = entry(RUN16)                # 16-bit code: fast16.py, compiled on first use
            if fn16 == 0:
                request = RUN16
            else:
                j, st16 = call_run16(fn16, s, ram, max_steps - n, tp, n > 0)
                n += j
                tp = (tp + j) & (TRACE_N - 1)
                if st16 != ST_OK or n >= max_steps:
                    status = st16 if st16 != ST_OK else status
                    break
                start = s[EIP]
        if nbp > 0 and n > 0 and bp_hit(s, (s[cs_base] + start) & M32):
            status = ST_BREAK
            break
        if request >= 0:                       # after the code stop, before the instruction
            s[JIT_REQ] = request
            status = ST_COMPILE_REQUEST
            break
        s[D_EXC] = -1
        s[D_START] = start
        s[STEPS] = n                           # RDTSC reads TSC + STEPS
        s[D_BUDGET] = max_steps - n if s[MH_N] == 0 else 1   # hooks: one REP element a step
        s[D_DONE] = 0
        fam = call_decode(entry(DECODE), s, ram, start)
        st = ST_OK
        if fam >= 0:
            s[EIP] = s[D_NEXT]
            st = dispatch(s, ram, ram64, con, fam)
        done = s[D_DONE]
        if st != ST_OK:
            s[D_EXC] = -1
            if st != ST_HLT:
                s[EIP] = start                 # IO / unsupported: restart later
                status = st
                if done > 0:                   # a REP INS/OUTS did elements before the port
                    s[TRACE + tp] = (s[cs_base] + start) & M32
                    tp = (tp + 1) & (TRACE_N - 1)
                    n += done
                    s[TRACE_CNT] -= done - 1   # one trace entry, ``done`` steps
                elif s[FT_ON] != 0:
                    s[FT_CNT] -= 1             # not run: recorded when it runs again
                break
            s[TRACE + tp] = (s[cs_base] + start) & M32
            tp = (tp + 1) & (TRACE_N - 1)
            n += 1
            status = st
            break
        # Trace ring buffer: linear address of every executed instruction.
        s[TRACE + tp] = (s[cs_base] + start) & M32
        tp = (tp + 1) & (TRACE_N - 1)
        n += 1
        if done > 1:
            n += done - 1
            s[TRACE_CNT] -= done - 1           # one trace entry, ``done`` steps
        went_back = s[D_EXC] < 0 and tf == 0 and fpage < 0 and nofast == 0 and s[EIP] < start
        if s[D_EXC] >= 0:
            vec = s[D_EXC]
            soft = s[D_SOFT] != 0
            s[D_SOFT] = 0
            if not soft:
                s[EIP] = start
            r = call_raise(entry(RAISE), s, ram, vec, s[D_ERR], soft)
            if r != ST_OK:
                if r == ST_TRIPLE_FAULT:
                    s[EIP] = s[D_START]
                status = r
                break
            if s[HOOK_INT] != 0:
                s[HOOK_VEC] = s[LAST_VEC] + 1
        elif tf:
            # Single-step trap after the instruction (DR6.BS).
            s[DR0 + 6] |= 0x4000
            r = call_raise(entry(RAISE), s, ram, DB_, -1, False)
            if r != ST_OK:
                status = r
                break
            if s[HOOK_INT] != 0:
                s[HOOK_VEC] = s[LAST_VEC] + 1
        if s[STRICT_BUS] != 0 and s[BUS_ADDR] >= 0:
            status = ST_BUS_ERROR
            break
        if s[MH_HITS] > 0 or s[HOOK_VEC] > 0:   # a memory or interrupt hook fired
            status = ST_HOOK
            break
        if went_back:                          # 16-bit code: the translation tier (hotloop.py)
            j = loop16(s, ram, start, max_steps - n, tp)
            if j == REQUEST:
                status = ST_JIT_REQUEST
                break
            n += j
            tp = (tp + j) & (TRACE_N - 1)
        cbase = s[cs_base]
        climit = s[cs_base + 1]
        fpage = s[D_FPAGE] if (s[cs_base + 2] & A_DB) else -1
        fphys = s[D_FPHYS]
    s[STEPS] = n
    s[TSC] += n
    s[TRACE_CNT] += n
    s[TRACE_POS] = tp
    return status
