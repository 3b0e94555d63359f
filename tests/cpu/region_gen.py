"""Random region programs for the translation tier's differential tests.

A program is a prologue (``mov C, N; mov B, base``), a loop head, a body of random
instructions of the forms the tier translates (memory operands through a base pointer into a
data area, byte registers, LEA, shifts and rotates by constants, IMUL, INC/DEC, SETcc,
CMOVcc, XCHG, CBW/CWD, forward branches that skip a few instructions, an occasional inner
loop), a tail that advances the base pointer and counts C down (``dec C; jnz head``,
``sub``, ``LOOP``), then HLT.

Registers: C (the loop counter), B (the base pointer) and I (the inner loop's counter) are
never written by the body, so every run ends and every address stays inside the data area:
an address is B + C*scale + disp, or C*scale + disp, or disp, with B's and C's ranges over
the whole run known when the displacement is chosen.  The other registers, all of their byte
and word parts included, are random data.

No flag is masked against Unicorn: for these forms the flags the manual leaves undefined
are chosen by kjcore (docs/cpu.rst, "Fidelity rules") as QEMU chooses them (AF cleared by
the logic operations, IMUL's SF ZF PF from the low half, the count-1 OF formula of shifts
and rotates), so branches may read them and every arithmetic flag is compared.
"""
from dataclasses import dataclass

ARITH = 0x8D5          # CF PF AF ZF SF OF
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)

CODE = 0x4000          # code page (the next page is mapped too: programs may run into it)
DATA = 0x10000         # data area: DATA .. DATA + program.data_size (1-4 pages)


@dataclass
class Insn:
    """One instruction (branches: encoded at assembly) or a label."""
    kind: str                    # "op", "jcc", "jmp", "loop", "label"
    enc: bytes = b""
    target: str = ""             # label of a branch
    cc: int = 0
    near: bool = False           # rel32 (else rel8)
    mem: bool = False            # has a memory operand
    name: str = ""               # label name (kind "label")


@dataclass
class Program:
    code: bytes
    at: int                      # address of the first byte (the prologue)
    head: int                    # loop head
    hlt: int                     # address of the HLT
    regs: list
    eflags: int
    data: bytes
    data_size: int
    mem_insns: int               # instructions with a memory operand

    def __repr__(self):
        return (f"<Program at={self.at:#x} head={self.head:#x} regs="
                f"{[hex(r) for r in self.regs]} eflags={self.eflags:#x} "
                f"code={self.code.hex()}>")


