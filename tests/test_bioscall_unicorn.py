"""bios_call on an independent CPU: bios_roundtrip.elf on Unicorn, entered as a kexec jump
payload is (paging off, flat selectors 0x60/0x68 with GDT and IDT of limit 0, the jump-back
address on the stack), with kjcore's ROM and IVT copied in and INT 12h answered by the test
(Unicorn hands INT n to a hook, which delivers it through the IVT as a real-mode CPU does).
After the program returns, GDTR, IDTR, CR0, the segment selectors and their flat caches,
EFLAGS and the callee-saved registers are the caller's again; bios_call called directly gets
the same answers on Unicorn and on kjcore's CPU."""
import struct

import numpy as np
import pytest
from bios_examples import path

import kjcore
from kjcore.bios import layout
from kjcore.cpu import Status
from kjcore.first_kernel import flat_kernel_segments
from kjcore.loader import load_elf32

unicorn = pytest.importorskip("unicorn")
from _unicorn_bioscall import (  # noqa: E402
    BACK,
    KERNEL_CS,
    KERNEL_DS,
    SEGMENTS,
    STACK_TOP,
    MiB,
    answer_int12,
    deliver_interrupt,
    enter_as_payload,
    reg,
)
from unicorn import x86_const as X  # noqa: E402


def _machine(name, cs=KERNEL_CS, ds=KERNEL_DS):
    """A Unicorn CPU holding kjcore's low 1 MiB (IVT, BDA, ROM), the program, and the kexec
    jump entry state; returns (uc, entry, console bytes, addresses of the serviced stubs)."""
    m = kjcore.Machine(16 * MiB, bios=True)
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, 2 * MiB)
    with open(path(name), "rb") as f:
        image = load_elf32(f.read())
    enter_as_payload(uc, m.ram[:MiB], image, cs, ds)
    for register, value in (("EBX", 0x11111111), ("ESI", 0x22222222), ("EDI", 0x33333333),
                            ("EBP", 0x44444444)):
        uc.reg_write(reg(register), value)
    console, serviced = bytearray(), []
    stub = layout.ROM_BASE + layout.stub_offset(0x12)

    def on_out(uc, port, size, value, data):
        if port == 0xE9:
            console.append(value & 0xFF)
            return
        assert port == layout.SERVICE_PORT
        ip = uc.reg_read(X.UC_X86_REG_CS) * 16 + uc.reg_read(X.UC_X86_REG_EIP)
        assert stub <= ip < stub + layout.STUB_SIZE, f"a service other than INT 12h at {ip:#x}"
        serviced.append(ip)
        answer_int12(uc)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    uc.hook_add(unicorn.UC_HOOK_INTR, deliver_interrupt)
    return uc, image.entry, console, serviced


def test_roundtrips_restore_the_callers_state_on_unicorn():
    uc, entry, console, serviced = _machine("bios_roundtrip.elf")
    state = {name: uc.reg_read(reg(name)) for name in
             ("GDTR", "IDTR", "CR0", "EBX", "ESI", "EDI", "EBP", *SEGMENTS)}
    uc.emu_start(entry, BACK, count=5_000_000)
    assert uc.reg_read(X.UC_X86_REG_EIP) == BACK and uc.reg_read(X.UC_X86_REG_ESP) == STACK_TOP
    assert console.decode().startswith("bios_roundtrip: 1000 calls of INT 12h, 0 wrong, ")
    assert len(serviced) == 1000
    assert uc.reg_read(X.UC_X86_REG_EAX) == 0                   # no wrong answer
    assert {name: uc.reg_read(reg(name)) for name in state} == state
    assert uc.reg_read(X.UC_X86_REG_EFLAGS) & 0x600 == 0         # IF and DF clear as on entry
    # the caches are flat again: a store through DS far above 1 MiB lands there
    uc.mem_write(BACK, b"\xa3" + (MiB + 0x1234).to_bytes(4, "little") + b"\xf4")
    uc.reg_write(X.UC_X86_REG_EAX, 0xC0FFEE)
    uc.emu_start(BACK, BACK + 5, count=2)
    assert uc.mem_read(MiB + 0x1234, 4) == (0xC0FFEE).to_bytes(4, "little")


IN_AT, OUT_AT = 0x7100, 0x7200
REGS = struct.Struct("<8I4H")                 # struct biosregs (examples/bioscall.h)


def _call(uc, entry, vector, regs_in, out=OUT_AT):
    """Call bios_call(vector, IN_AT, out) as C code does; returns EAX and *out."""
    uc.mem_write(IN_AT, REGS.pack(*regs_in))
    uc.mem_write(OUT_AT, bytes(REGS.size))
    esp = STACK_TOP - 16
    uc.mem_write(esp, struct.pack("<IiII", BACK, vector, IN_AT, out))
    uc.reg_write(X.UC_X86_REG_ESP, esp)
    uc.emu_start(entry, BACK, count=100_000)
    assert uc.reg_read(X.UC_X86_REG_ESP) == esp + 4
    return uc.reg_read(X.UC_X86_REG_EAX), REGS.unpack(uc.mem_read(OUT_AT, REGS.size))


