"""The committed BIOS ROM (SPEC §14.2): re-assembled from bios.S, its offsets agree with
kjcore.bios.layout, and its trap -> dispatch -> IRET path runs on Unicorn in 16-bit mode."""
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bios_world import world

import kjcore.bios
from kjcore.bios import layout as L
from kjcore.bios import services as S
from kjcore.cpu import Status

SRC = Path(kjcore.bios.__file__).with_name("bios.S")
BIN = Path(kjcore.bios.__file__).with_name("bios.bin")


def _assemble(tmp_path):
    if not all(shutil.which(t) for t in ("as", "ld", "objcopy", "nm")):
        pytest.skip("GNU binutils (as, ld, objcopy, nm) not installed")
    obj, elf, out = tmp_path / "bios.o", tmp_path / "bios.elf", tmp_path / "bios.bin"
    try:
        subprocess.run(["as", "--32", "-o", str(obj), str(SRC)], check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        if b"unrecognized option" in e.stderr or b"--32" in e.stderr:
            pytest.skip("this `as` cannot assemble i386 code (--32)")
        raise
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0", "-e", "0", "-o", str(elf), str(obj)],
                   check=True, capture_output=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(elf), str(out)], check=True)
    return elf, out


def test_committed_rom_matches_source(tmp_path):
    _, out = _assemble(tmp_path)
    assert out.read_bytes() == BIN.read_bytes(), \
        "bios.bin is stale: re-assemble kjcore/bios/bios.S (make -C kjcore/bios)"
    assert len(S.ROM) == L.ROM_SIZE


def test_rom_symbols_agree_with_the_layout(tmp_path):
    elf, _ = _assemble(tmp_path)
    nm = subprocess.run(["nm", str(elf)], capture_output=True, text=True, check=True).stdout
    syms = {name.lower(): int(value, 16)
            for value, _, name in (line.split() for line in nm.splitlines())}
    for v in L.SERVICE_VECTORS:
        assert syms[f"svc_{v:#04x}"] == L.stub_offset(v), hex(v)
    assert syms["default_stub"] == L.DEFAULT_STUB_OFFSET
    assert syms["reset_vector"] == L.RESET_OFFSET
    source = SRC.read_text()
    for name in ("SERVICE_PORT", "STUB_OFFSET", "STUB_SIZE"):
        value = re.search(rf"\.set {name}, (0x[0-9A-Fa-f]+)", source).group(1)
        assert int(value, 16) == getattr(L, name), name


def test_rom_facts_without_binutils():
    rom = S.ROM
    assert rom[L.DEFAULT_STUB_OFFSET] == 0xCF                        # iret
    for v in L.SERVICE_VECTORS:
        # out %al, $SERVICE_PORT; iret
        assert rom[L.stub_offset(v):L.stub_offset(v) + 3] == bytes([0xE6, L.SERVICE_PORT, 0xCF])
    assert rom[L.RESET_OFFSET] == 0xEA                               # ljmp f000:...
    assert rom[L.DATE_OFFSET:L.DATE_OFFSET + 8] == b"10/09/08"
    assert rom[L.MODEL_OFFSET] == 0xFC


# ---------------------------------------------------------------------------------- Unicorn
unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as X  # noqa: E402

REGS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")
CALLER = 0x7C00                 # the caller's code, at 0000:7C00
STACK = 0x7000


