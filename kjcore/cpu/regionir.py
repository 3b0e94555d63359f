"""LLVM IR of a compiled region: its blocks, memory accesses and side exits.

``emit`` turns a decoded region (``loopjit.Region``) into one function

    i64 region(i64* s, i8* ram, i64 p, i64 eip, i64 lin, i64 eflags, i64 budget,
               i64 tslot, i64 ramsize)

entered at the region's head (offset 0: EIP ``eip``, linear ``lin``, physical
``p``).  It returns the steps executed (0: none), or -1, having done nothing,
if RAM at ``p`` no longer holds the region's bytes.  On return the eight
general registers, EIP and EFLAGS in ``s`` are what the interpreter would
have left after those steps, and the trace ring holds one linear address per
step from slot ``tslot`` on.  (The compiled code logs one entry per run of a
block, its first trace position and the block; the trace ring's last
``TRACE_N`` addresses are written from that log on the way out.)

Every edge into a block checks the step budget: a block that does not fit
whole is not entered, the region leaves at its first instruction.  A *side
exit* writes back the registers and flags as they are at the start of the
instruction it leaves at, and sets EIP to it, so the interpreter continues
exactly there.  The other exits are the branches to code outside the region
(EIP the target) and the instructions the tier does not compile.

Memory operands (``access``) go through the software TLB inlined: the
page boundary, the TLB entry and its permission bits
(for the CPL at entry), RAM's size, the ROM range and the region's own bytes
(a store into them) are checked, and any access that is not the plain case
leaves by a side exit at its instruction: the interpreter makes it, walking
the page tables, setting Accessed/Dirty bits, raising #PF or #GP precisely.
A region with memory operands is entered only with flat DS and SS (base 0,
limit 4 GiB - 1, writable expand-up data), or the function returns 0.
"""
from llvmlite import ir

from . import regionrt
from .loopir import I1, I8, I64, Flags, lower
from .state import (
    A_CODE,
    A_DB,
    A_E,
    A_USABLE,
    A_W,
    D_DONE,
    DF,
    EFLAGS,
    EIP,
    M32,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    SEG,
    TRACE_N,
)


def _k(v):
    return ir.Constant(I64, v)


class _Regs:
    """The guest's general registers in allocas (SROA makes them SSA values): every
    write is stored at once, so a side exit anywhere finds them current."""

    def __init__(self, b, slots):
        self.b, self.slots = b, slots

    def get(self, i):
        return self.b.load(self.slots[i])

    def put(self, i, v):
        self.b.store(v, self.slots[i])


