"""Differential testing of kjcore's CPU against Unicorn, one instruction at a time.

A case is: instruction bytes at CODE, random general registers and flags,
random bytes in the data window [0, DATA).  Memory operands are steered into
the data window by choosing the addressing registers and displacements; data
registers stay fully random.  Both emulators execute exactly one instruction;
the comparison covers EAX..EDI, EIP, EFLAGS (minus the flags the manual calls
undefined for that instruction, see ``undefined_flags``), every byte of the
data window, and the exception vector when one is raised.

Which opcodes exist, their families, ModRM, immediates and LOCK rules come
from the opcode table (``kjcore/cpu/isa.py``), and every generated
instruction's length is checked against the table's Python decoder.

kjcore runs with IDT limit 0, so an exception ends in a triple fault whose
first vector is compared with the vector Unicorn reports through its
interrupt hook (or UC_ERR_INSN_INVALID for #UD).
"""
import random

import numpy as np
from unicorn import (
    UC_ARCH_X86,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_INSN_INVALID,
    UC_HOOK_INTR,
    UC_MODE_16,
    UC_MODE_32,
    Uc,
    UcError,
)
from unicorn import x86_const as X

from kjcore.cpu import CPU, Status
from kjcore.cpu import state as S
from kjcore.cpu.isa import (
    F_ALU,
    F_ATOMIC,
    F_BCD,
    F_BITS,
    F_COND,
    F_FLAGS,
    F_GRP3,
    F_GRP5,
    F_INCDEC,
    F_INT,
    F_JUMP,
    F_MOV,
    F_MULDIV,
    F_SHIFT,
    F_STACK,
    F_STRING,
    I_B,
    I_ENTER,
    I_FAR,
    I_GRP3,
    I_MOFFS,
    I_W,
    I_Z,
    IMM_SHIFT,
    LOCK_SHIFT,
    O_MODRM,
    OP_FAMILY,
    OP_FLAGS,
    decode_insn,
)

RAM = 0x40000
DATA = 0x20000
CODE = 0x30000
UC_REGS = (X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
           X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)
CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
ARITH = CF | PF | AF | ZF | SF | OF
# Flags compared: arithmetic, TF, IF, DF, IOPL, NT, AC, ID.
FLAG_MASK = ARITH | 0x100 | 0x200 | 0x400 | 0x3000 | 0x4000 | 0x40000 | 0x200000

# Opcodes whose operation needs a descriptor table, a port, the FPU, or model
# information (CPUID, RDTSC): covered by scenario tests instead.
EXCLUDE = {0x07, 0x17, 0x1F, 0x1A1, 0x1A9, 0x8E, 0xC4, 0xC5, 0x1B2, 0x1B4, 0x1B5,
           0x9A, 0xEA, 0xCA, 0xCB, 0xCF, 0xF4, 0x1A2, 0x131, 0x130, 0x132, 0x118}


SEG_REGS = (("es", X.UC_X86_REG_ES), ("cs", X.UC_X86_REG_CS), ("ss", X.UC_X86_REG_SS),
            ("ds", X.UC_X86_REG_DS), ("fs", X.UC_X86_REG_FS), ("gs", X.UC_X86_REG_GS))
#: real-mode selectors of the 16-bit oracle: every data segment inside [0, DATA), CS at CODE
REAL_SELECTORS = {"es": 0x0800, "cs": CODE >> 4, "ss": 0x1000, "ds": 0x1000, "fs": 0,
                  "gs": 0x1000}
#: opcodes a real-mode oracle runs beyond user_opcodes(): segment loads and far transfers
#: need no descriptor table there
REAL_EXTRA = (0x07, 0x17, 0x1F, 0x1A1, 0x1A9, 0x8E, 0xC4, 0xC5, 0x1B2, 0x1B4, 0x1B5,
              0x9A, 0xEA, 0xCA, 0xCB, 0xCF)


def real_layout(cpu, uc):
    """Both emulators in real mode with :data:`REAL_SELECTORS` (limits 0xFFFF), IDTR limit 0
    (every exception ends in a triple fault whose first vector is compared)."""
    cpu.reset()
    for name, r in SEG_REGS:
        sel = REAL_SELECTORS[name]
        cpu.load_segment(name, sel, sel << 4, 0xFFFF, 0x93)
        uc.reg_write(r, sel)
    cpu.idtr.limit = 0
    cpu.edx = 0


