"""LLVM IR for one decoded instruction of a compiled region (the translation tier).

``lower`` emits the IR of one instruction tuple of ``loopjit.decode_region`` on
the guest registers and flags of ``regionir.emit``, with the interpreter's
flag rules (``fastpath.alu32`` and ``lazyflags.flags_of``, ``shift.shift_op``,
``muldiv``), the same choices for undefined flags (docs/cpu.rst, Fidelity
rules).  Memory operands go through the region's ``access`` (an inlined TLB
lookup with a side exit), so an instruction reads and checks all its memory
before it changes any register or flag: a side exit leaves the state of the
instruction's start.
"""
from llvmlite import ir

from .state import ARITH, M32

I1, I8, I16, I32, I64 = (ir.IntType(k) for k in (1, 8, 16, 32, 64))
TYPES = {8: I8, 16: I16, 32: I32}


class Flags:
    """The arithmetic flags as IR values: CF/AF/ZF/SF/OF as i1, PF as the
    result's low byte (parity is computed only where it is read)."""

    NAMES = ("cf", "af", "zf", "sf", "of", "pfb")

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
        """Condition ``cc`` (0-15, as in Jcc) as an i1."""
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


def alu(b, fl, aop, a, x):
    """The ALU operation ``aop`` (ADD OR ADC SBB AND SUB XOR CMP) on a, x (both i32, i16
    or i8): the result, with the flags set in ``fl`` as ``fastpath.alu32`` (and the
    interpreter's ALU for 8- and 16-bit operands) sets them."""
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


def shift(b, fl, op, a, count):
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


def _imul(b, fl, a, x):
    """IMUL's low half of a * x (signed), with muldiv's flags: CF = OF = the product does
    not fit, SF ZF PF of the low half, AF cleared."""
    ty = a.type
    full = b.mul(b.sext(a, I64), b.sext(x, I64))
    lo = b.trunc(full, ty)
    fl.cf = fl.of = b.icmp_unsigned("!=", full, b.sext(lo, I64))
    fl.af = ir.Constant(I1, 0)
    fl.result(b, lo)
    return lo