def _bios_call(cs=KERNEL_CS, ds=KERNEL_DS):
    elftools = pytest.importorskip("elftools.elf.elffile")
    uc, _, _, serviced = _machine("bios_roundtrip.elf", cs, ds)
    with open(path("bios_roundtrip.elf"), "rb") as f:
        (symbol,) = elftools.ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(
            "bios_call")
    return uc, symbol["st_value"], serviced


def test_bios_call_passes_registers_both_ways():
    uc, bios_call, serviced = _bios_call()
    regs_in = (0xAAAA0000, 0x11112222, 0x33334444, 0x55556666, 0x7777, 0x8888, 0x9999,
               0x08D5, 0x1234, 0x2345, 0x3456, 0x4567)
    status, out = _call(uc, bios_call, 0x12, regs_in)
    assert status == 0 and len(serviced) == 1
    assert out[0] == 0xAAAA0000 | layout.CONVENTIONAL_KIB           # INT 12h: AX only
    assert out[1:7] == regs_in[1:7] and out[8:] == regs_in[8:]
    assert out[7] & 1 == 0                                          # CF from the BIOS


@pytest.mark.parametrize("vector", [256, -1, -(1 << 31)])
def test_bios_call_refuses_a_bad_vector(vector):
    uc, bios_call, serviced = _bios_call()
    status, out = _call(uc, bios_call, vector, (0,) * 12)
    assert status == 0xFFFFFFFF and not serviced and out == (0,) * 12


@pytest.mark.parametrize("cs, ds", [(30 * 8, KERNEL_DS), (KERNEL_CS, KERNEL_CS)])
def test_bios_call_refuses_a_selector_it_cannot_restore(cs, ds):
    """GDT slot 30 is one of bios_call's own 16-bit segments; a DS that names the code
    segment (legal: it is readable) would need slot 12 as code and as data.  Both get -1."""
    uc, bios_call, serviced = _bios_call(cs, ds)
    status, _ = _call(uc, bios_call, 0x12, (0,) * 12)
    assert status == 0xFFFFFFFF and not serviced
    assert (uc.reg_read(X.UC_X86_REG_CS), uc.reg_read(X.UC_X86_REG_DS)) == (cs, ds)


def test_bios_call_without_out():
    uc, bios_call, serviced = _bios_call()
    status, out = _call(uc, bios_call, 0x12, (0,) * 12, out=0)
    assert status == 0 and len(serviced) == 1 and out == (0,) * 12


def _kjcore_call(vector, regs_in):
    """The same call on kjcore's CPU (its BIOS answers): EAX, *out and the state after."""
    m = kjcore.Machine(16 * MiB, bios=True)
    with open(path("bios_roundtrip.elf"), "rb") as f:
        (seg,) = load_elf32(f.read()).segments
    m.ram[seg.mem:seg.mem + seg.memsz] = 0
    m.ram[seg.mem:seg.mem + seg.bufsz] = np.frombuffer(bytes(seg.buf), np.uint8)
    m.ram[BACK] = 0xF4
    m.ram[IN_AT:IN_AT + REGS.size] = np.frombuffer(REGS.pack(*regs_in), np.uint8)
    esp = STACK_TOP - 16
    m.ram[esp:esp + 16] = np.frombuffer(struct.pack("<IiII", BACK, vector, IN_AT, OUT_AT),
                                        np.uint8)
    _, bios_call, _ = _bios_call()
    cpu = m.cpu
    cpu.load({**flat_kernel_segments(), "cr0": 0x11, "cr3": 0, "cr4": 0, "gdtr_base": 0,
              "gdtr_limit": 0, "idtr_base": 0, "idtr_limit": 0, "eflags": 0x2, "esp": esp,
              "eip": bios_call, "ebx": 0x11111111, "esi": 0x22222222, "edi": 0x33333333,
              "ebp": 0x44444444})
    before = cpu.get_state()
    assert cpu.run(100_000) == Status.HLT and cpu.eip == BACK + 1
    after = cpu.get_state()
    out = REGS.unpack(bytes(m.ram[OUT_AT:OUT_AT + REGS.size]))
    return cpu.eax, out, before, after


def test_bios_call_on_kjcore_matches_unicorn():
    """Differential: the same bios_call on both CPUs gives the same EAX and *out, and on
    kjcore every descriptor cache, GDTR, IDTR, CR0 and the callee-saved registers are as
    before the call."""
    regs_in = (0x5A5A0000, 1, 2, 3, 4, 5, 6, 0x0001, 0x10, 0x20, 0x30, 0x40)
    uc, bios_call, _ = _bios_call()
    expected = _call(uc, bios_call, 0x12, regs_in)
    eax, out, before, after = _kjcore_call(0x12, regs_in)
    assert (eax, out) == expected
    names = [n for n in before.dtype.names
             if n.split("_")[0] in ("cs", "ds", "es", "fs", "gs", "ss", "gdtr", "idtr")
             or n in ("cr0", "ebx", "esi", "edi", "ebp")]
    assert len(names) > 20
    assert {n: int(after[n]) for n in names} == {n: int(before[n]) for n in names}
    assert int(after["eflags"]) & 0x700 == 0                 # TF, IF, DF clear as on entry