def user_opcodes():
    """Opcodes from the table that the random oracle exercises, by family."""
    fams = {F_ALU, F_INCDEC, F_STACK, F_JUMP, F_GRP5, F_GRP3, F_SHIFT, F_MOV, F_STRING,
            F_FLAGS, F_BCD, F_BITS, F_COND, F_ATOMIC, F_INT, F_MULDIV}
    ops = [op for op in range(512) if OP_FAMILY[op] in fams and op not in EXCLUDE]
    ops = [op for op in ops if op not in range(0x6C, 0x70)]          # INS/OUTS: ports
    ops.append(0x10B)                                                # UD2
    return ops


def pick_value(rng):
    r = rng.random()
    if r < 0.15:
        return rng.choice((0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
                           0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x80000001))
    if r < 0.3:
        return rng.getrandbits(8)
    if r < 0.4:
        return rng.getrandbits(16)
    return rng.getrandbits(32)


class Case:
    def __init__(self, code, regs, eflags, undefined=0, skip_regs=False, string=False):
        self.string = string
        self.code = code
        self.regs = regs
        self.eflags = eflags
        self.undefined = undefined
        self.skip_regs = skip_regs

    def __repr__(self):
        regs = " ".join(f"{n}={v:08x}" for n, v in zip(S.REG_NAMES, self.regs))
        return f"<Case {self.code.hex(' ')} {regs} efl={self.eflags:08x}>"


def gen_case(rng, op, code16=False):
    """A random instance of opcode ``op`` (0x100 | second byte for 0F xx); ``code16``: for
    16-bit code (0x66/0x67 select 32 bits), as in real mode."""
    fl = int(OP_FLAGS[op])
    regs = [pick_value(rng) for _ in range(8)]
    regs[4] = rng.randrange(0x10000, 0x1F000) & ~rng.choice((0, 1, 3))   # ESP
    eflags = 2 | (rng.getrandbits(12) & (ARITH | 0x400)) | (0x200 if rng.random() < 0.5 else 0)
    pre = bytearray()
    dflt = 2 if code16 else 4
    osz = asz = dflt
    # 32-bit ENTER on a 16-bit stack: QEMU sets EBP from the whole ESP, the SDM from SP.
    if rng.random() < 0.3 and op not in (0x1C7,) and not (code16 and op == 0xC8):
        pre.append(0x66)
        osz = 6 - dflt
    modrm_form = bool(fl & O_MODRM)
    string = OP_FAMILY[op] == F_STRING or op == 0xD7
    if (modrm_form or string or op in range(0xA0, 0xA4)) and rng.random() < 0.15:
        pre.append(0x67)
        asz = 6 - dflt
    if rng.random() < 0.1:
        # No CS override: Unicorn does not check segment types in flat mode,
        # so a write through CS succeeds there instead of raising #GP(0)
        # (SDM vol. 3, 5.4.1); test_segmentation covers that rule.
        pre.append(rng.choice((0x26, 0x36, 0x3E, 0x64, 0x65)))
    if string and rng.random() < 0.6:
        pre.append(rng.choice((0xF2, 0xF3)))
    body = bytearray()
    if op >= 0x100:
        body += bytes((0x0F, op & 0xFF))
    else:
        body.append(op)
    undefined = 0
    reg = None
    if modrm_form:
        modrm = rng.getrandbits(8)
        if op == 0x1C7:
            # Only CMPXCHG8B m64: Unicorn also implements RDRAND/RDSEED here,
            # which a P6-class part (and kjcore) does not have (#UD).
            modrm = ((modrm & 0x87) | 0x08) & 0xBF
        if op == 0xFF and (modrm >> 3) & 7 in (3, 5) and not code16:
            modrm ^= 0x08                                             # far forms excluded
        if op in (0xF6, 0xF7) and (modrm >> 3) & 7 == 1:
            # F6/F7 /1 is an undocumented alias of TEST on Intel and AMD
            # parts; Unicorn raises #UD (see test_unicorn_bugs.py).
            modrm &= ~0x38
        if op in (0x8F, 0xC6, 0xC7):
            modrm &= ~0x38              # only /0 exists; Unicorn ignores the reg field
        if op in (0x62, 0x8D, 0x1C7) and rng.random() < 0.9:
            modrm &= 0xBF if modrm >= 0xC0 else 0xFF                  # mostly memory forms
        if rng.random() < 0.5 and modrm >= 0xC0:
            modrm &= 0x3F | (rng.getrandbits(2) << 6 & 0x80)
        body.append(modrm)
        mod, reg, rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
        if mod != 3:
            body += _address(rng, regs, mod, rm, asz)
            if lockable(op, reg) and rng.random() < 0.08:
                # Only legal LOCK forms: Unicorn misses several #UD cases
                # (LOCK on a register destination or a non-RMW sub-op).
                pre.insert(0, 0xF0)
    imm = (fl >> IMM_SHIFT) & 15
    if imm == I_B:
        body.append(rng.getrandbits(8))
    elif imm == I_W:
        # RET imm16 below 0x8000: Unicorn sign-extends imm16 (test_unicorn_bugs.py).
        body += rng.getrandbits(15 if op == 0xC2 else 16).to_bytes(2, "little")
    elif imm == I_Z:
        body += rng.getrandbits(8 * osz).to_bytes(osz, "little")
    elif imm == I_MOFFS:
        body += rng.randrange(0, DATA - 8 if asz == 4 else 0xFFF8).to_bytes(asz, "little")
    elif imm == I_ENTER:
        body += rng.getrandbits(16).to_bytes(2, "little")
        body.append(rng.choice((0, 0, 1, 2, 3, rng.getrandbits(8))))
        regs[5] = rng.randrange(0x10000, 0x1F000)
    elif imm == I_GRP3:
        if reg is not None and reg < 2:
            size = 1 if op == 0xF6 else osz
            body += rng.getrandbits(8 * size).to_bytes(size, "little")
    elif imm == I_FAR:                  # real mode only: any selector is a paragraph
        body += rng.getrandbits(8 * osz).to_bytes(osz, "little") + rng.getrandbits(16).to_bytes(
            2, "little")
    # Keep pointer registers of implicit operands inside the data window.
    if string:
        regs[6] = rng.randrange(0x1000, 0xF000)
        regs[7] = rng.randrange(0x1000, 0xF000)
        count = rng.choice((0, 1, 2, 3, rng.randrange(0, 64), rng.randrange(0, 2048)))
        regs[1] = count | (regs[1] & 0xFFFF0000 if asz == 2 else 0)
    if op == 0xD7:
        regs[3] = rng.randrange(0x1000, 0xF000)
    if op == 0xC9:
        regs[5] = rng.randrange(0x10000, 0x1F000)
    if op in (0x1A3, 0x1AB, 0x1B3, 0x1BB) and mod != 3:
        # BT* m, r: the bit offset in a register addresses beyond the operand.
        regs[reg] = rng.randrange(-0x4000, 0x4000) & 0xFFFFFFFF
        if reg == 4:
            regs[4] = rng.randrange(0x10000, 0x1F000)
    undefined = undefined_flags(op, osz, reg, regs, body, pre)
    skip = False
    if op in (0x1A4, 0x1A5, 0x1AC, 0x1AD) and osz == 2:
        count = (body[-1] if op in (0x1A4, 0x1AC) else regs[1]) & 31
        if count > 16:
            skip = True                                                # result undefined
    if op in range(0x1C8, 0x1D0) and osz == 2:
        skip = True                                                    # BSWAP r16 undefined
    code = bytes(pre + body)
    ins = decode_insn(code, code32=not code16)
    assert ins is None or ins.length == len(code), f"{code.hex()}: table says {ins.length} bytes"
    return Case(code, regs, eflags, undefined, skip, OP_FAMILY[op] == F_STRING)