class _Emitter:
    def __init__(self, region, name, addresses):
        self.region, self.addresses = region, addresses
        self.mod = ir.Module(name=name)
        args = [I64.as_pointer(), I8.as_pointer()] + [I64] * 7
        self.fn = ir.Function(self.mod, ir.FunctionType(I64, args), name)
        for a in self.fn.args[:2]:
            a.add_attribute("noalias")
        (self.s, self.ram, self.p, self.eip, self.lin, self.f, self.budget, self.tslot,
         self.ramsize) = self.fn.args
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)

    # -- helpers -------------------------------------------------------------
    def sload(self, k):
        return self.b.load(self.b.gep(self.s, [k if isinstance(k, ir.Value) else _k(k)]))

    def sstore(self, k, v):
        self.b.store(v, self.b.gep(self.s, [k if isinstance(k, ir.Value) else _k(k)]))

    def ret_block(self, v):
        blk = self.fn.append_basic_block()
        with self.b.goto_block(blk):
            self.b.ret(_k(v))
        return blk

    def new_block(self, name=""):
        return self.fn.append_basic_block(name)

    # -- the function ----------------------------------------------------------
    def emit(self):
        b, region = self.b, self.region
        # Allocas in the entry block, where SROA turns them into SSA values.
        self.regs = [b.alloca(ir.IntType(32), name=f"r{i}") for i in range(8)]
        self.flag_slots = {k: b.alloca(I8 if k == "pfb" else I1, name=k) for k in Flags.NAMES}
        self.steps = b.alloca(I64, name="steps")
        self.xoff = b.alloca(I64, name="xoff")
        self.log = b.alloca(I64, TRACE_N, name="log")
        self.logged = b.alloca(I64, name="logged")
        self.extra = b.alloca(I64, name="extra")      # steps beyond one trace entry (REP)
        self.check_bytes()
        self.check_segments()
        for i in range(8):
            b.store(b.trunc(self.sload(i), ir.IntType(32)), self.regs[i])
        fl = Flags(b, self.f)
        self.store_flags(fl)
        b.store(_k(0), self.steps)
        b.store(_k(0), self.logged)
        b.store(_k(0), self.extra)
        self.done = self.new_block("done")
        # Each block has two labels: one that logs it for the trace, and its body, where it
        # branches to itself (a run of one block is one log entry).
        self.labels = {blk.start: self.new_block(f"b{blk.start}") for blk in region.blocks}
        self.bodies = {blk.start: self.new_block(f"body{blk.start}") for blk in region.blocks}
        self.ids = {blk.start: i for i, blk in enumerate(region.blocks)}
        self.sizes = {blk.start: len(blk.insns) for blk in region.blocks}
        self.leave = None
        self.goto(0, _k(0), fl)
        for blk in region.blocks:
            self.emit_block(blk)
        self.emit_done()
        return self.mod

    def check_bytes(self):
        """Return -1 unless RAM holds the region's bytes (from ``p + start``; 8, 4, 2, 1
        at a time)."""
        b, code = self.b, self.region.code
        same = ir.Constant(I1, 1)
        o = 0
        self.code_at = b.add(self.p, _k(self.region.start))
        while o < len(code):
            w = next(k for k in (8, 4, 2, 1) if k <= len(code) - o)
            ty = ir.IntType(8 * w)
            ptr = b.bitcast(b.gep(self.ram, [b.add(self.code_at, _k(o))]), ty.as_pointer())
            want = int.from_bytes(code[o:o + w], "little")
            same = b.and_(same, b.icmp_unsigned("==", b.load(ptr, align=1), ir.Constant(ty, want)))
            o += w
        good = self.new_block("fresh")
        b.cbranch(same, good, self.ret_block(-1))
        b.position_at_end(good)

    def check_segments(self):
        """A region with memory operands is entered only with flat segments: DS and SS
        usable, writable, expand-up data segments of base 0 and limit 4 GiB - 1, so an
        offset is the linear address and only an access crossing the top page could
        pass the limit (the page-crossing check sends it to the interpreter)."""
        b = self.b
        if not self.region.memory:
            return
        flat = ir.Constant(I1, 1)
        if self.region.stack:                          # PUSH, POP, CALL, RET: a 32-bit stack
            ss = self.sload(SEG + 4 * 2 + S_ATTR)
            flat = b.icmp_unsigned("!=", b.and_(ss, _k(A_DB)), _k(0))
        for seg in (0, 2, 3) if self.region.strings else (2, 3):     # ES, SS, DS
            base = SEG + 4 * seg
            kind = b.and_(self.sload(base + S_ATTR), _k(A_USABLE | A_CODE | A_E | A_W))
            flat = b.and_(flat, b.icmp_unsigned("==", kind, _k(A_USABLE | A_W)))
            flat = b.and_(flat, b.icmp_unsigned("==", self.sload(base + S_BASE), _k(0)))
            flat = b.and_(flat, b.icmp_unsigned("==", self.sload(base + S_LIMIT), _k(M32)))
        go = self.new_block("go")
        b.cbranch(flat, go, self.ret_block(0))
        b.position_at_end(go)

    def store_flags(self, fl):
        for k in Flags.NAMES:
            self.b.store(getattr(fl, k), self.flag_slots[k])

    def load_flags(self):
        fl = Flags.__new__(Flags)
        for k in Flags.NAMES:
            setattr(fl, k, self.b.load(self.flag_slots[k]))
        return fl

    def side_exit(self, off, steps, fl):
        """Leave at region offset ``off`` (a Python int, or an IR i64: a RET's target)
        after ``steps`` (an IR i64)."""
        b = self.b
        self.store_flags(fl)
        b.store(steps, self.steps)
        b.store(off if isinstance(off, ir.Value) else _k(off), self.xoff)
        b.branch(self.done)

    def goto(self, target, steps, fl, here=None):
        """Continue at region offset ``target`` after ``steps``: its block if the step
        budget has room for the whole block (from block ``here``: to its body, not its
        log), else an exit there; an IR i64 ``target`` (a RET's) is always an exit."""
        b = self.b
        self.store_flags(fl)
        b.store(steps, self.steps)
        if target in self.labels:
            out = self.new_block()
            fits = b.icmp_signed("<=", b.add(steps, _k(self.sizes[target])), self.budget)
            b.cbranch(fits, self.bodies[target] if target == here else self.labels[target], out)
            b.position_at_end(out)
        self.leave_at(target if isinstance(target, ir.Value) else _k(target))

    def leave_at(self, off):
        """Exit at region offset ``off`` (an IR i64) from the end of the current block: all
        the block's ways out meet in one block, so the flags its instructions computed
        are used in that one place (LLVM sinks what only the exit needs out of a loop)."""
        b = self.b
        if self.leave is None:
            self.leave = self.new_block("leave")
            with b.goto_block(self.leave):
                self.leave_off = b.phi(I64)
                b.store(self.leave_off, self.xoff)
                b.branch(self.done)
        self.leave_off.add_incoming(off, b.block)
        b.branch(self.leave)

    def emit_block(self, blk):
        b = self.b
        self.leave = None
        b.position_at_end(self.labels[blk.start])
        nlog = b.load(self.logged)
        traced = b.sub(b.load(self.steps), b.load(self.extra))     # trace entries so far
        b.store(b.or_(b.shl(traced, _k(16)), _k(self.ids[blk.start])),
                b.gep(self.log, [b.and_(nlog, _k(TRACE_N - 1))]))
        b.store(b.add(nlog, _k(1)), self.logged)
        b.branch(self.bodies[blk.start])
        b.position_at_end(self.bodies[blk.start])
        fl = self.load_flags()
        st0 = b.load(self.steps)
        n = len(blk.insns)
        regs = _Regs(b, self.regs)
        if blk.insns[0][1][0] == "movs":
            self.cur = (blk.start, st0, fl)
            self.goto(blk.next, self.rep_movs(regs, st0), fl, blk.start)
            return
        taken = None
        for i, (off, ins) in enumerate(blk.insns):
            self.cur = (off, b.add(st0, _k(i)), fl)
            if ins[0] in ("call", "ret"):
                taken = self.call_ret(regs, off, ins)
            else:
                taken = lower(b, fl, regs, self.access, ins)
        st = b.add(st0, _k(n))
        last_off, last = blk.insns[-1]
        end = last_off + last[1]
        if last[0] == "ret":
            self.dispatch(taken, st, fl)
            return
        if taken is None:
            self.goto(blk.next, st, fl, blk.start)
            return
        target = end + last[-1]
        if last[0] in ("jmp", "call"):
            self.goto(target, st, fl, blk.start)
            return
        yes, no = self.new_block(), self.new_block()
        b.cbranch(taken, yes, no)
        with b.goto_block(yes):
            self.goto(target, st, fl, blk.start)
        b.position_at_end(no)
        self.goto(end, st, fl, blk.start)

    def rep_movs(self, regs, st0):
        """REP MOVSD (DS:ESI to ES:EDI): the steps after it.  ECX = 0 is one step that
        does nothing; otherwise ECX elements, each a step, copied at once when the plain
        case holds: DF clear, the budget has room for them all, the source and the
        destination each inside one page, both pages granted (``walk``) and apart.
        Anything else leaves by a side exit: the interpreter copies element by element.
        The whole string is one trace entry (``extra`` counts the other steps)."""
        b, i32 = self.b, ir.IntType(32)
        fail = self.miss()
        count = b.zext(regs.get(1), I64)
        size = b.shl(count, _k(2))
        esi, edi = b.zext(regs.get(6), I64), b.zext(regs.get(7), I64)
        bad = b.icmp_unsigned("!=", b.and_(self.f, _k(DF)), _k(0))
        bad = b.or_(bad, b.icmp_signed(">", b.add(st0, count), self.budget))
        for lin in (esi, edi):
            bad = b.or_(bad, b.icmp_unsigned(">", b.add(b.and_(lin, _k(0xFFF)), size),
                                             _k(4096)))
        copy, walked, join = (self.new_block() for _ in range(3))
        head, one = b.block, b.add(st0, _k(1))
        b.cbranch(b.icmp_unsigned("==", count, _k(0)), join, walked)
        b.position_at_end(walked)
        phys = []
        for lin, write in ((esi, 0), (edi, 1)):
            nxt = self.new_block()
            b.cbranch(bad, fail, nxt)
            b.position_at_end(nxt)
            r = self.walk(lin, size, write)
            bad = b.icmp_signed("<", r, _k(0))
            phys.append(b.or_(b.and_(r, _k(~0xFFF)), b.and_(lin, _k(0xFFF))))
        src, dst = phys
        apart = b.or_(b.icmp_unsigned("<=", b.add(src, size), dst),
                      b.icmp_unsigned("<=", b.add(dst, size), src))
        b.cbranch(b.or_(bad, b.not_(apart)), fail, copy)
        b.position_at_end(copy)
        memcpy = b.module.declare_intrinsic("llvm.memcpy", [I8.as_pointer(), I8.as_pointer(),
                                                            I64])
        b.call(memcpy, [b.gep(self.ram, [dst]), b.gep(self.ram, [src]), size,
                        ir.Constant(I1, 0)])
        size32 = b.trunc(size, i32)
        regs.put(6, b.add(regs.get(6), size32))
        regs.put(7, b.add(regs.get(7), size32))
        regs.put(1, ir.Constant(i32, 0))
        b.store(b.add(b.load(self.extra), b.sub(count, _k(1))), self.extra)
        all_ = b.add(st0, count)
        b.branch(join)
        b.position_at_end(join)
        steps = b.phi(I64)
        steps.add_incoming(one, head)
        steps.add_incoming(all_, copy)
        return steps

    def call_ret(self, regs, off, ins):
        """CALL rel32 (push the return address; the block then branches to the target) or
        RET (pop: the target address, an i32, is returned for :meth:`dispatch`)."""
        b, i32 = self.b, ir.IntType(32)
        esp = regs.get(4)
        if ins[0] == "call":
            esp = b.sub(esp, ir.Constant(i32, 4))
            ptr = self.access(esp, 4, True, i32)
            b.store(b.trunc(b.add(self.eip, _k(off + ins[1])), i32), ptr, align=1)
            regs.put(4, esp)
            return ir.Constant(I1, 1)
        target = b.load(self.access(esp, 4, False, i32), align=1)
        regs.put(4, b.add(esp, ir.Constant(i32, 4)))
        return target

    def dispatch(self, target, steps, fl):
        """After a RET: to the block of the return site it reached, if the region has it,
        else out with EIP the popped address."""
        b = self.b
        rel = b.and_(b.sub(b.zext(target, I64), self.eip), _k(M32))  # offset from the head
        out = self.new_block()
        sites = sorted(r for r in self.region.returns if r in self.labels)
        switch = b.switch(rel, out)
        for r in sites:
            case = self.new_block()
            switch.add_case(_k(r & M32), case)
            with b.goto_block(case):
                self.goto(r, steps, fl)
        b.position_at_end(out)
        self.goto(rel, steps, fl)

    def miss(self):
        """A block leaving by a side exit at the current instruction (``self.cur``)."""
        off, here, fl = self.cur
        fail = self.new_block("miss")
        with self.b.goto_block(fail):
            self.side_exit(off, here, fl)
        return fail

    def walk(self, lin, size, write):
        """``regionrt.walk`` for ``size`` bytes (an IR i64) at linear ``lin``: the page, or
        -1 when the interpreter must make the access."""
        return self.b.call(self.runtime("walk"), [self.s, lin, size, _k(int(write)),
                                                  self.code_at, _k(len(self.region.code)),
                                                  self.ramsize])

    def entry_alloca(self, ty, init):
        """A variable of the whole call (an alloca at the top of the entry block, where
        SROA promotes it), set to ``init`` there."""
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            var = self.b.alloca(ty)
            self.b.store(ir.Constant(ty, init), var)
        return var

    def access(self, ea, n, write, ty):
        """Pointer (``ty*``) to the ``n``-byte operand at DS/SS:ea, or a side exit at the
        current instruction when the access is not the plain case.

        Each operand remembers the last page it reached (``cvpn``, its physical base
        ``cbase``) while every check passed for the whole page: the next access in that
        page only checks the offset.  (Nothing changes the TLB while compiled code runs.)"""
        b = self.b
        fail = self.miss()
        cvpn, cbase = self.entry_alloca(I64, -1), self.entry_alloca(I64, 0)
        lin = b.zext(ea, I64)                          # flat segments (check_segments)
        low = b.and_(lin, _k(0xFFF))
        bad = b.icmp_unsigned(">", low, _k(4096 - n))
        vpn = b.lshr(lin, _k(12))
        hit, walk, join = self.new_block(), self.new_block(), self.new_block()
        b.cbranch(b.and_(b.not_(bad), b.icmp_unsigned("==", vpn, b.load(cvpn))), hit, walk)
        b.position_at_end(hit)
        ph_hit = b.or_(b.load(cbase), low)
        b.branch(join)
        b.position_at_end(walk)
        walked, found = self.new_block(), self.new_block()
        b.cbranch(bad, fail, walked)
        b.position_at_end(walked)
        r = self.walk(lin, _k(n), write)
        b.cbranch(b.icmp_signed("<", r, _k(0)), fail, found)
        b.position_at_end(found)
        page = b.and_(r, _k(~1))
        ph = b.or_(page, low)
        b.store(b.select(b.trunc(r, I1), vpn, _k(-1)), cvpn)
        b.store(page, cbase)
        b.branch(join)
        b.position_at_end(join)
        phys = b.phi(I64)
        phys.add_incoming(ph_hit, hit)
        phys.add_incoming(ph, found)
        return b.bitcast(b.gep(self.ram, [phys]), ty.as_pointer())

    def emit_done(self):
        b = self.b
        b.position_at_end(self.done)
        for i in range(8):
            self.sstore(i, b.zext(b.load(self.regs[i]), I64))
        fl = self.load_flags()
        self.sstore(EFLAGS, fl.eflags(b, self.f))
        mask = 0xFFFF if self.region.code16 else M32
        self.sstore(EIP, b.and_(b.add(self.eip, b.load(self.xoff)), _k(mask)))
        self.sstore(D_DONE, b.load(self.extra))
        self.emit_trace()
        b.ret(b.load(self.steps))

    def emit_trace(self):
        """Write the trace ring from the block log (``regionrt.trace``)."""
        b = self.b
        offs, first = [], []
        for blk in self.region.blocks:
            first.append(len(offs))
            offs.extend(off for off, _ in blk.insns)
        first.append(len(offs))
        tables = []
        for name, values in (("offsets", offs), ("first", first)):
            ty = ir.ArrayType(I64, len(values))
            g = ir.GlobalVariable(self.mod, ty, name)
            g.global_constant = True
            g.linkage = "internal"
            g.initializer = ir.Constant(ty, values)
            tables.append(b.gep(g, [_k(0), _k(0)]))
        traced = b.sub(b.load(self.steps), b.load(self.extra))
        b.call(self.runtime("trace"), [self.s, b.gep(self.log, [_k(0)]), b.load(self.logged),
                                       traced, self.tslot, self.lin] + tables)

    def runtime(self, name):
        """The shared function ``name`` of ``regionrt`` (compiled once: called by address)."""
        ty = regionrt.TYPES[name]
        return self.b.inttoptr(_k(self.addresses[name]), ty.as_pointer())


def emit(region, name, addresses):
    """The LLVM module of ``region`` (see the module docstring), its function ``name``;
    ``addresses``: where the shared functions of ``regionrt`` were compiled."""
    return _Emitter(region, name, addresses).emit()

