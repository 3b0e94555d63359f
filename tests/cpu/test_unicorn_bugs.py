"""Where Unicorn (QEMU 5 TCG) is wrong, with evidence; the oracle avoids these forms.

The host CPU arbitrates: it runs the same instruction natively (x86-64 Linux
hosts, in a subprocess so an illegal instruction cannot take pytest down).
The encodings and semantics used are the same in 64-bit and 32-bit mode.
Each test asserts kjcore agrees with the host and documents that Unicorn
does not (if a newer Unicorn fixes it, that assert tells us to widen the
oracle).
"""
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc, UcError
from unicorn import x86_const as X

from kjcore.cpu import CPU, Status

HOST_X86_64 = platform.machine() in ("x86_64", "AMD64") and sys.platform == "linux"

_HOST = textwrap.dedent("""
    import ctypes, mmap, sys
    code = bytes.fromhex(sys.argv[1])
    buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    data = ctypes.create_string_buffer(16)
    fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(addr)
    print(fn(ctypes.addressof(data)))
""")


def host(code_hex):
    """Run x86-64 code natively: int64 fn(void *scratch). None if it faults."""
    if not HOST_X86_64:
        pytest.skip("needs an x86-64 Linux host to arbitrate")
    r = subprocess.run([sys.executable, "-c", _HOST, code_hex], capture_output=True, text=True)
    return int(r.stdout) if r.returncode == 0 else None


def unicorn32(code, regs=None, mem=None):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 1 << 20)
    uc.mem_write(0x1000, code)
    if mem:
        for a, b in mem.items():
            uc.mem_write(a, b)
    uc.reg_write(X.UC_X86_REG_ESP, 0x80000)
    for r, v in (regs or {}).items():
        uc.reg_write(getattr(X, f"UC_X86_REG_{r.upper()}"), v)
    vec = []
    uc.hook_add(UC_HOOK_INTR, lambda u, n, _: (vec.append(n), u.emu_stop()))
    try:
        uc.emu_start(0x1000, 0, count=1)
    except UcError:
        vec.append(6)
    return uc, vec


def kj32(code, regs=None, mem=None):
    ram = np.zeros(1 << 20, np.uint8)
    ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
    for a, b in (mem or {}).items():
        ram[a:a + len(b)] = np.frombuffer(b, np.uint8)
    cpu = CPU(ram)
    cpu.eip, cpu.esp = 0x1000, 0x80000
    for r, v in (regs or {}).items():
        setattr(cpu, r, v)
    st = cpu.run(1)
    return cpu, (cpu.fault[0] if st == Status.TRIPLE_FAULT else None)


def test_ret_imm16_is_unsigned():
    """``ret $0x8000`` releases 0x8000 bytes; Unicorn sign-extends imm16."""
    # mov r8,rsp; sub rsp,0x20000; lea rax,[rip+4]; push rax; ret 0x8000;
    # mov rax,rsp; sub rax,r8; mov rsp,r8; ret   -> rsp delta after the ret
    delta = host("4989e0 4881ec00000200 488d0504000000 50 c20080 4889e0 4c29c0 4c89c4 c3"
                 .replace(" ", ""))
    assert delta == -0x20000 + 0x8000
    cpu, _ = kj32(b"\xc2\x00\x80", mem={0x80000: b"\x00\x20\x00\x00"})
    assert cpu.esp == 0x80000 + 4 + 0x8000 and cpu.eip == 0x2000
    uc, _ = unicorn32(b"\xc2\x00\x80", mem={0x80000: b"\x00\x20\x00\x00"})
    assert uc.reg_read(X.UC_X86_REG_ESP) == 0x80000 + 4 - 0x8000, "Unicorn fixed: widen the oracle"


def test_f6_reg1_is_test_alias():
    """F6 /1 ib executes as TEST on hardware; Unicorn raises #UD."""
    # mov al,0x0f; test al,0x10 (F6 /1); setz al; movzx eax,al; ret
    assert host("b00f f6c810 0f94c0 0fb6c0 c3".replace(" ", "")) == 1
    cpu, vec = kj32(b"\xf6\xc8\x10", regs={"eax": 0x0F})
    assert vec is None and cpu.eflags & 0x40 and cpu.eip == 0x1003
    _, uvec = unicorn32(b"\xf6\xc8\x10", regs={"eax": 0x0F})
    assert uvec == [6], "Unicorn fixed: widen the oracle"


def test_lock_neg_flags_equal_plain_neg():
    """LOCK changes atomicity only; Unicorn's LOCK NEG computes other flags."""
    # mov byte [rdi],1; lock neg byte [rdi]; pushfq; pop rax; ret
    f_host = host("c60701 f0f61f 9c 58 c3".replace(" ", "")) & 0x8D5
    f_host_plain = host("c60701 f61f 9c 58 c3".replace(" ", "")) & 0x8D5
    assert f_host == f_host_plain == 0x95                 # SF AF PF CF for 0 - 1
    for code in (b"\xf0\xf6\x1b", b"\xf6\x1b"):           # (lock) neg byte [ebx]
        cpu, _ = kj32(code, regs={"ebx": 0x4000}, mem={0x4000: b"\x01"})
        assert cpu.eflags & 0x8D5 == f_host
    uc, _ = unicorn32(b"\xf0\xf6\x1b", regs={"ebx": 0x4000}, mem={0x4000: b"\x01"})
    assert uc.reg_read(X.UC_X86_REG_EFLAGS) & 0x8D5 != f_host, "Unicorn fixed: widen the oracle"


def test_write_through_cs_override():
    """A write through a code segment is #GP(0) (SDM vol. 3, 5.4.1); Unicorn writes."""
    cpu, vec = kj32(b"\x2e\xa3\x00\x40\x00\x00")          # mov %eax, %cs:0x4000
    assert vec == 13
    _, uvec = unicorn32(b"\x2e\xa3\x00\x40\x00\x00")
    assert uvec == [], "Unicorn fixed: widen the oracle"
