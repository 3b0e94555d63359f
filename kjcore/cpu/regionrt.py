"""The functions every compiled region calls, compiled once per code cache.

A region (``regionir.py``) calls them by address: ``walk``, the out-of-line
part of a memory access, and ``trace``, which writes the trace ring from the
region's block log on the way out.  Compiling them once instead of into every
region takes about a fifth off each region's compile time.
"""
from llvmlite import ir

from .loopir import I1, I64
from .memory import T_DIRTY, T_SWRITE, T_UREAD, T_UWRITE
from .state import A20_CLEAR, CPL, CR0, M32, ROM_HI, ROM_LO, TLB, TLB_SETS, TLB_WAYS, TRACE, TRACE_N

CR0_PG = 1 << 31
P64 = I64.as_pointer()
#: The functions' types, by name.
TYPES = {
    "walk": ir.FunctionType(I64, [P64] + [I64] * 6),
    "trace": ir.FunctionType(ir.VoidType(), [P64, P64] + [I64] * 4 + [P64, P64]),
}


def _k(v):
    return ir.Constant(I64, v)


def _walk(mod):
    """``i64 walk(i64* s, i64 lin, i64 n, i64 write, i64 p, i64 size, i64 ramsize)``.

    The physical page of linear ``lin`` for an ``n``-byte access (read, or write if
    ``write``) that stays in its page, or -1 when the interpreter must make it: no TLB
    entry (paging on), a permission the entry lacks for the CPL, beyond RAM, or a write
    meeting the ROM or the region's ``size`` bytes at physical ``p``.  Bit 0 of the page
    is set when every check passes for the whole page (the operand may remember it).
    """
    fn = ir.Function(mod, TYPES["walk"], "walk")
    s, lin, n, write, p, size, ramsize = fn.args
    b = ir.IRBuilder(fn.append_basic_block())

    def sload(k):
        return b.load(b.gep(s, [k if isinstance(k, ir.Value) else _k(k)]))

    def meets(lo, hi):
        rom = b.and_(b.icmp_unsigned("<", lo, sload(ROM_HI)),
                     b.icmp_unsigned(">", hi, sload(ROM_LO)))
        code = b.and_(b.icmp_unsigned("<", lo, b.add(p, size)), b.icmp_unsigned(">", hi, p))
        return b.and_(b.trunc(write, I1), b.or_(rom, code))

    paging = b.icmp_unsigned("!=", b.and_(sload(CR0), _k(CR0_PG)), _k(0))
    user = b.icmp_unsigned("==", sload(CPL), _k(3))
    need = b.select(b.trunc(write, I1),
                    b.select(user, _k(T_UREAD | T_UWRITE | T_DIRTY), _k(T_SWRITE | T_DIRTY)),
                    b.select(user, _k(T_UREAD), _k(0)))
    vpn = b.lshr(lin, _k(12))
    k = b.add(_k(TLB), b.mul(b.and_(b.xor(vpn, b.lshr(vpn, _k(7))), _k(TLB_SETS - 1)),
                             _k(3 * TLB_WAYS)))
    way0 = b.icmp_unsigned("==", sload(k), vpn)
    way1 = b.icmp_unsigned("==", sload(b.add(k, _k(3))), vpn)
    k = b.select(way0, k, b.add(k, _k(3)))
    denied = b.icmp_unsigned("!=", b.and_(sload(b.add(k, _k(2))), need), need)
    bad = b.and_(paging, b.or_(b.not_(b.or_(way0, way1)), denied))
    a20 = b.xor(sload(A20_CLEAR), _k(-1))
    page = b.select(paging, sload(b.add(k, _k(1))), b.and_(b.and_(lin, a20), _k(~0xFFF)))
    ph = b.or_(page, b.and_(lin, _k(0xFFF)))
    end = b.add(ph, n)
    bad = b.or_(bad, b.or_(b.icmp_unsigned(">", end, ramsize), meets(ph, end)))
    top = b.add(page, _k(4096))
    clean = b.and_(b.icmp_unsigned("<=", top, ramsize), b.not_(meets(page, top)))
    b.ret(b.select(bad, _k(-1), b.or_(page, b.zext(clean, I64))))


def _trace(mod):
    """``void trace(i64* s, i64* log, i64 logged, i64 steps, i64 tslot, i64 lin,
    i64* offsets, i64* first)``.

    Write the trace ring's last min(steps, TRACE_N) entries of a region, entry i in slot
    (tslot + i) mod TRACE_N, from its block log: ``logged`` entries (the newest TRACE_N
    kept, entry j at j mod TRACE_N), each ``first entry << 16 | block``, a run of that
    block (once, or many times over when it branches to itself) up to the next entry;
    block ``k``'s instructions are at region offsets ``offsets[first[k]:first[k + 1]]``,
    ``lin`` is the region's linear address.
    """
    fn = ir.Function(mod, TYPES["trace"], "trace")
    s, log, logged, steps, tslot, lin, offsets, first = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    lo = b.select(b.icmp_signed(">", steps, _k(TRACE_N)), b.sub(steps, _k(TRACE_N)), _k(0))
    j, end, i = (b.alloca(I64) for _ in range(3))
    b.store(b.sub(logged, _k(1)), j)
    b.store(steps, end)
    blocks, block, step, stepped, nxt, out = (fn.append_basic_block() for _ in range(6))
    b.branch(blocks)
    b.position_at_end(blocks)                  # the next older block, if still needed
    b.cbranch(b.and_(b.icmp_signed(">=", b.load(j), _k(0)),
                     b.icmp_signed(">", b.load(end), lo)), block, out)
    b.position_at_end(block)
    e = b.load(b.gep(log, [b.and_(b.load(j), _k(TRACE_N - 1))]))
    st = b.ashr(e, _k(16))
    blk = b.and_(e, _k(0xFFFF))
    base = b.load(b.gep(first, [blk]))
    size = b.sub(b.load(b.gep(first, [b.add(blk, _k(1))])), base)
    b.store(b.select(b.icmp_signed(">", st, lo), st, lo), i)
    b.branch(step)
    b.position_at_end(step)                    # its steps from max(st, lo) to end - 1
    b.cbranch(b.icmp_signed("<", b.load(i), b.load(end)), stepped, nxt)
    b.position_at_end(stepped)
    k = b.load(i)
    off = b.load(b.gep(offsets, [b.add(base, b.urem(b.sub(k, st), size))]))
    slot = b.add(_k(TRACE), b.and_(b.add(tslot, k), _k(TRACE_N - 1)))
    b.store(b.and_(b.add(lin, off), _k(M32)), b.gep(s, [slot]))
    b.store(b.add(k, _k(1)), i)
    b.branch(step)
    b.position_at_end(nxt)
    b.store(st, end)
    b.store(b.sub(b.load(j), _k(1)), j)
    b.branch(blocks)
    b.position_at_end(out)
    b.ret_void()


def module():
    """The LLVM module of the shared functions (``TYPES`` names them)."""
    mod = ir.Module(name="regionrt")
    _walk(mod)
    _trace(mod)
    return mod
