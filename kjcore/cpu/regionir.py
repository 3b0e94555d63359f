"""LLVM IR of a compiled region: its blocks, memory accesses and side exits.

``emit`` turns a decoded region (``loopjit.Region``) into one function

    i64 region(i64* s, i8* ram, i64 p, i64 eip, i64 lin, i64 eflags, i64 budget,
               i64 tslot, i64 ramsize)

entered at the region's head (offset 0: EIP ``eip``, linear ``lin``, physical
``p``).  It returns the steps executed (0: none), or -1, having done nothing,
if RAM at ``p`` no longer holds the region's bytes.  On return the eight
general registers, EIP and EFLAGS in ``s`` are what the interpreter would
have left after those steps, and the trace ring holds one linear address per
step from slot ``tslot`` on.

Each block starts by checking the step budget: a block that does not fit
whole leaves by a *side exit* at its first instruction.  A side exit writes
back the registers and flags as they are at the start of the instruction it
leaves at, and sets EIP to it, so the interpreter continues exactly there.
The other exits are the branches to code outside the region (EIP the
target) and the instructions the tier does not compile.

Memory operands (``access``) go through the software TLB inlined: the
segment's limit, the page boundary, the TLB entry and its permission bits
(for the CPL at entry), RAM's size, the ROM range and the region's own bytes
(a store into them) are checked, and any access that is not the plain case
leaves by a side exit at its instruction: the interpreter makes it, walking
the page tables, setting Accessed/Dirty bits, raising #PF or #GP precisely.
The segments a region addresses (DS, and SS for ESP/EBP bases) must be
usable expand-up writable data segments at entry, or the function returns 0.
"""
from llvmlite import ir

from .loopir import I1, I8, I64, Flags, lower
from .memory import T_DIRTY, T_SWRITE, T_UREAD, T_UWRITE
from .state import (
    A20_CLEAR,
    A_CODE,
    A_E,
    A_USABLE,
    A_W,
    CPL,
    CR0,
    EFLAGS,
    EIP,
    M32,
    ROM_HI,
    ROM_LO,
    S_ATTR,
    S_BASE,
    S_LIMIT,
    SEG,
    TLB,
    TLB_SETS,
    TLB_WAYS,
    TRACE,
    TRACE_N,
)

