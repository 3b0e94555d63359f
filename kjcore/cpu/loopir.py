"""LLVM IR for a decoded hot loop (the hot-loop tier's code generator).

``emit`` turns the instruction tuples of ``loopjit.decode_loop`` into one
function that runs whole iterations of the loop with the guest registers and
flags in host registers and writes back what the interpreter would have
left.  Each instruction follows the interpreter's flag rules
(``fastpath.alu32`` and ``lazyflags.flags_of``, ``shift.shift_op``), with
the same choices for undefined flags (docs/cpu.rst, Fidelity rules).
"""
from llvmlite import ir

from .state import ARITH, EFLAGS, EIP, M32, TRACE, TRACE_N

I1, I8, I16, I32, I64 = (ir.IntType(k) for k in (1, 8, 16, 32, 64))


class _Flags:
    """The arithmetic flags as IR values: CF/AF/ZF/SF/OF as i1, PF as the
    result's low byte (parity is computed only where it is read)."""

    def __init__(self, b, f):
        def bit(k):
            return b.icmp_unsigned("!=", b.and_(f, ir.Constant(I64, k)), ir.Constant(I64, 0))
        self.cf, self.af, self.zf, self.sf, self.of = (bit(k) for k in (1, 0x10, 0x40, 0x80, 0x800))
        # A byte with even parity (0) if PF is set, odd (1) if not.
        self.pfb = b.select(bit(4), ir.Constant(I8, 0), ir.Constant(I8, 1))

    def result(self, b, r):
        self.zf = b.icmp_unsigned("==", r, ir.Constant(r.type, 0))
        self.sf = b.icmp_signed("<", r, ir.Constant(r.type, 0))
        self.pfb = r if r.type == I8 else b.trunc(r, I8)

    def pf(self, b):
        cnt = b.call(b.module.declare_intrinsic("llvm.ctpop", [I8]), [self.pfb])
        return b.icmp_unsigned("==", b.and_(cnt, ir.Constant(I8, 1)), ir.Constant(I8, 0))

    def eflags(self, b, f):
        v = b.and_(f, ir.Constant(I64, ~ARITH & M32))
        for flag, k in ((self.cf, 0), (self.pf(b), 2), (self.af, 4), (self.zf, 6),
                        (self.sf, 7), (self.of, 11)):
            v = b.or_(v, b.shl(b.zext(flag, I64), ir.Constant(I64, k)))
        return v

    def cond(self, b, cc):
        """Jcc condition ``cc`` (0-15) as an i1."""
        k = cc >> 1
        if k == 0:
            c = self.of
        elif k == 1:
            c = self.cf
        elif k == 2:
            c = self.zf
        elif k == 3:
            c = b.or_(self.cf, self.zf)
        elif k == 4:
            c = self.sf
        elif k == 5:
            c = self.pf(b)
        elif k == 6:
            c = b.xor(self.sf, self.of)
        else:
            c = b.or_(self.zf, b.xor(self.sf, self.of))
        return b.not_(c) if cc & 1 else c


def _c32(v):
    return ir.Constant(I32, v & M32)


def _c(ty, v):
    """Constant ``v`` of integer type ``ty`` (i8, i16 or i32), truncated to its width."""
    return ir.Constant(ty, v & ((1 << ty.width) - 1))


def _af(b, a, x, r):
    return b.icmp_unsigned("!=", b.and_(b.xor(b.xor(a, x), r), _c(a.type, 0x10)),
                           _c(a.type, 0))