def lockable(op, reg):
    """LOCK is legal on form ``op`` /``reg`` with a memory operand (the table's
    lock column), and cross-checked: LOCK NEG is left out, as Unicorn computes
    SF/PF/AF differently from plain NEG there (test_unicorn_bugs.py)."""
    if op in (0xF6, 0xF7) and reg == 3:
        return False
    return (int(OP_FLAGS[op]) >> LOCK_SHIFT >> reg) & 1 == 1


def _address(rng, regs, mod, rm, asz):
    """Bytes after ModRM, and register values, keeping the address in the data window."""
    out = bytearray()
    if asz == 2:
        for r in (3, 5, 6, 7):
            if rng.random() < 0.7:
                regs[r] = (regs[r] & 0xFFFF0000) | rng.randrange(0, 0x8000)
        if mod == 1:
            out.append(rng.getrandbits(8))
        elif mod == 2 or (mod == 0 and rm == 6):
            out += rng.getrandbits(16).to_bytes(2, "little")
        return out
    base = rm
    if rm == 4:
        sib = rng.getrandbits(8)
        out.append(sib)
        base = sib & 7
        idx = (sib >> 3) & 7
        if idx != 4:
            regs[idx] = rng.randrange(0, 0x1000)
        if base == 5 and mod == 0:
            out += rng.randrange(0, 0x8000).to_bytes(4, "little")
            base = None
    elif rm == 5 and mod == 0:
        out += rng.randrange(0, DATA - 16).to_bytes(4, "little")
        base = None
    if base is not None:
        if base == 4:
            regs[4] = rng.randrange(0x10000, 0x16000)
        elif base == 5 and rng.random() < 0.5:
            regs[5] = rng.randrange(0x10000, 0x16000)
        else:
            regs[base] = rng.randrange(0x1000, 0x9000)
        if rm == 4 and ((out[0] >> 3) & 7) == base:
            regs[base] = rng.randrange(0, 0x1000)
    if mod == 1:
        out.append(rng.getrandbits(8))
    elif mod == 2:
        out += rng.randrange(0, 0x4000).to_bytes(4, "little")
    return out


