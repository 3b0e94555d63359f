"""Real mode (SPEC 14.1) by scenario: IVT delivery and IRET against a plain-Python model,
PE transitions with the descriptor caches kept (unreal mode), limit faults, paging without PE,
the A20 gate and its ports, the reset state, and random real-mode byte streams."""
import os
import random

import numpy as np
import pytest

from kjcore.cpu import CPU, Status
from kjcore.cpu import state as S

RAM = 1 << 21


def real_cpu(code, cs=0x1000, ip=0x100, ss=0x3000, sp=0x1000, ram_size=RAM):
    """A CPU after reset with ``code`` at cs:ip, real-mode SS:SP, the IVT at 0 (limit 0x3FF)."""
    ram = np.zeros(ram_size, np.uint8)
    cpu = CPU(ram)
    cpu.reset()
    at = (cs << 4) + ip
    ram[at:at + len(code)] = np.frombuffer(bytes(code), np.uint8)
    cpu.load_segment("cs", cs, cs << 4, 0xFFFF, 0x93)
    cpu.load_segment("ss", ss, ss << 4, 0xFFFF, 0x93)
    cpu.eip, cpu.esp = ip, sp
    return cpu


def ivt(cpu, vec, seg, off, code=b"\xf4"):
    """Point vector ``vec`` at seg:off and put ``code`` there."""
    ptr = off.to_bytes(2, "little") + seg.to_bytes(2, "little")
    cpu.ram[4 * vec:4 * vec + 4] = np.frombuffer(ptr, np.uint8)
    at = (seg << 4) + off
    cpu.ram[at:at + len(code)] = np.frombuffer(code, np.uint8)


def word(cpu, lin):
    return int(cpu.ram[lin]) | int(cpu.ram[lin + 1]) << 8


def test_reset_state():
    cpu = CPU(np.zeros(1 << 16, np.uint8))
    cpu.a20 = False
    cpu.reset()
    assert cpu.cr0 == 0x60000010 and cpu.eip == 0xFFF0 and cpu.edx == S.CPU_SIGNATURE
    assert (cpu.cs.selector, cpu.cs.base, cpu.cs.limit) == (0xF000, 0xFFFF0000, 0xFFFF)
    assert all(getattr(cpu, n).base == 0 and getattr(cpu, n).limit == 0xFFFF
               for n in ("ds", "es", "ss", "fs", "gs"))
    assert cpu.idtr.limit == 0x3FF and cpu.eflags == 2 and not cpu.a20    # A20 kept
    # Above RAM the bus is empty: the reset vector reads 0xFF until a ROM is mapped there.
    assert cpu.read_linear(0xFFFFFFF0, 1) == b"\xff"
    cpu.reset_flat()
    assert cpu.cr0 == 0x11 and cpu.cs.base == 0 and cpu.cs.limit == 0xFFFFFFFF


@pytest.mark.parametrize("op,vec", [(b"\xcd\x21", 0x21), (b"\xcc", 3), (b"\xce", 4)])
def test_software_interrupt_through_ivt(op, vec):
    cpu = real_cpu(b"\xfb" + op + b"\xf4")                  # sti; int; hlt
    cpu.eflags = 0x2 | 0x800 | S.AC                          # OF for INTO; AC cleared on entry
    ivt(cpu, vec, 0x2000, 0x10, b"\x43\xcf")                 # inc bx; iret
    assert cpu.run(2) == Status.STEP_LIMIT                   # sti, int
    sp = 0x1000 - 6
    ret_ip = 0x101 + len(op)
    assert (cpu.cs.selector, cpu.cs.base, cpu.eip) == (0x2000, 0x20000, 0x10)
    assert cpu.esp == sp and cpu.eflags & (S.IF | S.TF | S.AC) == 0
    frame = [word(cpu, 0x30000 + sp + k) for k in (0, 2, 4)]
    assert frame == [ret_ip, 0x1000, 0x2 | 0x800 | 0x200]
    assert cpu.run(10) == Status.HLT
    assert cpu.ebx == 1 and cpu.esp == 0x1000 and cpu.cs.selector == 0x1000
    assert cpu.eflags & (S.IF | S.AC) == S.IF   # IRET restores FLAGS, a 16-bit image: AC stays 0


def test_fault_through_ivt_and_triple_fault():
    cpu = real_cpu(b"\x31\xc9\xf7\xf1")                      # xor cx,cx; div cx  -> #DE
    ivt(cpu, 0, 0x2000, 0, b"\xf4")
    assert cpu.run(10) == Status.HLT and cpu.cs.selector == 0x2000
    assert word(cpu, 0x30000 + 0x1000 - 6) == 0x102         # faults push the faulting IP
    cpu = real_cpu(b"\xcd\x80")
    cpu.idtr.limit = 0x1F                    # 0x80, then #GP and #DF past the limit: shutdown
    assert cpu.run(10) == Status.TRIPLE_FAULT and cpu.fault[0] == 0x80