def _alu(b, fl, aop, a, x):
    """The ALU operation ``aop`` (ADD OR ADC SBB AND SUB XOR CMP) on a, x (both i32, i16
    or i8): the result, with the flags set in ``fl`` as ``fastpath.alu32`` (and the
    interpreter's ALU for 16-bit operands) sets them."""
    ty = a.type
    if aop in (1, 4, 6):
        r = {1: b.or_, 4: b.and_, 6: b.xor}[aop](a, x)
        fl.cf = fl.af = fl.of = ir.Constant(I1, 0)
    elif aop in (0, 2):
        r = b.add(a, x)
        if aop == 2:
            wide = b.add(b.add(b.zext(a, I64), b.zext(x, I64)), b.zext(fl.cf, I64))
            r = b.trunc(wide, ty)
            fl.cf = b.icmp_unsigned("!=", b.lshr(wide, ir.Constant(I64, ty.width)),
                                    ir.Constant(I64, 0))
        else:
            fl.cf = b.icmp_unsigned("<", r, a)
        fl.of = b.icmp_signed("<", b.and_(b.xor(a, r), b.xor(x, r)), _c(ty, 0))
        fl.af = _af(b, a, x, r)
    else:                                      # 3 SBB, 5 SUB, 7 CMP
        r = b.sub(a, x)
        if aop == 3:
            cin = b.zext(fl.cf, ty)
            r = b.sub(r, cin)
            fl.cf = b.icmp_unsigned("<", b.zext(a, I64),
                                    b.add(b.zext(x, I64), b.zext(fl.cf, I64)))
        else:
            fl.cf = b.icmp_unsigned("<", a, x)
        fl.of = b.icmp_signed("<", b.and_(b.xor(a, x), b.xor(a, r)), _c(ty, 0))
        fl.af = _af(b, a, x, r)
    fl.result(b, r)
    return r


def _bit(b, v, k):
    """Bit ``k`` of i32 ``v`` as an i1."""
    return b.trunc(b.lshr(v, _c32(k)), I1)


def _shift(b, fl, op, a, count):
    """ROL ROR SHL SHR SAR (``op`` as the ModRM reg field) of i32 ``a`` by a
    constant 1-31, with ``shift.shift_op``'s flag rules: rotates set only CF
    and OF; shifts set all arithmetic flags, AF cleared, and OF for counts
    above 1 by the count-1 formula (0 for SHR, SAR)."""
    if op in (0, 1):
        if op == 0:
            r = b.or_(b.shl(a, _c32(count)), b.lshr(a, _c32(32 - count)))
            fl.cf = _bit(b, r, 0)
            fl.of = b.xor(_bit(b, r, 31), fl.cf)
        else:
            r = b.or_(b.lshr(a, _c32(count)), b.shl(a, _c32(32 - count)))
            fl.cf = _bit(b, r, 31)
            fl.of = b.xor(_bit(b, r, 31), _bit(b, r, 30))
        return r
    if op in (4, 6):                            # SHL / SAL
        r = b.shl(a, _c32(count))
        fl.cf = _bit(b, a, 32 - count)
        fl.of = b.xor(_bit(b, r, 31), fl.cf)
    elif op == 5:                               # SHR
        r = b.lshr(a, _c32(count))
        fl.cf = _bit(b, a, count - 1)
        fl.of = _bit(b, a, 31) if count == 1 else ir.Constant(I1, 0)
    else:                                       # SAR
        r = b.ashr(a, _c32(count))
        fl.cf = _bit(b, a, count - 1)
        fl.of = ir.Constant(I1, 0)
    fl.af = ir.Constant(I1, 0)
    fl.result(b, r)
    return r