def undefined_flags(op, osz, reg, regs, body, pre):
    """EFLAGS bits the SDM leaves undefined for this instance (compared masked)."""
    if op in (0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D,
              0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x84, 0x85, 0xA8, 0xA9):
        return AF
    if op in (0x80, 0x81, 0x82, 0x83) and reg in (1, 4, 6):
        return AF
    if op in (0xF6, 0xF7):
        if reg in (0, 1):
            return AF
        if reg in (4, 5):
            return SF | ZF | AF | PF
        if reg in (6, 7):
            return ARITH
    if op in (0x1AF, 0x69, 0x6B):
        return SF | ZF | AF | PF
    if op in (0xC0, 0xC1, 0xD0, 0xD1, 0xD2, 0xD3):
        size = 1 if op in (0xC0, 0xD0, 0xD2) else osz
        if op in (0xD0, 0xD1):
            count = 1
        elif op in (0xC0, 0xC1):
            count = body[-1] & 31
        else:
            count = regs[1] & 31
        u = 0
        if reg >= 4:
            u |= AF
            if count > 8 * size and reg in (4, 5, 6):
                u |= CF
        if count != 1:
            u |= OF
        return u
    if op in (0x1A4, 0x1A5, 0x1AC, 0x1AD):
        count = (body[-1] if op in (0x1A4, 0x1AC) else regs[1]) & 31
        u = AF
        if count != 1:
            u |= OF
        if count > 8 * osz:
            u |= ARITH
        return u
    if op in (0x1A3, 0x1AB, 0x1B3, 0x1BB, 0x1BA):
        return OF | SF | AF | PF
    if op in (0x1BC, 0x1BD):
        return CF | OF | SF | AF | PF
    if op in (0x27, 0x2F):
        return OF
    if op in (0x37, 0x3F):
        return OF | SF | ZF | PF
    if op in (0xD4, 0xD5):
        return OF | AF | CF
    return 0


