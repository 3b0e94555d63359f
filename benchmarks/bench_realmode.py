"""Real-mode benchmarks (issue 11), each against Unicorn in 16-bit mode in the same run.

Run with ``pytest benchmarks/bench_realmode.py --benchmark-enable -s`` (benchmarks are
disabled by default; ``-s`` shows the figures, also kept in ``benchmark.extra_info``).

- ALU loop as real-mode code, with 16-bit operands (``add ax,cx``) and with 32-bit operands
  (0x66): kjcore (the translation tier compiles 16-bit code, ``kjcore.cpu.hotloop.loop16``), kjcore
  with the tier off, Unicorn in ``UC_MODE_16``, and the same loop as 32-bit protected-mode code
  on kjcore: the goal is real mode >= 0.5 x protected mode.
- Memory loop as real-mode code (``[si]`` operands; the tier does not compile memory forms),
  vs Unicorn 16 and vs the protected-mode loop.
- INT 13h throughput: real-mode code calls INT 13h AH=43h (extended write) then AH=42h
  (extended read) through the IVT and the ROM stub, 127 sectors a call, on an in-memory disk.
"""
import time

import numpy as np
import pytest

import kjcore
from kjcore.cpu import CPU, Status
from kjcore.devices.disk import Disk

unicorn = pytest.importorskip("unicorn")
from unicorn import UC_ARCH_X86, UC_MODE_16, UC_MODE_32, Uc  # noqa: E402
from unicorn import x86_const as X  # noqa: E402

AT = 0x1000
N = 2_000_000


def alu16(n):
    # mov cx,n16; mov di,n/65536+1; L: add ax,cx; xor dx,ax; sub bx,3; dec cx; jnz L;
    # dec di; jnz L; hlt  (the inner loop is 5 instructions; CX wraps 65536 times per DI)
    outer = n // 0x10000 + 1
    return (b"\xb9\x00\x00\xbf" + outer.to_bytes(2, "little")
            + bytes.fromhex("01c8 31c2 83eb03 49 75f6 4f 75f3 f4"))


def alu16_steps(n):
    outer = n // 0x10000 + 1
    return 2 + outer * (5 * 0x10000 + 2) + 1


def alu66(n):
    # the protected-mode ALU loop of bench_cpu.py as 16-bit code: 0x66 on every instruction
    return (b"\x66\xb9" + n.to_bytes(4, "little")
            + bytes.fromhex("6601c8 6631c2 6683eb03 6649 75f2 f4"))


def alu32(n):
    # mov ecx,n; L: add eax,ecx; xor edx,eax; sub ebx,3; dec ecx; jnz L; hlt (32-bit code)
    return b"\xb9" + n.to_bytes(4, "little") + bytes.fromhex("01c831c283eb034975f6f4")


def mem16(n):
    # mov ecx,n; L: mov eax,[si]; add eax,ecx; mov [si+4],eax; cmp eax,[si+8]; dec ecx; jnz L
    return (b"\x66\xb9" + n.to_bytes(4, "little")
            + bytes.fromhex("668b04 6601c8 66894404 663b4408 6649 75ee f4"))


def mem32(n):
    return (b"\xb9" + n.to_bytes(4, "little")
            + bytes.fromhex("8b0601c8894604" "3b4608" "49" "75f3" "f4"))


def _kjcore(code, real, jit=True):
    """kjcore's (instructions/s, steps) on ``code`` at AT; the second run is timed (the
    first compiles)."""
    ram = np.zeros(1 << 20, np.uint8)
    ram[AT:AT + len(code)] = np.frombuffer(code, np.uint8)
    cpu = CPU(ram)
    cpu.jit = jit
    if real:
        cpu.reset()
        for seg in ("cs", "ds", "ss", "es"):
            cpu.load_segment(seg, 0, 0, 0xFFFF, 0x93)
    best = None
    for _ in range(2):
        cpu.eip, cpu.esi, cpu.esp = AT, 0x8000, 0xFFF0
        t = time.perf_counter()
        assert cpu.run(10 ** 10) == Status.HLT
        best = time.perf_counter() - t
    return cpu.steps / best, cpu.steps


def _unicorn(code, steps, mode):
    uc = Uc(UC_ARCH_X86, mode)
    uc.mem_map(0, 1 << 20)
    uc.mem_write(AT, code)
    uc.reg_write(X.UC_X86_REG_ESI, 0x8000)
    t = time.perf_counter()
    uc.emu_start(AT, AT + len(code) - 1)
    return steps / (time.perf_counter() - t)


def _report(benchmark, **figures):
    benchmark.extra_info.update(figures)
    print("\n" + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in figures.items()))


