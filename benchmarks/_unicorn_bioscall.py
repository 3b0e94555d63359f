"""examples/bios_roundtrip.elf on Unicorn: the baseline of bench_bioscall.

The same bytes as on kjcore: the machine's low 1 MiB (IVT, BDA, BIOS ROM) and the program are
copied into a Unicorn CPU entered as a kexec jump payload is (paging off, flat selectors
0x60/0x68 whose GDT and IDT then get limit 0, the jump-back address on the stack).  Unicorn
hands INT n to a hook, which delivers it through the IVT (push FLAGS, CS, IP; CS:IP from the
vector); the ROM stub's ``out`` to the service port is answered in Python as kjcore answers it
(INT 12h only: AX = 639, CF = 0 in the FLAGS the INT pushed).  The pieces are shared with
``tests/test_bioscall_unicorn.py`` (tests/conftest.py puts benchmarks/ on sys.path; benchmarks
do not import tests).
"""
import time

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INTR, UC_MODE_32, Uc
from unicorn import x86_const as X

from kjcore.bios import layout
from kjcore.loader import load_elf32

MiB = 1 << 20
GDT_AT, BACK, STACK_TOP = 0x1000, 0x6000, 0x7000
KERNEL_CS, KERNEL_DS = 0x60, 0x68
SEGMENTS = ("CS", "DS", "ES", "FS", "GS", "SS")


def reg(name):
    """Unicorn's register id for an x86 register name ("EAX", "GDTR", ...)."""
    return getattr(X, f"UC_X86_REG_{name}")


def flat_descriptor(access):
    """A 4 GiB, base 0, page-granular GDT descriptor with the access byte ``access``."""
    return (0xFFFF | (0x00CF0000 | access << 8) << 32).to_bytes(8, "little")


def deliver_interrupt(uc, vector, data):
    """UC_HOOK_INTR hook, INT n in real mode: push FLAGS, CS, IP; clear IF and TF; CS:IP from
    the IVT."""
    ss, sp = uc.reg_read(X.UC_X86_REG_SS), (uc.reg_read(X.UC_X86_REG_ESP) - 6) & 0xFFFF
    flags = uc.reg_read(X.UC_X86_REG_EFLAGS)
    frame = b"".join((value & 0xFFFF).to_bytes(2, "little") for value in
                     (uc.reg_read(X.UC_X86_REG_EIP), uc.reg_read(X.UC_X86_REG_CS), flags))
    uc.mem_write(ss * 16 + sp, frame)
    uc.reg_write(X.UC_X86_REG_ESP, sp)
    uc.reg_write(X.UC_X86_REG_EFLAGS, flags & ~0x300)
    target = int.from_bytes(uc.mem_read(4 * vector, 4), "little")
    uc.reg_write(X.UC_X86_REG_CS, target >> 16)
    uc.reg_write(X.UC_X86_REG_EIP, target & 0xFFFF)


def answer_int12(uc):
    """The ROM stub's service ``out`` answered as kjcore answers INT 12h: AX = conventional
    memory in KiB, CF = 0 both in EFLAGS and in the FLAGS the INT pushed (the stub IRETs)."""
    eax = uc.reg_read(X.UC_X86_REG_EAX)
    uc.reg_write(X.UC_X86_REG_EAX, (eax & ~0xFFFF) | layout.CONVENTIONAL_KIB)
    sp = uc.reg_read(X.UC_X86_REG_SS) * 16 + (uc.reg_read(X.UC_X86_REG_ESP) & 0xFFFF)
    flags = int.from_bytes(uc.mem_read(sp + 4, 2), "little") & ~1
    uc.mem_write(sp + 4, flags.to_bytes(2, "little"))
    uc.reg_write(X.UC_X86_REG_EFLAGS, uc.reg_read(X.UC_X86_REG_EFLAGS) & ~1)


def enter_as_payload(uc, low_memory, image, cs=KERNEL_CS, ds=KERNEL_DS):
    """Put ``low_memory`` (the first MiB) and ``image``'s segments into ``uc`` and give it the
    kexec jump entry state: paging off, CS = ``cs``, DS = ``ds``, the other selectors
    KERNEL_DS, flat caches, GDT and IDT of limit 0 (as machine_kexec leaves them), EFLAGS = 2
    and the jump-back address BACK (a HLT) on the stack."""
    uc.mem_write(0, bytes(low_memory))
    for seg in image.segments:
        uc.mem_write(seg.mem, bytes(seg.buf).ljust(seg.memsz, b"\0"))
    uc.mem_write(BACK, b"\xf4")
    uc.mem_write(GDT_AT + KERNEL_CS, flat_descriptor(0x9B) + flat_descriptor(0x93))
    uc.mem_write(GDT_AT + cs, flat_descriptor(0x9B))
    uc.reg_write(X.UC_X86_REG_CR0, 0x11)                     # PE, ET; paging off
    uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT_AT, 0xFF, 0))
    for seg in SEGMENTS:
        uc.reg_write(reg(seg), cs if seg == "CS" else ds if seg == "DS" else KERNEL_DS)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0, 0))            # machine_kexec: limit 0
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
    uc.mem_write(STACK_TOP - 4, BACK.to_bytes(4, "little"))
    uc.reg_write(X.UC_X86_REG_ESP, STACK_TOP - 4)
    uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)


class UnicornRoundTrips:
    """One Unicorn CPU ready to run the program from ``elf_bytes`` with ``low_memory`` (the
    first MiB of a bios=True machine) under it; :meth:`run` returns (seconds, console)."""

    def __init__(self, low_memory, elf_bytes):
        self.image = load_elf32(elf_bytes)
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc.mem_map(0, 2 * MiB)
        self.low = bytes(low_memory)
        self.console = bytearray()
        self.uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)
        self.uc.hook_add(UC_HOOK_INTR, deliver_interrupt)

    def _out(self, uc, port, size, value, data):
        if port == 0xE9:
            self.console.append(value & 0xFF)
            return
        if port != layout.SERVICE_PORT:
            raise RuntimeError(f"unexpected out to port {port:#x}")
        answer_int12(uc)

    def run(self):
        enter_as_payload(self.uc, self.low, self.image)
        self.console.clear()
        t0 = time.perf_counter()
        self.uc.emu_start(self.image.entry, BACK, count=50_000_000)
        seconds = time.perf_counter() - t0
        if self.uc.reg_read(X.UC_X86_REG_EIP) != BACK:
            raise RuntimeError("the program did not return to the jump-back address")
        return seconds, self.console.decode("latin-1")