def test_pe_round_trip_keeps_caches_unreal_mode():
    # In protected mode with a 4 GiB DS, clear PE: DS keeps its limit; a real-mode load of DS
    # changes the base only, so a 32-bit offset past 1 MiB still works (unreal mode).
    code = bytes.fromhex(
        "0f20c0 6625feffffff 0f22c0"    # mov eax,cr0; and eax,~1; mov cr0,eax (16-bit CS)
        "ea 00 02 00 10"                # jmp far 0x1000:0x200
    )
    cpu = real_cpu(b"")
    cpu.cr0 = 0x11
    cpu.load_segment("cs", 0x08, 0x10000, 0xFFFF, 0x9B)      # 16-bit PM code segment
    cpu.load_segment("ds", 0x10, 0, 0xFFFFFFFF, 0x93, 0x8 | 0x4)
    cpu.ram[0x10100:0x10100 + len(code)] = np.frombuffer(code, np.uint8)
    after = bytes.fromhex("31c0 8ed8 67 66 c7 05 00 00 18 00 44 33 22 11 f4")
    # xor ax,ax; mov ds,ax; mov dword [0x180000],0x11223344; hlt
    cpu.ram[0x10200:0x10200 + len(after)] = np.frombuffer(after, np.uint8)
    cpu.eip = 0x100
    assert cpu.run(20) == Status.HLT
    assert cpu.cr0 & 1 == 0 and cpu.cs.selector == 0x1000 and cpu.cs.base == 0x10000
    assert cpu.ds.base == 0 and cpu.ds.limit == 0xFFFFFFFF
    assert bytes(cpu.ram[0x180000:0x180004]) == bytes.fromhex("44332211")


def test_limit_faults_gp_and_ss():
    cpu = real_cpu(b"\x67\x8b\x05\x00\x00\x01\x00")           # mov ax,[dword 0x10000]
    ivt(cpu, 13, 0x2000, 0, b"\xf4")
    assert cpu.run(10) == Status.HLT and cpu.cs.selector == 0x2000
    cpu = real_cpu(b"\x67\x8b\x04\x24", sp=0x1000)            # mov ax,[esp] with ESP > 0xFFFF
    cpu.esp = 0x10000
    cpu.idtr.limit = 0
    assert cpu.run(10) == Status.TRIPLE_FAULT and cpu.fault[0] == 12


def test_paging_without_pe_is_gp():
    cpu = real_cpu(bytes.fromhex("66b800000080 0f22c0"))      # mov eax,0x80000000; mov cr0,eax
    cpu.idtr.limit = 0
    assert cpu.run(10) == Status.TRIPLE_FAULT and cpu.fault[0] == 13


def test_ldt_instructions_are_ud():
    cpu = real_cpu(b"\x0f\x00\xd0")                           # lldt ax
    cpu.idtr.limit = 0
    assert cpu.run(10) == Status.TRIPLE_FAULT and cpu.fault[0] == 6


@pytest.mark.parametrize("fast", [False, True])
def test_a20_wrap(fast):
    # FFFF:0010 is physical 0x100000 with A20 on and 0 with it off.
    code = bytes.fromhex("b8ffff 8ed8 c606 1000 5a f4")       # mov ds,0xffff; mov byte [0x10],0x5a
    cpu = real_cpu(code)
    cpu.a20 = not fast
    assert cpu.run(10) == Status.HLT
    assert cpu.ram[0x100000] == (0 if fast else 0x5A) and cpu.ram[0] == (0x5A if fast else 0)


def test_a20_wrap_in_string_copies():
    # rep stosb at FFFF:0008, 32 bytes: physical 0xFFFF8..0x100017 with A20, else wraps to 0.
    code = bytes.fromhex("b8ffff 8ec0 bf0800 b92000 b0a5 fc f3aa f4")
    for a20, lo, hi in ((True, 0, 0x18), (False, 0x18, 0)):
        cpu = real_cpu(code)
        cpu.a20 = a20
        assert cpu.run(100) == Status.HLT
        assert (cpu.ram[0xFFFF8:0x100000] == 0xA5).all()
        assert int((cpu.ram[:0x18] == 0xA5).sum()) == lo
        assert int((cpu.ram[0x100000:0x100018] == 0xA5).sum()) == hi


def test_a20_ports():
    # in al,0x92; or al,2... : disable through 0x92, enable through the keyboard controller.
    code = bytes.fromhex("e492 24fd e692 e492 88c3 b0d1 e664 b0df e660 e492 f4")
    cpu = real_cpu(code)
    assert cpu.run(20) == Status.HLT
    assert cpu.ebx & 0xFF == 0 and cpu.eax & 0xFF == 2 and cpu.a20


