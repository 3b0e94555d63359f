"""Running kjcore's purgatory on kjcore's CPU and on Unicorn from the same memory picture.

A picture is RAM with purgatory at PURGATORY, the segments it verifies, and a stack whose top
word is a return address (the jump-back entry of a preserve-context image). Both runners start
at purgatory's entry with paging off, flat segments and interrupts off, as the relocation
routine leaves the CPU, and stop at the image's entry or in purgatory's halt loop.
"""
import numpy as np

from kjcore.cpu import CPU, Status
from kjcore.purgatory import purgatory_segment

RAM = 4 << 20
PURGATORY = 0x200000
ENTRY = 0x300000          # the image's entry: a HLT
ZERO_PAGE = 0x90000
STACK_TOP = 0x8F000       # ESP at entry; [ESP] = JUMP_BACK
JUMP_BACK = 0x8E000
HLT = b"\xf4"


def picture(segments, backup=None, *, at=PURGATORY, entry=ENTRY, zero_page=ZERO_PAGE,
            ram_size=RAM):
    """(ram, purgatory entry): RAM holding purgatory, the segments, the image's HLT, a stack."""
    data, start = purgatory_segment(at, entry=entry, zero_page=zero_page,
                                    segments=segments, backup=backup)
    ram = np.zeros(ram_size, np.uint8)
    ram[at:at + len(data)] = np.frombuffer(data, np.uint8)
    for mem, blob in segments:
        ram[mem:mem + len(blob)] = np.frombuffer(bytes(blob), np.uint8)
    ram[entry] = HLT[0]
    ram[STACK_TOP:STACK_TOP + 4] = np.frombuffer(JUMP_BACK.to_bytes(4, "little"), np.uint8)
    return ram, start


REGISTERS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip")


def run_kjcore(ram, start, steps=500_000_000):
    """Run on kjcore's CPU until a HLT; return (registers dict, console bytes, cpu)."""
    cpu = CPU(ram)
    cpu.eip, cpu.esp = start, STACK_TOP
    cpu.eax = cpu.ebx = cpu.ecx = cpu.edx = cpu.esi = cpu.edi = cpu.ebp = 0x5A5A5A5A
    status = cpu.run(steps)
    assert status == Status.HLT, status
    regs = {r: getattr(cpu, r) for r in REGISTERS}
    regs.update(cs=cpu.cs.selector, ds=cpu.ds.selector, ss=cpu.ss.selector,
                es=cpu.es.selector, IF=cpu.eflags >> 9 & 1)
    return regs, bytes(cpu.debugcon), cpu


def run_unicorn(ram, start, timeout=600):
    """Run the same picture on Unicorn until the image's entry or purgatory's HLT."""
    import unicorn
    from unicorn import x86_const as X
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, len(ram))
    uc.mem_write(0, ram.tobytes())
    for name in ("EAX", "EBX", "ECX", "EDX", "ESI", "EDI", "EBP"):
        uc.reg_write(getattr(X, f"UC_X86_REG_{name}"), 0x5A5A5A5A)
    uc.reg_write(X.UC_X86_REG_ESP, STACK_TOP)
    uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
    uc.reg_write(X.UC_X86_REG_CR0, 0x11)
    console = bytearray()

    def on_out(uc, port, size, value, data):
        assert port == 0xE9, hex(port)
        console.append(value & 0xFF)

    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    # Unicorn also stops at a HLT; a count limit would hook every instruction, a timeout does not
    uc.emu_start(start, ENTRY, timeout=int(timeout * 1e6))
    regs = {r: uc.reg_read(getattr(X, f"UC_X86_REG_{r.upper()}")) for r in REGISTERS}
    regs.update(cs=uc.reg_read(X.UC_X86_REG_CS), ds=uc.reg_read(X.UC_X86_REG_DS),
                ss=uc.reg_read(X.UC_X86_REG_SS), es=uc.reg_read(X.UC_X86_REG_ES),
                IF=uc.reg_read(X.UC_X86_REG_EFLAGS) >> 9 & 1)
    return regs, bytes(console), uc