def _lower(b, fl, R, put, ins):
    """IR for one decoded instruction: guest registers ``R`` (i32 values,
    written through ``put(index, value)``) and flags ``fl``.  Returns the
    branch-taken condition for the loop's branch, else None.  A 16-bit
    operation works on the low halves and writes only them, an 8-bit one (AL) on the
    low bytes."""
    kind, w = ins[0], ins[2]
    ty = {8: I8, 16: I16, 32: I32}[w]

    def get(i):
        return R[i] if w == 32 else b.trunc(R[i], ty)

    def set_(i, v):
        keep = _c32(~((1 << w) - 1))
        put(i, v if w == 32 else b.or_(b.and_(R[i], keep), b.zext(v, I32)))

    if kind == "alu":
        _, _, _, aop, dst, src, imm = ins
        r = _alu(b, fl, aop, get(dst), _c(ty, imm) if src < 0 else get(src))
        if aop != 7:
            set_(dst, r)
    elif kind == "test":
        _, _, _, a, src, imm = ins
        _alu(b, fl, 4, get(a), _c(ty, imm) if src < 0 else get(src))
    elif kind in ("inc", "dec"):                # flags as ADD/SUB 1, CF kept
        r = ins[3]
        a = get(r)
        res = (b.add if kind == "inc" else b.sub)(a, _c(ty, 1))
        fl.of = b.icmp_unsigned("==", res if kind == "inc" else a, _c(ty, 1 << (w - 1)))
        fl.af = _af(b, a, _c(ty, 1), res)
        fl.result(b, res)
        set_(r, res)
    elif kind == "shift":
        _, _, _, op, r, count = ins
        put(r, _shift(b, fl, op, R[r], count))
    elif kind == "xchg":
        _, _, _, x, y = ins
        vx, vy = get(x), get(y)
        set_(x, vy)
        set_(y, vx)
    elif kind == "not":
        set_(ins[3], b.xor(get(ins[3]), _c(ty, M32)))
    elif kind == "neg":                         # flags as 0 - r
        set_(ins[3], _alu(b, fl, 5, _c(ty, 0), get(ins[3])))
    elif kind == "mov":
        _, _, _, dst, src, imm = ins
        set_(dst, _c(ty, imm) if src < 0 else get(src))
    elif kind == "lea":
        _, _, _, dst, base, index, scale, disp = ins
        v = _c32(disp)
        if base >= 0:
            v = b.add(v, R[base])
        if index >= 0:
            v = b.add(v, b.shl(R[index], _c32(scale)))
        put(dst, v)
    elif kind == "jcc":
        return fl.cond(b, ins[3])
    elif kind == "jmp":
        return ir.Constant(I1, 1)
    elif kind == "loop":                        # CX or ECX - 1, no flags
        c = b.sub(get(1), _c(ty, 1))
        set_(1, c)
        return b.icmp_unsigned("!=", c, _c(ty, 0))
    return None


