"""Layout of the CPU state vector.

All CPU state lives in one flat ``int64`` numpy array (the *state vector*) so
that every compiled routine takes exactly two arrays, ``(s, ram)``.  Every
value is kept in ``[0, 2**32)`` (32-bit registers stored unsigned); Numba's
int64 arithmetic never wraps by itself, so every producer masks its result.

The first ``NSTATE`` slots are the architectural state plus the run status;
:data:`STATE_DTYPE` names them so ``CPU.get_state()`` can hand out a
structured record.  After that come scratch slots used by the decoder, the
breakpoint list, the software TLB and the trace ring buffer.
"""
import numpy as np

M32 = 0xFFFFFFFF

# General registers, in ModRM encoding order.
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
EIP = 8
EFLAGS = 9
CR0 = 10
CR2 = 11
CR3 = 12
CR4 = 13
EFER = 14
CPL = 15

# Segment registers in encoding order, then LDTR and TR.  Each one has four
# slots: visible selector and the hidden descriptor cache (base, limit, attr).
ES, CS, SS, DS, FS, GS, LDTR, TR = range(8)
SEG = 16
S_SEL, S_BASE, S_LIMIT, S_ATTR = range(4)
GDTR_BASE = 48
GDTR_LIMIT = 49
IDTR_BASE = 50
IDTR_LIMIT = 51
DR0 = 52            # DR0..DR7 occupy 52..59
TSC = 60
SYSENTER_CS = 61
SYSENTER_ESP = 62
SYSENTER_EIP = 63
# Exit information (what made the run stop).
FAULT_VEC = 65      # first exception of the chain that ended in a triple fault
FAULT_ERR = 66
FAULT_EIP = 67
LAST_VEC = 68       # the exception being delivered when the chain gave up
LAST_ERR = 69
IO_PORT = 70
IO_SIZE = 71
IO_DIR = 72         # 0 = IN, 1 = OUT
IO_VAL = 73
IO_PENDING = 74     # 1: Python answered the IO request in IO_VAL
STRICT_BUS = 75
BUS_ADDR = 76
CON_LEN = 77
TRACE_POS = 78
TRACE_CNT = 79
STEPS = 80
NBP = 81
SKIP_BP = 82
A20_CLEAR = 83      # bits cleared from every physical address: 0 (A20 enabled) or 1 << 20
KBC_D1 = 84         # 1 after the keyboard controller got command 0xD1 (next 0x60 write: A20)
NSTATE = 96

# Scratch slots of the decoder (not part of the architectural state).
D_EXC = 96          # pending exception vector, -1 if none
D_ERR = 97          # its error code, -1 if it pushes none
D_START = 98        # EIP of the instruction being executed
D_OP = 99
D_MODRM = 100
D_MOD = 101
D_REG = 102
D_RM = 103
D_EASEG = 104
D_EAOFF = 105
D_IMM = 106
D_IMM2 = 107
D_OSZ = 108
D_ASZ = 109
D_REP = 110         # 0, 0xF2 or 0xF3
D_LOCK = 111
D_NEXT = 112        # fetch cursor (offset in CS)
D_FPAGE = 113       # linear page of the cached code page, -1 if none
D_FPHYS = 114       # its physical base
D_LEN = 115
D_SEGOVR = 116
D_STATUS = 117
D_CODE32 = 118
D_SOFT = 119        # exception is a software interrupt / trap (push next EIP)
D_BASE = 120        # base register of the ModRM address (-1 if none)
NO_FAST = 121       # nonzero: run skips the fast path (tests compare both paths)
NO_JIT = 122        # nonzero: run does not enter or request compiled hot loops (loopjit.py)
JIT_REQ = 123       # ST_JIT_REQUEST: offset in s of the hot-loop table entry to compile;
                    # ST_COMPILE_REQUEST: the lazy.py slot to compile
JIT_HOT = 124       # backward branches to a loop head before it is compiled
D_BUDGET = 125      # steps the instruction being executed may take (a REP string: one per element)
D_DONE = 126        # string elements the instruction completed (charged as steps by the run loop)
OPEN_BUS = 127      # 0: a port without built-in meaning stops the run (ST_IO); k > 0: it reads
                    # all ones and drops writes, except the k - 1 ports at PORTS (Python handlers)

