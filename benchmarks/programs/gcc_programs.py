"""The gcc benchmark programs (``*.bin`` here, built by the Makefile) on kjcore and on Unicorn.

Every program runs the same way on both: the flat binary at ``LOAD`` (1 MiB) in ``RAM_SIZE``
bytes of zeroed RAM, identity-mapped by 4 KiB pages (paging on, ring 0, flat 32-bit segments),
ESP at ``STACK_TOP``, EAX the repetition count; ``_start`` calls ``main(count)`` and stops on
the HLT at ``LOAD + HLT_OFFSET`` with the result in EAX.  kjcore executes that HLT, Unicorn
stops in front of it: the instruction counts are the same (kjcore's ``steps``).

Used by ``benchmarks/bench_cpu.py`` (speed) and ``tests/cpu/test_gcc_programs.py`` (the same
registers and memory on both, and the committed binaries rebuilt byte for byte).
"""
import pathlib
import time

import numpy as np

from kjcore.cpu import CPU, Status

HERE = pathlib.Path(__file__).resolve().parent
#: program name -> repetition count for the benchmark (the tests pass small ones)
PROGRAMS = {"crc32_bitwise": 64, "crc32_table": 640, "sha256": 64, "sort": 48, "memcpy": 240,
            "recursion": 256}
RAM_SIZE = 8 << 20
LOAD = 0x100000
HLT_OFFSET = 9
STACK_TOP = 0x80000
PAGE_DIR = 0x10000
PAGE_TABLES = 0x11000
#: the page tables (their Accessed/Dirty bits are not compared: Unicorn sets them lazily)
TABLES_END = PAGE_TABLES + 4 * (RAM_SIZE >> 12)
GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


def image(name):
    """8 MiB of RAM with program ``name`` loaded and the page tables built."""
    code = (HERE / f"{name}.bin").read_bytes()
    ram = np.zeros(RAM_SIZE, np.uint8)
    ram[LOAD:LOAD + len(code)] = np.frombuffer(code, np.uint8)
    if ram[LOAD + HLT_OFFSET] != 0xF4:
        raise ValueError(f"{name}.bin: no HLT at {LOAD + HLT_OFFSET:#x} (crt0.S changed?)")
    npt = RAM_SIZE >> 22
    pde = (np.arange(npt, dtype=np.uint32) << 12) + PAGE_TABLES | 3
    ram[PAGE_DIR:PAGE_DIR + 4 * npt] = pde.view(np.uint8)
    pte = (np.arange(RAM_SIZE >> 12, dtype=np.uint32) << 12) | 3
    ram[PAGE_TABLES:TABLES_END] = pte.view(np.uint8)
    return ram


def on_kjcore(name, count, cpu=None):
    """Run ``name`` on kjcore: (cpu, seconds).  ``cpu``: one from an earlier call (reloaded)."""
    ram = image(name)
    if cpu is None:
        cpu = CPU(ram)
    else:
        cpu.ram[:] = ram
        cpu.reset_flat()
    cpu.cr3 = PAGE_DIR
    cpu.cr0 = 0x80000011
    cpu.eip, cpu.esp, cpu.eax = LOAD, STACK_TOP, count
    t = time.perf_counter()
    status = cpu.run(10 ** 10)
    seconds = time.perf_counter() - t
    if status != Status.HLT or cpu.eip != LOAD + HLT_OFFSET + 1:
        raise RuntimeError(f"{name}: kjcore stopped with {status!r} at {cpu.eip:#x}")
    return cpu, seconds


def on_unicorn(name, count):
    """Run ``name`` on Unicorn: (Uc, seconds)."""
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    from unicorn import x86_const as X

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, RAM_SIZE)
    uc.mem_write(0, image(name).tobytes())
    uc.reg_write(X.UC_X86_REG_CR3, PAGE_DIR)
    uc.reg_write(X.UC_X86_REG_CR0, 0x80000011)
    uc.reg_write(X.UC_X86_REG_ESP, STACK_TOP)
    uc.reg_write(X.UC_X86_REG_EAX, count)
    t = time.perf_counter()
    uc.emu_start(LOAD, LOAD + HLT_OFFSET)
    return uc, time.perf_counter() - t


def unicorn_registers(uc):
    """Unicorn's general registers by name (``GPRS``) and the arithmetic flags."""
    from unicorn import x86_const as X

    regs = {r: uc.reg_read(getattr(X, f"UC_X86_REG_{r.upper()}")) for r in GPRS}
    regs["flags"] = uc.reg_read(X.UC_X86_REG_EFLAGS) & 0x8D5
    return regs


def kjcore_registers(cpu):
    """kjcore's general registers by name (``GPRS``) and the arithmetic flags."""
    regs = {r: getattr(cpu, r) for r in GPRS}
    regs["flags"] = cpu.eflags & 0x8D5
    return regs


def memory_outside_tables(ram):
    """RAM without the page tables (what both emulators must agree on)."""
    return np.concatenate([ram[:PAGE_DIR], ram[TABLES_END:]])