def test_a20_masks_paged_and_fast_path_addresses():
    # Protected mode, flat 32-bit: the fast path (mov [ebx],eax) and a paged access both wrap.
    ram = np.zeros(RAM, np.uint8)
    cpu = CPU(ram)
    cpu.a20 = False
    code = bytes.fromhex("89 03 f4")                          # mov [ebx],eax; hlt
    ram[0x1000:0x1003] = np.frombuffer(code, np.uint8)
    cpu.eip, cpu.ebx, cpu.eax = 0x1000, 0x100800, 0xCAFEBABE
    assert cpu.run(10) == Status.HLT
    assert ram[0x800:0x804].tobytes() == bytes.fromhex("bebafeca") and not ram[0x100800:].any()
    assert cpu.translate(0x123456) == 0x023456


@pytest.mark.parametrize("d_bit", [0, S.A_DB])
def test_fast_path_and_hot_loops_in_real_mode(d_bit):
    """Real-mode code runs the same with the fast path and the translation tier as without: with
    a 16-bit CS the 16-bit fast path (fast16.py) runs it and the tier compiles
    the loop as 16-bit code; a 32-bit CS kept from protected mode (its D bit survives
    real-mode loads) runs both at its real-mode base."""
    n = 20000
    if d_bit:   # mov ecx,n; L: add eax,ecx; xor edx,eax; sub ebx,3; dec ecx; jnz L;
        # mov [esi],eax; hlt
        code = b"\xb9" + n.to_bytes(4, "little") + bytes.fromhex("01c831c283eb0349 75f6 8906 f4")
    else:       # the same in 16-bit code (0x66 for the 32-bit registers)
        code = (b"\x66\xb9" + n.to_bytes(4, "little")
                + bytes.fromhex("6601c8 6631c2 6683eb03 6649 75f2 668904 f4"))
    results = []
    for fast in (True, False):
        cpu = real_cpu(code, cs=0x1100, ip=0x10)
        cpu.load_segment("cs", 0x1100, 0x11000, 0xFFFF, 0x93 | d_bit)
        cpu.load_segment("ds", 0x2000, 0x20000, 0xFFFF, 0x93)
        cpu.a20, cpu.esi = False, 0x40
        cpu.jit_threshold = 1
        cpu.jit = fast
        cpu._s[S.NO_FAST] = 0 if fast else 1
        assert cpu.run(10 ** 6) == Status.HLT
        results.append((cpu.get_state()[["eax", "ebx", "ecx", "edx", "eip", "eflags"]],
                        cpu.ram.tobytes() == results[0][1] if results else cpu.ram.tobytes(),
                        cpu.steps, bool(cpu.compiled_loops)))
    (a, _, sa, compiled), (b, same, sb, _) = results
    assert a == b and same is True and sa == sb and compiled
    assert results[0][0]["ecx"] == 0


def test_random_real_mode_streams_stay_in_ram():
    """Random real-mode byte streams: a Status every time, nothing outside RAM touched."""
    _real_streams(5, 3000)


@pytest.mark.slow
def test_random_real_mode_streams_long():
    _real_streams(6, int(os.environ.get("KJCORE_FUZZ_STREAMS", "100000")))


def _real_streams(seed, streams):
    rng = random.Random(seed)
    buf = np.zeros((1 << 20) + 2 * 4096, np.uint8)
    buf[:4096] = 0xA5
    buf[-4096:] = 0x5A
    ram = buf[4096:-4096]
    cpu = CPU(ram)
    for i in range(streams):
        if i % 200 == 0:
            ram[:] = np.frombuffer(rng.randbytes(len(ram)), np.uint8)
        cpu.reset()
        cpu.a20 = rng.random() < 0.5
        for r in range(8):
            cpu._s[r] = rng.getrandbits(32) if rng.random() < 0.3 else rng.getrandbits(16)
        for name in ("es", "cs", "ss", "ds", "fs", "gs"):
            sel = rng.getrandbits(16)
            limit = 0xFFFFFFFF if rng.random() < 0.2 else 0xFFFF
            cpu.load_segment(name, sel, sel << 4, limit, 0x93)
        cpu.eip = rng.getrandbits(16)
        cpu.eflags = (rng.getrandbits(16) & 0xCD5) | 2
        cpu.idtr.limit = rng.choice((0x3FF, 0, rng.getrandbits(16)))
        st = cpu.run(64)
        assert isinstance(st, Status)
        if st == Status.IO:
            cpu.complete_io(rng.getrandbits(32))
            assert isinstance(cpu.run(64), Status)
    assert (buf[:4096] == 0xA5).all() and (buf[-4096:] == 0x5A).all()