BP = 128            # code stop ranges (breakpoints, code hooks): NBP pairs of first, last linear
BP_MAX = 32         # slots, so BP_MAX // 2 ranges
PORTS = 160         # ports with a Python handler (see OPEN_BUS)
PORT_MAX = 96
TLB = 256
TLB_N = 256         # entries of three slots (page, physical frame, permissions) ...
TLB_WAYS = 2        # ... in sets of two (memory.tlb_set: which set a page goes to)
TLB_SETS = TLB_N // TLB_WAYS
TLB_END = TLB + 3 * TLB_N
TRACE = 1024
TRACE_N = 4096
# Hot-loop table (hotloop.py): JIT_N entries of four slots, direct-mapped by the
# physical address of a loop head: key (address + 1, 0 = empty), compiled
# code (0: counting, -1: not compilable, else its address), block length in
# bytes, backward branches counted.
JIT = TRACE + TRACE_N
JIT_N = 256
# The machine's read-only physical range [ROM_LO, ROM_HI) (a BIOS's ROM, SPEC 14.2): guest
# writes there are dropped (memory.py) and never reach the TLB's writable entries; empty
# (0, 0) without a ROM.  Set by ``CPU.rom``; kept by a reset like the A20 gate.
ROM_LO = JIT + 4 * JIT_N
ROM_HI = ROM_LO + 1
# Full trace (trace.py): while s[FT_ON] is nonzero every instruction goes through the decoder
# and leaves a record of FT_REC slots at FT + FT_REC * i for i < s[FT_CNT] (linear address,
# physical address, mode and length, the bytes as fetched in two words); CPU.run drains them.
FT_ON = ROM_HI + 1
FT_CNT = FT_ON + 1
FT = FT_ON + 2
FT_REC = 5
FT_N = 4096
# Hooks (hooks.py, memhook.py).  MH_N memory-hook ranges of three slots at MH (first, last,
# MH_* kinds); an access that hits one is recorded at MH_HIT (kind, linear, physical, size,
# value; at most MH_HIT_MAX per instruction) and the run stops after the instruction with
# ST_HOOK, as it does after delivering an interrupt when HOOK_INT is set (HOOK_VEC: vector + 1).
HOOK = FT + FT_REC * FT_N
MH_N = HOOK
MH_HITS = HOOK + 1
HOOK_INT = HOOK + 2
HOOK_VEC = HOOK + 3
MH = HOOK + 4
MH_MAX = 16
MH_HIT = MH + 3 * MH_MAX
MH_HIT_MAX = 8
STATE_SIZE = MH_HIT + 5 * MH_HIT_MAX
MH_READ, MH_WRITE, MH_PHYS = 1, 2, 4

# EFLAGS bits (SDM vol. 1, 3.4.3).
CF, PF, AF, ZF, SF = 0x1, 0x4, 0x10, 0x40, 0x80
TF, IF, DF, OF = 0x100, 0x200, 0x400, 0x800
IOPL = 0x3000
NT = 0x4000
RF = 0x10000
VM = 0x20000
AC = 0x40000
ID = 0x200000
ARITH = CF | PF | AF | ZF | SF | OF

#: the processor signature: CPUID leaf 1 EAX and EDX after reset (family 6, model 1,
#: stepping 1: a P6, matching the features CPUID reports; see docs/cpu.rst)
CPU_SIGNATURE = 0x611
A20_BIT = 1 << 20

# Control register bits.
CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 1, 2, 4, 8, 0x10, 0x20
CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 1 << 16, 1 << 18, 1 << 29, 1 << 30, 1 << 31
CR4_VME, CR4_PVI, CR4_TSD, CR4_DE, CR4_PSE, CR4_PAE = 1, 2, 4, 8, 0x10, 0x20
CR4_MCE, CR4_PGE, CR4_PCE, CR4_OSFXSR = 0x40, 0x80, 0x100, 0x200
CR4_VALID = 0x7FF
EFER_NXE = 1 << 11

# Hidden segment attribute word: descriptor access byte in bits 0-7, the
# flags nibble (AVL, L, D/B, G) in bits 8-11, and "usable" (a non-null
# selector was loaded) in bit 16.
A_ACCESSED = 0x01
A_W = 0x02          # data: writable / code: readable
A_E = 0x04          # data: expand-down / code: conforming
A_CODE = 0x08
A_S = 0x10
A_P = 0x80
A_DB = 0x400
A_G = 0x800
A_USABLE = 0x10000