class Bridge:
    """Unicorn runs the guest; at the service port's OUT, the kjcore dispatcher runs on a
    kjcore CPU holding the same registers and memory (standing in for the kjcore port trap)."""

    def __init__(self, bios, cpu):
        self.bios, self.cpu, self.traps, self.idle = bios, cpu, [], None
        self.uc = uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_16)
        uc.mem_map(0, len(bios.ram))
        uc.mem_write(0, bios.ram.tobytes())
        uc.hook_add(unicorn.UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._int)

    def _int(self, uc, vector, data):
        """Unicorn hands INT n to hooks: deliver it through the IVT as SPEC §14.1 says the
        CPU does (push FLAGS, CS, IP; clear IF and TF; CS:IP from the vector)."""
        sp = (uc.reg_read(X.UC_X86_REG_ESP) - 6) & 0xFFFF
        ss = uc.reg_read(X.UC_X86_REG_SS)
        flags = uc.reg_read(X.UC_X86_REG_EFLAGS)
        frame = (uc.reg_read(X.UC_X86_REG_EIP).to_bytes(2, "little")
                 + uc.reg_read(X.UC_X86_REG_CS).to_bytes(2, "little")
                 + (flags & 0xFFFF).to_bytes(2, "little"))
        uc.mem_write((ss << 4) + sp, frame)
        uc.reg_write(X.UC_X86_REG_ESP, sp)
        uc.reg_write(X.UC_X86_REG_EFLAGS, flags & ~0x300)
        target = int.from_bytes(uc.mem_read(4 * vector, 4), "little")
        uc.reg_write(X.UC_X86_REG_CS, target >> 16)
        uc.reg_write(X.UC_X86_REG_EIP, target & 0xFFFF)

    def _out(self, uc, port, size, value, data):
        eip = uc.reg_read(X.UC_X86_REG_EIP)
        cs = uc.reg_read(X.UC_X86_REG_CS)
        self.traps.append((port, (cs << 4) + eip))
        if port != L.SERVICE_PORT:
            return
        cpu, ram = self.cpu, self.bios.ram
        ram[:] = np.frombuffer(bytes(uc.mem_read(0, len(ram))), dtype=np.uint8)
        for r in REGS:
            setattr(cpu, r, uc.reg_read(getattr(X, "UC_X86_REG_" + r.upper())))
        for seg in ("cs", "ds", "es", "ss"):
            sel = uc.reg_read(getattr(X, "UC_X86_REG_" + seg.upper()))
            getattr(cpu, seg).selector, getattr(cpu, seg).base = sel, sel << 4
        cpu.eip, cpu.eflags = eip, uc.reg_read(X.UC_X86_REG_EFLAGS)
        if self.bios.trap(cpu) is Status.IDLE:
            self.idle = eip             # the run stops; the OUT is made again (see run)
            uc.emu_stop()
        for r in REGS:
            uc.reg_write(getattr(X, "UC_X86_REG_" + r.upper()), getattr(cpu, r))
        uc.reg_write(X.UC_X86_REG_EFLAGS, cpu.eflags)
        uc.mem_write(0, ram.tobytes())

    def run(self, code, **regs):
        uc = self.uc
        uc.mem_write(CALLER, code + b"\xf4")
        for seg in ("CS", "DS", "ES", "SS"):
            uc.reg_write(getattr(X, "UC_X86_REG_" + seg), 0)
        uc.reg_write(X.UC_X86_REG_ESP, STACK)
        for name, value in regs.items():
            uc.reg_write(getattr(X, "UC_X86_REG_" + name.upper()), value)
        try:
            uc.emu_start(CALLER, CALLER + len(code) + 1, count=1000)
        except unicorn.UcError:
            pass            # HLT ends the emulation
        if self.idle is not None:       # Unicorn moved past the OUT the trap left undone
            uc.reg_write(X.UC_X86_REG_EIP, self.idle)
            self.idle = None
        return {r: uc.reg_read(getattr(X, "UC_X86_REG_" + r.upper()))
                for r in REGS + ("eip", "eflags")}


def test_unicorn_int12_returns_through_iret_with_cf_cleared():
    bios, cpu = world()
    b = Bridge(bios, cpu)
    out = b.run(bytes.fromhex("f9 cd 12"))                   # stc; int 0x12
    assert out["eax"] & 0xFFFF == 639 and not out["eflags"] & 1
    assert out["esp"] == STACK and out["eip"] in (CALLER + 3, CALLER + 4)
    # The OUT is the stub's first instruction: Unicorn reports the address of the OUT itself.
    assert b.traps == [(L.SERVICE_PORT, L.ROM_BASE + L.stub_offset(0x12))]


def test_unicorn_unknown_function_sets_cf_and_ah():
    bios, cpu = world()
    out = Bridge(bios, cpu).run(bytes.fromhex("f8 b4 77 cd 16"))   # clc; mov ah,0x77; int 16h
    assert out["eflags"] & 1 and (out["eax"] >> 8) & 0xFF == 0x86 and bios.unsupported == 1


def test_unicorn_e820_through_the_rom():
    bios, cpu = world(ram_size=8 << 20)
    b = Bridge(bios, cpu)
    # mov eax,0xe820; mov edx,'SMAP'; xor ebx,ebx; mov ecx,20; mov di,0x500; int 15h
    code = bytes.fromhex("66 b8 20 e8 00 00 66 ba 50 41 4d 53 66 31 db 66 b9 14 00 00 00"
                         " bf 00 05 cd 15")
    out = b.run(code)
    assert not out["eflags"] & 1 and out["eax"] == S.SMAP and out["ebx"] == 1
    assert bytes(b.uc.mem_read(0x500, 20)) == (0).to_bytes(8, "little") + \
        (0x9FC00).to_bytes(8, "little") + (1).to_bytes(4, "little")


def test_unicorn_keyboard_wait_stops_at_the_stub_then_resumes():
    bios, cpu = world()
    b = Bridge(bios, cpu)
    b.run(bytes.fromhex("b4 00 cd 16"))                       # mov ah,0; int 16h: no key
    stub = L.ROM_BASE + L.stub_offset(0x16)
    assert b.traps == [(L.SERVICE_PORT, stub)]
    eip = b.uc.reg_read(X.UC_X86_REG_EIP)
    assert (b.uc.reg_read(X.UC_X86_REG_CS) << 4) + eip == stub      # the OUT, not done
    bios.keyboard.feed(b"y")
    try:                                           # a key came: the OUT asks again
        b.uc.emu_start(eip, CALLER + 5, count=100)
    except unicorn.UcError:
        pass
    assert b.uc.reg_read(X.UC_X86_REG_EAX) & 0xFFFF == ord("y")
    assert len(b.traps) == 2