class Oracle:
    """Both emulators, reusable across cases."""

    def __init__(self, seed=0, code16=False, fast=False):
        self.rng = random.Random(seed)
        self.fast = fast
        self.ram = np.zeros(RAM, np.uint8)
        self.cpu = CPU(self.ram)
        self.code16 = code16
        self.uc = Uc(UC_ARCH_X86, UC_MODE_16 if code16 else UC_MODE_32)
        self.uc.mem_map(0, RAM)
        self.uc.hook_add(UC_HOOK_INTR, self._intr)
        self.intno = None
        # Unicorn keeps exception bookkeeping across emu_start calls (a second
        # #DE after one stopped in the hook is reported as #DF): restore a
        # pristine context before every case.
        if code16:
            real_layout(self.cpu, self.uc)
        self.ip = CODE - self.cpu.cs.base
        self.uc_ctx = self.uc.context_save()
        # Same visible selectors as Unicorn's reset state (PUSH sreg compares them).
        for name, r in (("es", X.UC_X86_REG_ES), ("cs", X.UC_X86_REG_CS),
                        ("ss", X.UC_X86_REG_SS), ("ds", X.UC_X86_REG_DS),
                        ("fs", X.UC_X86_REG_FS), ("gs", X.UC_X86_REG_GS)):
            getattr(self.cpu, name).selector = self.uc.reg_read(r)
        self.reset_snap = self.cpu.get_state()

    def _intr(self, uc, intno, user):
        self.intno = intno
        uc.emu_stop()

    def run_case(self, case, data):
        """Run ``case`` on both; returns a list of differences (empty = agree)."""
        cpu, uc, ram = self.cpu, self.uc, self.ram
        ram[:DATA] = data
        ram[CODE:CODE + 16] = 0
        ram[CODE:CODE + len(case.code)] = np.frombuffer(case.code, np.uint8)
        cpu.set_state(self.reset_snap)
        s = cpu._s
        s[:8] = case.regs
        s[S.EIP] = self.ip
        s[S.EFLAGS] = case.eflags
        if self.fast:
            # Prime the fetch cache with the (identity-mapped) code page: the step loop
            # then runs the case on the fast path if it has the form.
            s[S.D_FPAGE] = CODE >> 12
            s[S.D_FPHYS] = CODE & ~0xFFF
        st = cpu.run(1)
        while case.string and st == Status.STEP_LIMIT and cpu.eip == self.ip:
            st = cpu.run(1)            # a step is one REP element: finish the instruction
        uc.context_restore(self.uc_ctx)
        uc.mem_write(0, data.tobytes())
        uc.mem_write(CODE, case.code + bytes(16 - len(case.code)))
        # Unicorn keeps translated blocks across mem_write: drop them.
        uc.ctl_remove_cache(CODE, CODE + 16)
        for r, v in zip(UC_REGS, case.regs):
            uc.reg_write(r, v)
        uc.reg_write(X.UC_X86_REG_EFLAGS, case.eflags)
        uc.reg_write(X.UC_X86_REG_EIP, self.ip)
        self.intno = None
        err = None
        try:
            if case.string:
                # Unicorn counts each REP iteration as an instruction: run to the end.
                uc.emu_start(CODE, CODE + len(case.code))
            else:
                uc.emu_start(CODE, 1, count=1)
        except UcError as e:
            err = e.errno
        diffs = []
        vec = None
        if st == Status.TRIPLE_FAULT:
            vec = cpu.fault[0]
        elif st not in (Status.STEP_LIMIT,):
            diffs.append(f"status {st!r}")
        uvec = self.intno
        if err == UC_ERR_INSN_INVALID:
            uvec = 6
        elif err == UC_ERR_FETCH_UNMAPPED and vec is None:
            pass                           # a branch left the map; the branch itself ran
        elif err is not None:
            return None                    # e.g. an access outside Unicorn's map: skip
        if self.code16 and vec in (12, 13) and uvec not in (6, 12, 13):
            return None                    # a real-mode limit fault: QEMU checks no limits
        if vec != uvec:
            diffs.append(f"vector kjcore={vec} unicorn={uvec}")
            return diffs
        if not case.skip_regs:
            for i, r in enumerate(UC_REGS):
                a, b = int(s[i]), uc.reg_read(r)
                if a != b:
                    diffs.append(f"{S.REG_NAMES[i]} kjcore={a:#010x} unicorn={b:#010x}")
        ueip = uc.reg_read(X.UC_X86_REG_EIP)
        if vec is None or vec not in (3, 4) and not _is_int_n(case.code):
            if int(s[S.EIP]) != ueip:
                diffs.append(f"eip kjcore={int(s[S.EIP]):#x} unicorn={ueip:#x}")
        mask = FLAG_MASK & ~case.undefined
        a, b = int(s[S.EFLAGS]) & mask, uc.reg_read(X.UC_X86_REG_EFLAGS) & mask
        if a != b:
            diffs.append(f"eflags kjcore={a:#x} unicorn={b:#x} (diff {a ^ b:#x})")
        umem = np.frombuffer(bytes(uc.mem_read(0, DATA)), np.uint8)
        if not case.skip_regs and not np.array_equal(umem, ram[:DATA]):
            where = np.nonzero(umem != ram[:DATA])[0]
            diffs.append(f"memory differs at {[hex(x) for x in where[:8]]}")
        for name, r in SEG_REGS if self.code16 else ():
            a, b = getattr(cpu, name).selector, uc.reg_read(r)
            if a != b or getattr(cpu, name).base != b << 4:
                diffs.append(f"{name} kjcore={getattr(cpu, name)!r} unicorn={b:#06x}")
        return diffs


def _is_int_n(code):
    i = 0
    while code[i] in (0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65):
        i += 1
    return code[i] in (0xCC, 0xCD, 0xCE)


def run_batch(seed, ops, per_op, code16=False, fast=False):
    """Run ``per_op`` random cases for each opcode; returns (count, failures).
    ``fast``: on the fast path where it has the form (else the full decoder)."""
    orc = Oracle(seed, code16, fast)
    rng = orc.rng
    data = np.frombuffer(random.Random(seed ^ 0x5EED).randbytes(DATA), np.uint8).copy()
    fails = []
    n = 0
    for op in ops:
        for _ in range(per_op):
            case = gen_case(rng, op, code16)
            if rng.random() < 0.05:
                data = np.frombuffer(rng.randbytes(DATA), np.uint8).copy()
            d = orc.run_case(case, data)
            if d is None:
                continue
            n += 1
            if d:
                fails.append((case, d))
    return n, fails