def _imm(rng, size):
    if rng.random() < 0.3:
        v = rng.choice((0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
                        0x80000000, 0xFFFFFFFF))
    else:
        v = rng.getrandbits(32)
    return (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


class _Gen:
    """The choices for one program (registers, ranges) and its instruction stream."""

    def __init__(self, rng, rewrite):
        self.rng = rng
        self.rewrite = rewrite
        r = rng
        self.C = r.choice((ECX, ECX, EBP, ESI, EDI))
        self.B = r.choice([x for x in (EBX, ESI, EDI, EBP) if x != self.C])
        self.inner = r.random() < 0.35
        left = [x for x in (EAX, ECX, EDX, EBX, EBP, ESI, EDI) if x not in (self.C, self.B)]
        self.I = r.choice(left) if self.inner else None
        self.free = [x for x in left if x != self.I]
        # (a loop head is compiled at its second trip, with a threshold of 1)
        self.N = r.choice((1, 2)) if r.random() < 0.1 else r.choice(
            (3, r.randrange(3, 12), r.randrange(4, 40), r.randrange(20, 100)))
        self.step = r.choice((0, 0, 1, 2, 4, -4, 8, -1, 3))
        self.data_size = r.choice((1, 2, 3, 4)) * 0x1000
        # B's trajectory [lo, hi] over the whole run, inside the data area
        span = abs(self.step) * (self.N - 1)
        room = self.data_size - span
        if r.random() < 0.3:             # start next to a page boundary
            page = DATA + 0x1000 * r.randrange(1, self.data_size // 0x1000 + 1)
            lo = page - r.randrange(0, 40) - (span if self.step > 0 else 0)
            lo = min(max(lo, DATA), DATA + room)
        else:
            lo = DATA + r.randrange(0, room)
        self.blo, self.bhi = lo, lo + span
        self.b0 = lo if self.step >= 0 else lo + span
        self.out = []
        self.labels = 0

    # ---------------------------------------------------------------- operands
    def label(self):
        self.labels += 1
        return f"L{self.labels}"

    def dst_reg(self, size):
        """A register (8-bit: byte register number) the body may write."""
        if size == 1:
            ok = [r for r in range(8) if (r & 3) in self.free]
            return self.rng.choice(ok) if ok else None
        return self.rng.choice(self.free) if self.free else None

    def src_reg(self):
        return self.rng.randrange(8)

    def mem(self, size):
        """ModRM tail bytes (with ModRM's reg field 0) of a memory operand of ``size`` bytes
        that stays inside the data area for the whole run."""
        r = self.rng
        lo_d, hi_d = DATA, DATA + self.data_size - size
        if self.rewrite is not None and r.random() < 0.4:     # [disp32] in the loop
            return bytes([0x05]) + (self.rewrite + 10 + r.randrange(96)).to_bytes(4, "little")
        form = r.randrange(6)
        scale = r.randrange(4)
        if form <= 2:                                     # [B + disp]
            amin, amax = self.blo, self.bhi
        elif form <= 4:                                   # [B + C*s + disp]
            amin, amax = self.blo + (1 << scale), self.bhi + (self.N << scale)
        else:                                             # [C*s + disp] or [disp]
            amin, amax = ((1 << scale), self.N << scale) if r.random() < 0.6 else (0, 0)
            form = 5 if amax else 6
        dmin, dmax = lo_d - amin, hi_d - amax
        disp = r.randint(dmin, dmax)
        if r.random() < 0.3 and form in (0, 3) and max(dmin, -128) <= min(dmax, 127):
            disp = r.randint(max(dmin, -128), min(dmax, 127))
        d8 = -128 <= disp <= 127
        B, C = self.B, self.C
        if form in (0, 1, 2):
            if disp == 0 and B != EBP and r.random() < 0.5:
                return bytes([0x00 | B])
            if d8 and form != 2:
                return bytes([0x40 | B, disp & 0xFF])
            return bytes([0x80 | B]) + (disp & 0xFFFFFFFF).to_bytes(4, "little")
        if form in (3, 4):
            sib = scale << 6 | C << 3 | B
            if d8 and form == 3:
                return bytes([0x44, sib, disp & 0xFF])
            return bytes([0x84, sib]) + (disp & 0xFFFFFFFF).to_bytes(4, "little")
        if form == 5:
            sib = scale << 6 | C << 3 | 5
            return bytes([0x04, sib]) + (disp & 0xFFFFFFFF).to_bytes(4, "little")
        return bytes([0x05]) + (disp & 0xFFFFFFFF).to_bytes(4, "little")

    def rm(self, size, write, memory=None):
        """(ModRM tail with reg field 0, is-memory): a register or memory operand."""
        r = self.rng
        if memory is None:
            memory = r.random() < 0.6
        if not memory:
            reg = self.dst_reg(size) if write else self.src_reg()
            if reg is not None:
                return bytes([0xC0 | reg]), False
        return self.mem(size), True

    @staticmethod
    def with_reg(tail, reg):
        return bytes([tail[0] | reg << 3]) + tail[1:]

    def emit(self, enc, mem):
        self.out.append(Insn("op", enc, mem=mem))

    # ---------------------------------------------------------------- instructions
    def size(self):
        return self.rng.choice((1, 2, 4, 4))

    def insn(self):
        """Append one random body instruction."""
        r = self.rng
        size = self.size()
        pre = b"\x66" if size == 2 else b""
        w = 0 if size == 1 else 1
        k = r.randrange(16)
        if k <= 2:                                        # ALU r/m,reg and reg,r/m
            aop = r.randrange(8)
            if r.random() < 0.5:                          # r/m is the destination
                tail, m = self.rm(size, aop != 7)
                reg = self.src_reg()
                op = aop << 3 | w
            else:
                reg = self.dst_reg(size) if aop != 7 else self.src_reg()
                if reg is None:
                    return
                tail, m = self.rm(size, False)
                op = aop << 3 | 2 | w
            self.emit(pre + bytes([op]) + self.with_reg(tail, reg), m)
        elif k == 3:                                      # 80/81/83 and AL/eAX forms
            aop = r.randrange(8)
            if r.random() < 0.2 and (EAX in self.free or aop == 7):
                enc = pre + bytes([aop << 3 | 4 | w]) + _imm(r, min(size, 4))
                self.emit(enc, False)
                return
            tail, m = self.rm(size, aop != 7)
            if size == 1:
                enc = b"\x80" + self.with_reg(tail, aop) + _imm(r, 1)
            elif r.random() < 0.5:
                enc = pre + b"\x83" + self.with_reg(tail, aop) + _imm(r, 1)
            else:
                enc = pre + b"\x81" + self.with_reg(tail, aop) + _imm(r, size)
            self.emit(enc, m)
        elif k == 4:                                      # TEST
            if r.random() < 0.5:
                tail, m = self.rm(size, False)
                enc = pre + bytes([0x84 | w]) + self.with_reg(tail, self.src_reg())
            else:
                tail, m = self.rm(size, False)
                enc = pre + bytes([0xF6 | w]) + tail + _imm(r, size)
            self.emit(enc, m)
        elif k == 5:                                      # NOT / NEG
            sub = r.choice((2, 3))
            tail, m = self.rm(size, True)
            self.emit(pre + bytes([0xF6 | w]) + self.with_reg(tail, sub), m)
        elif k == 6:                                      # INC / DEC
            sub = r.randrange(2)
            tail, m = self.rm(size, True)
            if not m and size != 1 and r.random() < 0.5:
                enc = pre + bytes([0x40 | sub << 3 | (tail[0] & 7)])
            else:
                enc = pre + bytes([0xFE | w]) + self.with_reg(tail, sub)
            self.emit(enc, m)
        elif k in (7, 8):                                 # MOV
            f = r.randrange(4)
            if f == 0:                                    # store
                tail, m = self.rm(size, True, memory=True)
                enc = pre + bytes([0x88 | w]) + self.with_reg(tail, self.src_reg())
            elif f == 1:                                  # load
                reg = self.dst_reg(size)
                if reg is None:
                    return
                tail, m = self.rm(size, False)
                enc = pre + bytes([0x8A | w]) + self.with_reg(tail, reg)
            elif f == 2:                                  # C6/C7
                tail, m = self.rm(size, True)
                enc = pre + bytes([0xC6 | w]) + tail + _imm(r, size)
            else:                                         # B0-BF
                reg = self.dst_reg(size)
                if reg is None:
                    return
                enc, m = pre + bytes([(0xB8 if w else 0xB0) | reg]) + _imm(r, size), False
            self.emit(enc, m)
        elif k == 9:                                      # MOVZX / MOVSX
            src = r.choice((1, 2))
            dsz = r.choice((2, 4, 4)) if src == 1 else 4
            reg = self.dst_reg(dsz)
            if reg is None:
                return
            tail, m = self.rm(src, False)
            op = r.choice((0xB6, 0xBE)) | (src == 2)
            enc = (b"\x66" if dsz == 2 else b"") + bytes([0x0F, op]) + self.with_reg(tail, reg)
            self.emit(enc, m)
        elif k == 10:                                     # LEA: any registers (no access)
            reg = self.dst_reg(4)
            if reg is None:
                return
            mod = r.randrange(3)
            rm = r.randrange(8)
            enc = bytes([0x8D, mod << 6 | reg << 3 | rm])
            if rm == 4:
                enc += bytes([r.getrandbits(8)])
            if mod == 1:
                enc += bytes([r.getrandbits(8)])
            elif mod == 2 or (mod == 0 and (rm == 5 or rm == 4 and enc[2] & 7 == 5)):
                enc += _imm(r, 4)
            self.emit(enc, False)
        elif k == 11:                                     # shifts and rotates by constants
            op = r.choice((0, 1, 4, 5, 6, 7))
            size = 4 if r.random() < 0.75 else size        # 8 and 16 bits: rarer
            pre, w = b"\x66" if size == 2 else b"", 0 if size == 1 else 1
            tail, m = self.rm(size, True)
            one = r.random() < 0.3
            count = 1 if one else r.choice((0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33,
                                            r.getrandbits(8)))
            enc = pre + bytes([(0xD0 if one else 0xC0) | w]) + self.with_reg(tail, op)
            self.emit(enc + (b"" if one else bytes([count])), m)
        elif k == 12:                                     # IMUL
            size = r.choice((2, 4, 4))
            pre = b"\x66" if size == 2 else b""
            reg = self.dst_reg(size)
            if reg is None:
                return
            tail, m = self.rm(size, False)
            f = r.randrange(3)
            if f == 0:
                enc = pre + b"\x0f\xaf" + self.with_reg(tail, reg)
            elif f == 1:
                enc = pre + b"\x69" + self.with_reg(tail, reg) + _imm(r, size)
            else:
                enc = pre + b"\x6b" + self.with_reg(tail, reg) + _imm(r, 1)
            self.emit(enc, m)
        elif k == 14:                                     # SETcc, CMOVcc, XCHG
            f = r.randrange(3)
            if f == 0:
                tail, m = self.rm(1, True)
                enc = bytes([0x0F, 0x90 | r.randrange(16)]) + tail
            else:
                size = r.choice((2, 4, 4)) if f == 1 else size
                reg = self.dst_reg(size)
                if reg is None:
                    return
                tail, m = self.rm(size, f == 2)
                op = [0x0F, 0x40 | r.randrange(16)] if f == 1 else [0x86 | (size > 1)]
                enc = (b"\x66" if size == 2 else b"") + bytes(op) + self.with_reg(tail, reg)
            self.emit(enc, m)
        elif k == 15:                                     # CBW/CWDE, CWD/CDQ, NOP
            f = r.randrange(3)
            if f < 2 and (EAX if f == 0 else EDX) in self.free:
                self.emit((b"\x66" if size == 2 else b"") + bytes([0x98 + f]), False)
            else:
                self.emit(b"\x90", False)

    def body(self, n, exit_label):
        """``n`` items: instructions, forward skips (some out of the loop, to
        ``exit_label``) and, if there is an inner counter, at most one inner loop."""
        r = self.rng
        pending = []                                     # (label, item it goes before)
        inner_done = self.I is None
        for i in range(n):
            for p in [p for p in pending if p[1] <= i]:
                self.out.append(Insn("label", name=p[0]))
                pending.remove(p)
            x = r.random()
            if x < 0.12:                                  # forward Jcc / JMP over a few items
                lab = self.label()
                if r.random() < 0.08:
                    lab = exit_label                      # out of the loop, to the HLT
                else:
                    pending.append((lab, i + 1 + r.randrange(0, 4)))
                if r.random() < 0.1:
                    self.out.append(Insn("jmp", target=lab, near=r.random() < 0.3))
                else:
                    cc = r.randrange(16)
                    self.out.append(Insn("jcc", target=lab, cc=cc,
                                         near=r.random() < 0.3))
            elif x < 0.18 and not inner_done:
                inner_done = True
                self.inner_loop()
            else:
                self.insn()
        for p in pending:
            self.out.append(Insn("label", name=p[0]))

    def inner_loop(self):
        """``mov I, 1..6; L: 1-4 instructions; I -= 1; jnz L``."""
        r = self.rng
        count = r.randrange(1, 7)
        self.out.append(Insn("op", bytes([0xB8 | self.I]) + count.to_bytes(4, "little")))
        head = self.label()
        self.out.append(Insn("label", name=head))
        for _ in range(r.randrange(1, 5)):
            self.insn()
        self.countdown(self.I, head)

    def countdown(self, reg, head):
        """``reg`` -= 1 and branch back to ``head`` while it is not 0."""
        r = self.rng
        k = r.randrange(4)
        if reg == ECX and k == 0:
            self.out.append(Insn("loop", target=head))
            return
        if k == 1:
            self.emit(bytes([0x83, 0xE8 | reg, 1]), False)                 # sub reg,1
            cc = r.choice((5, 7))                                          # jne / ja
        elif k == 2:
            self.emit(bytes([0x48 | reg]), False)
            self.emit(bytes([0x85, 0xC0 | reg << 3 | reg]), False)
            cc = 5
        else:
            self.emit(bytes([0x48 | reg]), False)
            cc = 5
        self.out.append(Insn("jcc", target=head, cc=cc,
                             near=r.random() < 0.2))


def _assemble(items, at):
    """Bytes of ``items`` placed at ``at`` and the label addresses (rel8 branches that do
    not reach become rel32)."""
    while True:
        addr, labels = at, {}
        for it in items:
            if it.kind == "label":
                labels[it.name] = addr
            elif it.kind in ("jcc", "jmp", "loop"):
                addr += (6 if it.kind == "jcc" else 5) if it.near else 2
            else:
                addr += len(it.enc)
        out, addr, grown = bytearray(), at, False
        for i, it in enumerate(items):
            if it.kind == "label":
                continue
            if it.kind in ("jcc", "jmp", "loop"):
                n = (6 if it.kind == "jcc" else 5) if it.near else 2
                rel = labels[it.target] - (addr + n)
                if not it.near and not -128 <= rel <= 127:
                    it.near, grown = True, True
                    if it.kind == "loop":                  # LOOP has no rel32: dec ecx; jnz
                        it.kind, it.cc = "jcc", 5
                        items.insert(i, Insn("op", b"\x49"))
                    break
                if it.kind == "loop":
                    enc = bytes([0xE2, rel & 0xFF])
                elif it.near:
                    enc = (bytes([0x0F, 0x80 | it.cc]) if it.kind == "jcc" else b"\xe9") + \
                        (rel & 0xFFFFFFFF).to_bytes(4, "little")
                else:
                    enc = bytes([0x70 | it.cc if it.kind == "jcc" else 0xEB, rel & 0xFF])
                it.enc = enc
            out += it.enc
            addr += len(it.enc)
        if not grown:
            return bytes(out), labels


def random_program(rng, at=None, rewrite=False):
    """A random region program (see the module docstring); ``rng``: a random.Random.
    ``at``: where it starts; with ``rewrite`` (``at`` in the first page of the data area)
    40 % of its memory operands address the first 96 bytes of its loop."""
    g = _Gen(rng, at if rewrite else None)
    r = rng
    exit_label = "exit"
    items = g.out
    items.append(Insn("op", bytes([0xB8 | g.C]) + g.N.to_bytes(4, "little")))
    items.append(Insn("op", bytes([0xB8 | g.B]) + (g.b0 & 0xFFFFFFFF).to_bytes(4, "little")))
    items.append(Insn("label", name="head"))
    g.body(r.randrange(1, 24), exit_label)
    if g.step:                                              # advance the base pointer
        if r.random() < 0.5:
            g.emit(bytes([0x83, 0xC0 | g.B, g.step & 0xFF]), False)
        else:
            g.emit(bytes([0x8D, 0x40 | g.B << 3 | g.B, g.step & 0xFF]), False)
    g.countdown(g.C, "head")
    items.append(Insn("label", name=exit_label))
    items.append(Insn("op", b"\xf4"))
    if at is None:
        at = CODE + r.randrange(0, 0xF00)
        if r.random() < 0.08:
            at = CODE + 0x1000 - r.randrange(8, 120)       # the loop runs into the next page
    code, labels = _assemble(items, at)
    regs = [r.getrandbits(32) for _ in range(8)]
    regs[ESP] = 0x9000
    flags = 0x2 | (r.getrandbits(12) & ARITH)
    data = r.randbytes(g.data_size)
    return Program(code, at, labels["head"], labels[exit_label], regs, flags, data,
                   g.data_size, sum(it.mem for it in items))


def program_from(code, regs=None, eflags=0x2, at=CODE, data=b"", data_size=0x1000):
    """A Program from hand-written code (the prologue included) at ``at``."""
    regs = list(regs or [0] * 8)
    regs[ESP] = regs[ESP] or 0x9000
    data = data + bytes(data_size - len(data))
    return Program(code, at, at, at + len(code) - 1, regs, eflags, data, data_size, 0)


def loop_through_page(store, width=4, n=64):
    """A loop that walks ESI over the data area 4 bytes per iteration, loading (or
    storing, with ``store``) ``width`` bytes at [esi+2] (page-crossing at the boundary),
    summing into EAX; ESI starts 128 bytes before the second data page."""
    pre = {1: b"", 2: b"\x66", 4: b""}[width]
    op = (0x88 if width == 1 else 0x89) if store else (0x8A if width == 1 else 0x8B)
    access = pre + bytes([op, 0x56, 0x02])                      # mov [esi+2],dl / dl,[esi+2]
    body = (access + b"\x01\xd0"                                # add eax, edx
            + b"\x0f\xb6\x5e\x01" + b"\x83\xc6\x04")            # movzx ebx,[esi+1]; add esi,4
    code = (b"\xb9" + n.to_bytes(4, "little") + b"\xbe" + (DATA + 0xF80).to_bytes(4, "little")
            + body + b"\x49" + bytes([0x75, (-(len(body) + 3)) & 0xFF]) + b"\xf4")
    regs = [0, 0, 0x11223344, 0, 0, 0, 0, 0]
    return program_from(code, regs, data=bytes(range(256)) * 16, data_size=0x2000)


def patching_loop(store, later=True):
    """``mov ecx, 40; xor ebx, ebx; L: [store before]; add ebx, imm; [store after];
    dec ecx; jnz L; hlt`` where the store (bytes given with a 0 placeholder for the
    address, patched here) writes into the ADD's immediate: before the ADD (``later``) it
    changes the instruction about to run, after it the next iteration's."""
    add = b"\x81\xc3\x01\x00\x00\x00"                           # add ebx, imm32
    pre = b"\xb9\x28\x00\x00\x00\x31\xdb"
    at_add = CODE + len(pre) + (len(store) if later else 0)
    st = store.replace(b"\0\0\0\0", (at_add + 2).to_bytes(4, "little"))
    body = st + add if later else add + st
    code = pre + body + b"\x49" + bytes([0x75, (-(len(body) + 3)) & 0xFF]) + b"\xf4"
    return program_from(code, [0x1234567, 0, 0, 0, 0, 0, 0, 0])


PATCHES = {
    "mov byte": b"\x88\x0d\0\0\0\0",                           # mov [imm], cl
    "mov dword": b"\x89\x0d\0\0\0\0",                          # mov [imm], ecx
    "mov word": b"\x66\x89\x0d\0\0\0\0",                       # mov [imm], cx
    "add byte": b"\x80\x05\0\0\0\0\x03",                       # add byte [imm], 3
    "xor dword": b"\x31\x05\0\0\0\0",                          # xor [imm], eax
    "mov imm": b"\xc7\x05\0\0\0\0\x05\x00\x00\x00",            # mov dword [imm], 5
}