CR0_PG = 1 << 31


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
    def __init__(self, region, name):
        self.region = region
        self.mod = ir.Module(name=name)
        args = [I64.as_pointer(), I8.as_pointer()] + [I64] * 7
        self.fn = ir.Function(self.mod, ir.FunctionType(I64, args), name)
        for a in self.fn.args[:2]:
            a.add_attribute("noalias")
        (self.s, self.ram, self.p, self.eip, self.lin, self.f, self.budget, self.tslot,
         self.ramsize) = self.fn.args
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))

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
        self.check_bytes()
        self.load_memory_context()
        for i in range(8):
            b.store(b.trunc(self.sload(i), ir.IntType(32)), self.regs[i])
        fl = Flags(b, self.f)
        self.store_flags(fl)
        b.store(_k(0), self.steps)
        self.done = self.new_block("done")
        self.labels = {blk.start: self.new_block(f"b{blk.start}") for blk in region.blocks}
        b.branch(self.labels[0])
        for blk in region.blocks:
            self.emit_block(blk)
        self.emit_done()
        return self.mod

    def check_bytes(self):
        """Return -1 unless RAM at p holds the region's bytes (8, 4, 2, 1 at a time)."""
        b, code = self.b, self.region.code
        same = ir.Constant(I1, 1)
        o = 0
        while o < len(code):
            w = next(k for k in (8, 4, 2, 1) if k <= len(code) - o)
            ty = ir.IntType(8 * w)
            ptr = b.bitcast(b.gep(self.ram, [b.add(self.p, _k(o))]), ty.as_pointer())
            want = int.from_bytes(code[o:o + w], "little")
            same = b.and_(same, b.icmp_unsigned("==", b.load(ptr, align=1), ir.Constant(ty, want)))
            o += w
        good = self.new_block("fresh")
        b.cbranch(same, good, self.ret_block(-1))
        b.position_at_end(good)

    def load_memory_context(self):
        """What every access needs, read once: paging, the permission bits for the CPL,
        A20, the ROM range, and the base and limit of the segments the region uses (not
        entered unless each is a usable, writable, expand-up data segment)."""
        b = self.b
        if not self.region.memory:
            return
        self.paging = b.icmp_unsigned("!=", b.and_(self.sload(CR0), _k(CR0_PG)), _k(0))
        user = b.icmp_unsigned("==", self.sload(CPL), _k(3))
        self.need_r = b.select(user, _k(T_UREAD), _k(0))
        self.need_w = b.select(user, _k(T_UREAD | T_UWRITE | T_DIRTY), _k(T_SWRITE | T_DIRTY))
        self.a20 = b.xor(self.sload(A20_CLEAR), _k(-1))
        self.rom_lo, self.rom_hi = self.sload(ROM_LO), self.sload(ROM_HI)
        self.segs = {}
        flat = ir.Constant(I1, 1)
        for seg in (2, 3):
            base = SEG + 4 * seg
            attr = self.sload(base + S_ATTR)
            kind = b.and_(attr, _k(A_USABLE | A_CODE | A_E | A_W))
            flat = b.and_(flat, b.icmp_unsigned("==", kind, _k(A_USABLE | A_W)))
            self.segs[seg] = (self.sload(base + S_BASE), self.sload(base + S_LIMIT))
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
        """Leave at region offset ``off`` (an i64 Python int) after ``steps`` (an IR i64)."""
        b = self.b
        self.store_flags(fl)
        b.store(steps, self.steps)
        b.store(_k(off), self.xoff)
        b.branch(self.done)

    def goto(self, target, steps, fl):
        """Continue at region offset ``target``: its block, or an exit there."""
        if target in self.labels:
            self.store_flags(fl)
            self.b.store(steps, self.steps)
            self.b.branch(self.labels[target])
        else:
            self.side_exit(target, steps, fl)

    def emit_block(self, blk):
        b = self.b
        b.position_at_end(self.labels[blk.start])
        fl = self.load_flags()
        st0 = b.load(self.steps)
        n = len(blk.insns)
        body = self.new_block()
        out = self.new_block()
        b.cbranch(b.icmp_signed(">", b.add(st0, _k(n)), self.budget), out, body)
        with b.goto_block(out):
            self.side_exit(blk.start, st0, fl)
        b.position_at_end(body)
        regs = _Regs(b, self.regs)
        taken = None
        for i, (off, ins) in enumerate(blk.insns):
            here = b.add(st0, _k(i))
            self.cur = (off, here, fl)
            taken = lower(b, fl, regs, self.access, ins)
            slot = b.and_(b.add(self.tslot, here), _k(TRACE_N - 1))
            self.sstore(b.add(slot, _k(TRACE)), b.and_(b.add(self.lin, _k(off)), _k(M32)))
        st = b.add(st0, _k(n))
        last_off, last = blk.insns[-1] if blk.insns else (blk.start, None)
        end = last_off + last[1] if last else blk.start
        if taken is None:
            self.goto(blk.next, st, fl)
            return
        target = end + last[-1]
        yes, no = self.new_block(), self.new_block()
        b.cbranch(taken, yes, no)
        with b.goto_block(yes):
            self.goto(target, st, fl)
        b.position_at_end(no)
        self.goto(end, st, fl)

    def access(self, ea, n, write, seg, ty):
        """Pointer (``ty*``) to the ``n``-byte operand at DS/SS:ea, or a side exit at the
        current instruction when the access is not the plain case."""
        b = self.b
        off, here, fl = self.cur
        fail = self.new_block("miss")
        with b.goto_block(fail):
            self.side_exit(off, here, fl)
        base, limit = self.segs[seg]
        o = b.zext(ea, I64)
        lin = b.and_(b.add(base, o), _k(M32))
        bad = b.or_(b.icmp_unsigned(">", b.add(o, _k(n - 1)), limit),
                    b.icmp_unsigned(">", b.and_(lin, _k(0xFFF)), _k(4096 - n)))
        # The TLB is read whether paging is on or not (it is always there), and one branch
        # takes every failed check to the side exit.
        vpn = b.lshr(lin, _k(12))
        k = b.add(_k(TLB), b.mul(b.and_(b.xor(vpn, b.lshr(vpn, _k(7))), _k(TLB_SETS - 1)),
                                 _k(3 * TLB_WAYS)))
        way0 = b.icmp_unsigned("==", self.sload(k), vpn)
        way1 = b.icmp_unsigned("==", self.sload(b.add(k, _k(3))), vpn)
        k = b.select(way0, k, b.add(k, _k(3)))
        need = self.need_w if write else self.need_r
        denied = b.icmp_unsigned("!=", b.and_(self.sload(b.add(k, _k(2))), need), need)
        miss = b.or_(b.not_(b.or_(way0, way1)), denied)
        bad = b.or_(bad, b.and_(self.paging, miss))
        ph = b.select(self.paging, b.or_(self.sload(b.add(k, _k(1))), b.and_(lin, _k(0xFFF))),
                      b.and_(lin, self.a20))
        end = b.add(ph, _k(n))
        bad = b.or_(bad, b.icmp_unsigned(">", end, self.ramsize))
        if write:
            rom = b.and_(b.icmp_unsigned("<", ph, self.rom_hi),
                         b.icmp_unsigned(">", end, self.rom_lo))
            code = b.and_(b.icmp_unsigned("<", ph, b.add(self.p, _k(len(self.region.code)))),
                          b.icmp_unsigned(">", end, self.p))
            bad = b.or_(bad, b.or_(rom, code))
        good = self.new_block()
        b.cbranch(bad, fail, good)
        b.position_at_end(good)
        return b.bitcast(b.gep(self.ram, [ph]), ty.as_pointer())

    def emit_done(self):
        b = self.b
        b.position_at_end(self.done)
        for i in range(8):
            self.sstore(i, b.zext(b.load(self.regs[i]), I64))
        fl = self.load_flags()
        self.sstore(EFLAGS, fl.eflags(b, self.f))
        mask = 0xFFFF if self.region.code16 else M32
        self.sstore(EIP, b.and_(b.add(self.eip, b.load(self.xoff)), _k(mask)))
        b.ret(b.load(self.steps))


def emit(region, name):
    """The LLVM module of ``region`` (see the module docstring), its function ``name``."""
    return _Emitter(region, name).emit()
