"""kjcore's CPU in real mode against Unicorn in 16-bit mode, one instruction at a time.

The cases of cpu_oracle.py generated for 16-bit code (0x66/0x67 select 32 bits, segment
overrides) run with real-mode segments (base = selector << 4) on both emulators, plus the
segment loads and far transfers real mode allows without descriptor tables; selectors and
bases are compared too.  QEMU (inside Unicorn) checks no segment limits, so a case where
kjcore raises the 386's limit fault (#GP/#SS) and Unicorn does not is skipped (the limit
rules are scenario tests in test_realmode.py); a PE round trip (real -> 16-bit protected ->
real mode with a 4 GiB DS kept) runs on both too.  The default run executes a few thousand
cases; ``-m slow`` runs KJCORE_REALMODE_CASES of them (default 50 000).
"""
import os

import numpy as np
import pytest
from cpu_oracle import REAL_EXTRA, run_batch, user_opcodes
from unicorn import UC_ARCH_X86, UC_MODE_16, Uc
from unicorn import x86_const as X

from kjcore.cpu import CPU, Status

OPS = user_opcodes() + list(REAL_EXTRA)


def _report(fails):
    return "\n".join([f"{len(fails)} mismatches"] + [f"{c!r}: {d}" for c, d in fails[:10]])


@pytest.mark.parametrize("part", range(4))
def test_real_mode_against_unicorn(part):
    ops = OPS[part::4]
    n, fails = run_batch(11 + part, ops, 12, code16=True)
    assert n > 0.75 * 12 * len(ops)
    assert not fails, _report(fails)


@pytest.mark.slow
def test_real_mode_long_campaign():
    cases = int(os.environ.get("KJCORE_REALMODE_CASES", "50000"))
    per_op = int(cases * 1.2) // len(OPS) + 1          # ~5% are limit faults QEMU cannot judge
    n, fails = run_batch(2000, OPS, per_op, code16=True)
    print(f"real-mode oracle: {n} cases compared")
    assert not fails, _report(fails)
    assert n >= cases


def _pe_round_trip():
    """Real mode -> 16-bit protected mode (4 GiB DS, ES) -> real mode, then a store and a load
    past 1 MiB through DS (unreal mode on a 386; QEMU checks no limits, so it agrees)."""
    at = 0x7C00
    gdt = bytes(8) + bytes.fromhex("ffff0000009a0000") + bytes.fromhex("ffff00000092cf00")
    code = bytearray(bytes.fromhex("fa 0f0116") + (at + 0x80).to_bytes(2, "little")
                     + bytes.fromhex("0f20c0 0c01 0f22c0 ea") + b"\0\0" + b"\x08\x00")
    pm16 = at + len(code)
    code[-4:-2] = pm16.to_bytes(2, "little")
    code += bytes.fromhex("b81000 8ed8 8ec0 0f20c0 24fe 0f22c0 ea") + b"\0\0\0\0"
    rm = at + len(code)
    code[-4:-2] = rm.to_bytes(2, "little")
    code += bytes.fromhex("31c0 8ed8 6766c7050000110044332211 67668b3500001100 0f20c3")
    hlt = at + len(code)
    code += b"\xf4"
    table = (0x17).to_bytes(2, "little") + (at + 0x88).to_bytes(4, "little")
    return at, bytes(code), table, gdt, hlt


def test_pe_transitions_against_unicorn():
    at, code, table, gdt, hlt = _pe_round_trip()
    image = bytearray(0x200)
    image[:len(code)] = code
    image[0x80:0x86] = table
    image[0x88:0x88 + len(gdt)] = gdt
    ram = np.zeros(2 << 20, np.uint8)
    ram[at:at + len(image)] = np.frombuffer(bytes(image), np.uint8)
    cpu = CPU(ram)
    cpu.reset()
    for seg in ("cs", "ds", "es", "ss"):
        cpu.load_segment(seg, 0, 0, 0xFFFF, 0x93)
    uc = Uc(UC_ARCH_X86, UC_MODE_16)
    cpu.cr0 = uc.reg_read(X.UC_X86_REG_CR0)            # Unicorn's reset CR0 (0x10: no CD/NW)
    cpu.eip, cpu.esp = at, 0x7000
    assert cpu.run(100) == Status.HLT and cpu.eip == hlt + 1
    uc.mem_map(0, 2 << 20)
    uc.mem_write(at, bytes(image))
    uc.reg_write(X.UC_X86_REG_ESP, 0x7000)
    uc.emu_start(at, hlt)
    regs = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI", "CS", "DS", "ES", "CR0")
    ours = [cpu.eax, cpu.ecx, cpu.edx & 0, cpu.ebx, cpu.esp, cpu.ebp, cpu.esi, cpu.edi,
            cpu.cs.selector, cpu.ds.selector, cpu.es.selector, cpu.cr0]
    theirs = [uc.reg_read(getattr(X, f"UC_X86_REG_{r}")) for r in regs]
    theirs[2] = 0                                      # EDX: the reset signature (ours only)
    assert ours == theirs
    assert ours[6] == 0x11223344 and bytes(uc.mem_read(0x110000, 4)) == bytes(ram[0x110000:][:4])
    # kjcore keeps the 4 GiB limits loaded in protected mode (ES never reloaded: its base too).
    assert cpu.ds.limit == cpu.es.limit == 0xFFFFFFFF and cpu.ds.base == 0