@pytest.mark.parametrize("operands", [16, 32])
def test_real_mode_alu_loop(benchmark, operands):
    code = alu16(N) if operands == 16 else alu66(N)
    ours, steps = _kjcore(code, real=True)
    assert steps == (alu16_steps(N) if operands == 16 else 5 * N + 2)
    interp, _ = _kjcore(code, real=True, jit=False) if operands == 32 else (float("nan"), 0)
    theirs = _unicorn(code, steps, UC_MODE_16)
    pm, _ = _kjcore(alu32(N), real=False)
    pm_unicorn = _unicorn(alu32(N), 5 * N + 2, UC_MODE_32)
    benchmark.pedantic(lambda: None, rounds=1)
    _report(benchmark, operands=operands, kjcore_real_mips=ours / 1e6,
            interpreter_real_mips=interp / 1e6, unicorn16_mips=theirs / 1e6,
            ratio_vs_unicorn16=ours / theirs, protected_mode_mips=pm / 1e6,
            unicorn32_mips=pm_unicorn / 1e6, protected_ratio_vs_unicorn32=pm / pm_unicorn,
            ratio_vs_protected_mode=ours / pm)


def test_real_mode_memory_loop(benchmark):
    n = N // 2
    ours, steps = _kjcore(mem16(n), real=True)
    assert steps == 6 * n + 2
    theirs = _unicorn(mem16(n), steps, UC_MODE_16)
    pm, _ = _kjcore(mem32(n), real=False)
    pm_unicorn = _unicorn(mem32(n), steps, UC_MODE_32)
    benchmark.pedantic(lambda: None, rounds=1)
    _report(benchmark, kjcore_real_mips=ours / 1e6, unicorn16_mips=theirs / 1e6,
            ratio_vs_unicorn16=ours / theirs, protected_mode_mips=pm / 1e6,
            protected_ratio_vs_unicorn32=pm / pm_unicorn, ratio_vs_protected_mode=ours / pm)


SECTORS = 127                   # per call: 63.5 KiB, the most a 64 KiB segment holds
DAP = 0x7E00
CALLS = 64


def int13_loop(ah, calls):
    # mov cx,calls; L: mov si,DAP; mov ax,ah<<8; mov dl,0x80; int 0x13; jc done;
    # add word [DAP+8],SECTORS; dec cx; jnz L; done: hlt
    return (b"\xb9" + calls.to_bytes(2, "little")
            + b"\xbe" + DAP.to_bytes(2, "little") + bytes([0xB8, 0, ah])
            + bytes.fromhex("b280 cd13 7208") + b"\x83\x06" + (DAP + 8).to_bytes(2, "little")
            + bytes([SECTORS]) + bytes.fromhex("49 75ec f4"))


def test_int13_throughput(benchmark):
    """Guest INT 13h AH=43h then AH=42h, 127 sectors a call, through the ROM stub."""
    disk = Disk.memory(CALLS * SECTORS * 512)
    m = kjcore.Machine(ram_size=8 << 20, disks=[disk])
    pattern = np.frombuffer(np.random.default_rng(1).bytes(SECTORS * 512), np.uint8)
    figures = {}
    for ah, name in ((0x43, "write"), (0x42, "read")):
        code = int13_loop(ah, CALLS)
        m.ram[AT:AT + len(code)] = np.frombuffer(code, np.uint8)
        m.ram[0x10000:0x10000 + len(pattern)] = pattern if ah == 0x43 else 0
        dap = bytes([0x10, 0]) + SECTORS.to_bytes(2, "little") + (0x1000 << 16).to_bytes(
            4, "little") + (0).to_bytes(8, "little")
        m.ram[DAP:DAP + 16] = np.frombuffer(dap, np.uint8)
        cpu = m.cpu
        cpu.reset()
        for seg in ("cs", "ds", "ss", "es"):
            cpu.load_segment(seg, 0, 0, 0xFFFF, 0x93)
        cpu.eip, cpu.esp = AT, 0x7000
        t = time.perf_counter()
        assert cpu.run(10 ** 7) == Status.HLT and not cpu.eflags & 1 and cpu.ecx & 0xFFFF == 0
        figures[f"{name}_mb_s"] = CALLS * SECTORS * 512 / (time.perf_counter() - t) / 1e6
        figures[f"{name}_calls_s"] = CALLS / (time.perf_counter() - t)
    assert np.array_equal(m.ram[0x10000:0x10000 + len(pattern)], pattern)   # read back
    benchmark.pedantic(lambda: None, rounds=1)
    _report(benchmark, **figures)