# Exception vectors.
DE_, DB_, NMI_, BP_, OF_, BR_, UD_, NM_, DF_ = 0, 1, 2, 3, 4, 5, 6, 7, 8
TS_, NP_, SS_, GP_, PF_, MF_, AC_ = 10, 11, 12, 13, 14, 16, 17

# Page-fault error code bits.
PFE_P, PFE_W, PFE_U, PFE_RSVD, PFE_I = 1, 2, 4, 8, 16

# Run status codes (mirrored by kjcore.cpu.Status).
ST_OK = 0
ST_STEP_LIMIT = 1
ST_HLT = 2
ST_IO = 3
ST_TRIPLE_FAULT = 4
ST_BREAK = 5
ST_BUS_ERROR = 6
ST_UNSUPPORTED = 7
ST_JIT_REQUEST = 9  # internal: Python compiles the hot loop s[JIT_REQ] names and resumes

ST_TIMEOUT = 10     # never returned by compiled code: CPU.run's wall-clock deadline passed
ST_IDLE = 11        # never returned by compiled code: a port handler waits for input
ST_HOOK = 12        # internal: a memory or interrupt hook fired; Python calls it and resumes
ST_STOPPED = 13     # never returned by compiled code: a hook or CPU.stop() ended the run
ST_COMPILE_REQUEST = 14  # internal: Python compiles the kernel s[JIT_REQ] names (lazy.py) and
                         # resumes at the instruction, not begun

# Names.  Each is defined here once; the state record, CPU.load, machine_kexec and the first
# kernel's register dict all use these.
REG_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
#: slots EIP..EFER in order (so ``REG_NAMES + CONTROL_NAMES`` are slots 0..EFER)
CONTROL_NAMES = ("eip", "eflags", "cr0", "cr2", "cr3", "cr4", "efer")
#: slots GDTR_BASE..IDTR_LIMIT in order
TABLE_NAMES = ("gdtr_base", "gdtr_limit", "idtr_base", "idtr_limit")
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr")
#: the four slots of a segment register, as state record fields ``<seg>_<field>``
SEG_FIELDS = ("sel", "base", "limit", "attr")
#: a segment register in a register dict (CPU.load, ``first_kernel.initial_cpu_state``):
#: ``<seg>_<key>``; access is descriptor byte 5 and flags the G/D-B/L/AVL nibble
SEG_KEYS = ("selector", "base", "limit", "access", "flags")
#: state record fields that count work done, not architectural state
WORK_FIELDS = frozenset({"tsc", "steps", "trace_pos", "trace_cnt", "con_len"})


def _state_fields():
    names = dict(enumerate(REG_NAMES + CONTROL_NAMES))
    names[CPL] = "cpl"
    for i, n in enumerate(SEG_NAMES):
        for j, f in enumerate(SEG_FIELDS):
            names[SEG + 4 * i + j] = f"{n}_{f}"
    names.update({GDTR_BASE + i: n for i, n in enumerate(TABLE_NAMES)})
    names.update({TSC: "tsc",
                  SYSENTER_CS: "sysenter_cs", SYSENTER_ESP: "sysenter_esp",
                  SYSENTER_EIP: "sysenter_eip", FAULT_VEC: "fault_vec",
                  FAULT_ERR: "fault_err", FAULT_EIP: "fault_eip", LAST_VEC: "last_vec",
                  LAST_ERR: "last_err", IO_PORT: "io_port", IO_SIZE: "io_size",
                  IO_DIR: "io_dir", IO_VAL: "io_val", IO_PENDING: "io_pending",
                  STRICT_BUS: "strict_bus", BUS_ADDR: "bus_addr", CON_LEN: "con_len",
                  TRACE_POS: "trace_pos", TRACE_CNT: "trace_cnt", STEPS: "steps",
                  A20_CLEAR: "a20_clear", KBC_D1: "kbc_d1"})
    for k in range(8):
        names[DR0 + k] = f"dr{k}"
    return [(names.get(i, f"_r{i}"), "<i8") for i in range(NSTATE)]


#: Structured view of ``s[:NSTATE]`` (one record = the whole architectural state).
STATE_DTYPE = np.dtype(_state_fields())