def emit(insns, code, name):
    """LLVM IR of the loop: ``i64 name(i64* s, i8* ram, i64 p, i64 eip, i64 lin,
    i64 eflags, i64 budget, i64 tslot)``.

    Returns the number of instructions executed (whole iterations within
    ``budget``; 0 if not even one fits), or -1, having done nothing, if RAM at
    ``p`` no longer holds ``code``.  Writes back the general registers, EIP,
    EFLAGS and the trace ring from slot ``tslot`` on (linear addresses from
    ``lin``, the loop head's).
    """
    blen = len(code)
    mod = ir.Module(name=name)
    fn = ir.Function(mod, ir.FunctionType(I64, [I64.as_pointer(), I8.as_pointer()] + [I64] * 6),
                     name)
    s, ram, p, eip, lin, f, budget, tslot = fn.args
    entry = fn.append_basic_block("entry")
    check = fn.append_basic_block("check")
    run = fn.append_basic_block("run")
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    # Guest registers and flags live in allocas (entry block: SROA makes them SSA values).
    regs = [b.alloca(I32, name=f"r{i}") for i in range(8)]
    flag_vars = {k: b.alloca(I8 if k == "pfb" else I1, name=k)
                 for k in ("cf", "af", "zf", "sf", "of", "pfb")}
    it = b.alloca(I64, name="it")
    taken_var = b.alloca(I1, name="taken")

    def ret_const(v):
        blk = fn.append_basic_block()
        with b.goto_block(blk):
            b.ret(ir.Constant(I64, v))
        return blk

    # The loop's bytes must still be in RAM at p: compare 8, 4, 2, 1 bytes at a time.
    stale = ret_const(-1)
    o = 0
    same = ir.Constant(I1, 1)
    while o < blen:
        w = next(k for k in (8, 4, 2, 1) if k <= blen - o)
        ty = ir.IntType(8 * w)
        ptr = b.bitcast(b.gep(ram, [b.add(p, ir.Constant(I64, o))]), ty.as_pointer())
        want = int.from_bytes(code[o:o + w], "little")
        same = b.and_(same, b.icmp_unsigned("==", b.load(ptr, align=1), ir.Constant(ty, want)))
        o += w
    b.cbranch(same, check, stale)

    b.position_at_end(check)
    maxit = b.udiv(budget, ir.Constant(I64, len(insns)))
    b.cbranch(b.icmp_signed(">", maxit, ir.Constant(I64, 0)), run, ret_const(0))

    b.position_at_end(run)
    for i in range(8):
        b.store(b.trunc(b.load(b.gep(s, [ir.Constant(I64, i)])), I32), regs[i])
    fl = _Flags(b, f)
    for k, v in flag_vars.items():
        b.store(getattr(fl, k), v)
    b.store(ir.Constant(I64, 0), it)
    b.branch(loop)

    b.position_at_end(loop)
    for k, v in flag_vars.items():
        setattr(fl, k, b.load(v))
    R = [b.load(r) for r in regs]
    written = set()

    def put(i, v):
        R[i] = v
        written.add(i)

    for ins in insns:
        taken = _lower(b, fl, R, put, ins)     # the last one is the branch back
    for i in written:
        b.store(R[i], regs[i])
    for k, v in flag_vars.items():
        b.store(getattr(fl, k), v)
    b.store(taken, taken_var)
    n = b.add(b.load(it), ir.Constant(I64, 1))
    b.store(n, it)
    b.cbranch(b.and_(taken, b.icmp_signed("<", n, maxit)), loop, done)

    b.position_at_end(done)
    for i in range(8):
        b.store(b.zext(b.load(regs[i]), I64), b.gep(s, [ir.Constant(I64, i)]))
    for k, v in flag_vars.items():
        setattr(fl, k, b.load(v))
    b.store(fl.eflags(b, f), b.gep(s, [ir.Constant(I64, EFLAGS)]))
    nxt = b.select(b.load(taken_var), eip, b.add(eip, ir.Constant(I64, blen)))
    b.store(nxt, b.gep(s, [ir.Constant(I64, EIP)]))
    steps = b.mul(b.load(it), ir.Constant(I64, len(insns)))
    _emit_trace(b, fn, s, steps, tslot, lin, insns)
    b.ret(steps)
    return mod


def _emit_trace(b, fn, s, steps, tslot, lin, insns):
    """Trace ring: the linear addresses of the last min(steps, TRACE_N) steps,
    step j in slot (tslot + j) mod TRACE_N."""
    offs, o = [], 0
    for ins in insns:
        offs.append(o)
        o += ins[1]
    table = ir.GlobalVariable(b.module, ir.ArrayType(I64, len(offs)), "offsets")
    table.global_constant = True
    table.linkage = "internal"
    table.initializer = ir.Constant(ir.ArrayType(I64, len(offs)), offs)
    n = ir.Constant(I64, len(offs))
    first = b.select(b.icmp_signed(">", steps, ir.Constant(I64, TRACE_N)),
                     b.sub(steps, ir.Constant(I64, TRACE_N)), ir.Constant(I64, 0))
    head = b.block
    body = fn.append_basic_block("trace")
    tail = fn.append_basic_block("traced")
    b.cbranch(b.icmp_signed("<", first, steps), body, tail)
    b.position_at_end(body)
    j = b.phi(I64)
    j.add_incoming(first, head)
    off = b.load(b.gep(table, [ir.Constant(I64, 0), b.urem(j, n)]))
    slot = b.add(ir.Constant(I64, TRACE), b.and_(b.add(tslot, j), ir.Constant(I64, TRACE_N - 1)))
    b.store(b.and_(b.add(lin, off), ir.Constant(I64, M32)), b.gep(s, [slot]))
    j1 = b.add(j, ir.Constant(I64, 1))
    j.add_incoming(j1, body)
    b.cbranch(b.icmp_signed("<", j1, steps), body, tail)
    b.position_at_end(tail)