class Operands:
    """Reads and writes the operands of one instruction: ``("r", i)`` a register (with
    8-bit operands AL CL DL BL AH CH DH BH), ``("m", base, index, scale, disp)`` memory
    through the region's ``access``, ``("i", value)`` an immediate.

    ``regs`` is the region's register file (``get(i)`` an i32, ``put(i, v)``); a memory
    operand is checked once (``fetch``) and then read and written through its pointer.
    """

    def __init__(self, b, regs, access):
        self.b, self.regs, self.access = b, regs, access
        self.ptr = {}

    def ea(self, m):
        """The effective address (i32) of memory operand ``m``."""
        b = self.b
        _, base, index, scale, disp = m
        v = _c32(disp)
        if base >= 0:
            v = b.add(v, self.regs.get(base))
        if index >= 0:
            v = b.add(v, b.shl(self.regs.get(index), _c32(scale)))
        return v

    def fetch(self, op, w, write):
        """Check a memory operand's access (a side exit if it cannot be made here)."""
        if op[0] == "m":                        # DS or SS: both flat (regionir)
            self.ptr[op] = self.access(self.ea(op), w // 8, write, TYPES[w])

    def get(self, op, w):
        b, ty = self.b, TYPES[w]
        if op[0] == "i":
            return _c(ty, op[1])
        if op[0] == "m":
            return b.load(self.ptr[op], align=1)
        i = op[1]
        if w == 32:
            return self.regs.get(i)
        if w == 8 and i >= 4:
            return b.trunc(b.lshr(self.regs.get(i - 4), _c32(8)), I8)
        return b.trunc(self.regs.get(i), ty)

    def set(self, op, w, v):
        b = self.b
        if op[0] == "m":
            b.store(v, self.ptr[op], align=1)
            return
        i = op[1]
        if w == 32:
            self.regs.put(i, v)
        elif w == 8 and i >= 4:
            r = self.regs.get(i - 4)
            self.regs.put(i - 4, b.or_(b.and_(r, _c32(~0xFF00)),
                                       b.shl(b.zext(v, I32), _c32(8))))
        else:
            r = self.regs.get(i)
            self.regs.put(i, b.or_(b.and_(r, _c32(~((1 << w) - 1))), b.zext(v, I32)))


def lower(b, fl, regs, access, ins):
    """IR for one decoded instruction (``loopjit`` lists the tuples).  Returns the
    branch-taken condition (an i1) of a branch, else None."""
    kind, w = ins[0], ins[2]
    ops = Operands(b, regs, access)
    if kind == "alu":
        _, _, _, aop, dst, src = ins
        ops.fetch(dst, w, aop != 7)
        ops.fetch(src, w, False)
        r = alu(b, fl, aop, ops.get(dst, w), ops.get(src, w))
        if aop != 7:
            ops.set(dst, w, r)
    elif kind == "test":
        _, _, _, a, x = ins
        ops.fetch(a, w, False)
        ops.fetch(x, w, False)
        alu(b, fl, 4, ops.get(a, w), ops.get(x, w))
    elif kind in ("inc", "dec", "not", "neg"):
        op = ins[3]
        ops.fetch(op, w, True)
        a = ops.get(op, w)
        if kind == "not":
            r = b.xor(a, _c(a.type, M32))
        elif kind == "neg":                     # flags as 0 - r
            r = alu(b, fl, 5, _c(a.type, 0), a)
        else:                                   # flags as ADD/SUB 1, CF kept
            r = (b.add if kind == "inc" else b.sub)(a, _c(a.type, 1))
            fl.of = b.icmp_unsigned("==", r if kind == "inc" else a, _c(a.type, 1 << (w - 1)))
            fl.af = _af(b, a, _c(a.type, 1), r)
            fl.result(b, r)
        ops.set(op, w, r)
    elif kind == "mov":
        _, _, _, dst, src = ins
        ops.fetch(src, w, False)
        ops.fetch(dst, w, True)
        ops.set(dst, w, ops.get(src, w))
    elif kind == "movx":                        # MOVZX / MOVSX
        _, _, _, dst, src, sw, signed = ins
        ops.fetch(src, sw, False)
        v = ops.get(src, sw)
        ops.set(("r", dst), w, (b.sext if signed else b.zext)(v, TYPES[w]))
    elif kind == "lea":
        _, _, _, dst, base, index, scale, disp = ins
        regs.put(dst, ops.ea(("m", base, index, scale, disp)))
    elif kind == "shift":
        _, _, _, op, dst, count = ins
        ops.fetch(dst, 32, True)
        ops.set(dst, 32, shift(b, fl, op, ops.get(dst, 32), count))
    elif kind == "imul":                        # ("imul", n, w, dst, src, imm or None)
        _, _, _, dst, src, imm = ins
        ops.fetch(src, w, False)
        x = ops.get(src, w)
        a = x if imm is not None else ops.get(("r", dst), w)
        ops.set(("r", dst), w, _imul(b, fl, a, _c(a.type, imm) if imm is not None else x))
    elif kind == "xchg":
        _, _, _, x, y = ins
        vx, vy = ops.get(x, w), ops.get(y, w)
        ops.set(x, w, vy)
        ops.set(y, w, vx)
    elif kind == "cbw":                         # CBW / CWDE
        half = ops.get(("r", 0), w // 2)
        ops.set(("r", 0), w, b.sext(half, TYPES[w]))
    elif kind == "cwd":                         # CWD / CDQ
        ops.set(("r", 2), w, b.ashr(ops.get(("r", 0), w), _c(TYPES[w], w - 1)))
    elif kind == "setcc":
        _, _, _, cc, dst = ins
        ops.fetch(dst, 8, True)
        ops.set(dst, 8, b.zext(fl.cond(b, cc), I8))
    elif kind == "cmov":                        # the source is read whatever the condition
        _, _, _, cc, dst, src = ins
        ops.fetch(src, w, False)
        old = ops.get(("r", dst), w)
        ops.set(("r", dst), w, b.select(fl.cond(b, cc), ops.get(src, w), old))
    elif kind == "push":                        # 32-bit: the register's value before ESP moves
        v = ops.get(ins[3], 32)
        esp = b.sub(regs.get(4), _c32(4))
        b.store(v, access(esp, 4, True, I32), align=1)
        regs.put(4, esp)
    elif kind == "pop":                         # ESP moves first: POP ESP loads ESP
        esp = regs.get(4)
        v = b.load(access(esp, 4, False, I32), align=1)
        regs.put(4, b.add(esp, _c32(4)))
        ops.set(ins[3], 32, v)
    elif kind == "jcc":
        return fl.cond(b, ins[3])
    elif kind == "jmp":
        return ir.Constant(I1, 1)
    elif kind == "loop":                        # CX or ECX - 1, no flags
        c = b.sub(ops.get(("r", 1), w), _c(TYPES[w], 1))
        ops.set(("r", 1), w, c)
        return b.icmp_unsigned("!=", c, _c(TYPES[w], 0))
    return None
