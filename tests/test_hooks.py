"""CPU hooks (SPEC §16): code, memory (linear and physical), fetch and interrupt hooks, what a
callback may do, hostile arguments, and the same programs under Unicorn's hooks."""
import numpy as np
import pytest

from kjcore.cpu import CPU, Status

unicorn = pytest.importorskip("unicorn")
X = pytest.importorskip("unicorn.x86_const")

CODE = 0x1000
DATA = 0x3000
STACK = 0x8000
#: mov eax,42; mov [DATA],eax; mov ebx,[DATA]; push eax; pop ecx; hlt
PROGRAM = bytes.fromhex("b82a000000 a300300000 8b1d00300000 50 59 f4")
ADDRESSES = [0x1000, 0x1005, 0x100A, 0x1010, 0x1011, 0x1012]


def flat(code=PROGRAM, ram_size=1 << 20):
    ram = np.zeros(ram_size, np.uint8)
    ram[CODE:CODE + len(code)] = np.frombuffer(code, np.uint8)
    cpu = CPU(ram)
    cpu.eip, cpu.esp = CODE, STACK
    return cpu


def on_unicorn(code, hooks):
    """Run ``code`` flat on Unicorn with ``hooks`` ((type, callback, begin, end)) until HLT."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, 1 << 20)
    uc.mem_write(CODE, code)
    uc.reg_write(X.UC_X86_REG_ESP, STACK)
    for kind, fn, begin, end in hooks:
        uc.hook_add(kind, fn, begin=begin, end=end)
    uc.emu_start(CODE, CODE + len(code) - 1)      # stops before the final hlt
    return uc


def test_code_hook_sees_every_instruction_like_unicorn():
    cpu, seen = flat(), []
    cpu.hook_code(lambda c, a: seen.append(a))
    assert cpu.run(100) == Status.HLT
    theirs = []
    on_unicorn(PROGRAM, [(unicorn.UC_HOOK_CODE, lambda uc, a, n, u: theirs.append(a), 1, 0)])
    assert seen == ADDRESSES == theirs + [0x1012]


def test_code_hook_range_and_delete():
    cpu, seen = flat(), []
    h = cpu.hook_code(lambda c, a: seen.append(a), 0x1005, 0x100A)
    cpu.run(100)
    assert seen == [0x1005, 0x100A]
    cpu.hook_del(h)
    cpu.eip, seen[:] = CODE, []
    cpu.run(100)
    assert seen == []
    with pytest.raises(KeyError):
        cpu.hook_del(h)


def test_memory_hooks_report_after_the_access_like_unicorn():
    cpu, seen = flat(), []
    cpu.hook_mem(lambda c, *a: seen.append((*a, c.eip)), "write", DATA, DATA + 3)
    cpu.hook_mem(lambda c, *a: seen.append((*a, c.eip)), "read", DATA, DATA)
    cpu.hook_mem(lambda c, *a: seen.append((*a, c.eip)), "write", STACK - 4, STACK - 1)
    cpu.run(100)
    assert seen == [("write", DATA, 4, 42, 0x100A), ("read", DATA, 4, 42, 0x1010),
                    ("write", STACK - 4, 4, 42, 0x1011)]
    theirs = []
    on_unicorn(PROGRAM, [
        (unicorn.UC_HOOK_MEM_WRITE, lambda uc, t, a, n, v, u: theirs.append((a, n, v)),
         DATA, DATA + 3),
        (unicorn.UC_HOOK_MEM_WRITE, lambda uc, t, a, n, v, u: theirs.append((a, n, v)),
         STACK - 4, STACK - 1)])
    assert [(a, n, v) for kind, a, n, v, _ in seen if kind == "write"] == theirs


def test_partial_overlap_and_misses():
    cpu, seen = flat(), []
    cpu.hook_mem(lambda c, *a: seen.append(a), "write", DATA + 3, DATA + 10)
    cpu.hook_mem(lambda c, *a: seen.append(a), "read", DATA + 4, DATA + 10)   # never read
    cpu.run(100)
    assert seen == [("write", DATA, 4, 42)]


def paged(code):
    """Paging on: the first 4 MiB identity-mapped, linear 0x400000 -> physical DATA."""
    cpu = flat(code)
    ram = cpu.ram
    pd, pt0, pt1 = 0x10000, 0x11000, 0x12000
    ram[pd:pd + 8] = np.array([pt0 | 3, pt1 | 3], "<u4").view(np.uint8)
    ram[pt0:pt0 + 4096] = (np.arange(1024, dtype="<u4") * 4096 | 3).view(np.uint8)
    ram[pt1:pt1 + 4] = np.array([DATA | 3], "<u4").view(np.uint8)
    cpu.cr3 = pd
    cpu.cr0 |= 1 << 31
    cpu.flush_tlb()
    return cpu


def test_physical_hook_follows_the_page_tables():
    cpu = paged(bytes.fromhex("b807000000 a300004000 f4"))     # mov eax,7; mov [0x400000],eax
    seen = []
    cpu.hook_mem(lambda c, *a: seen.append(("phys", *a)), "write", DATA, DATA + 3, physical=True)
    cpu.hook_mem(lambda c, *a: seen.append(("lin", *a)), "write", DATA, DATA + 3)
    assert cpu.run(100) == Status.HLT
    assert seen == [("phys", "write", DATA, 4, 7)]
    assert int(cpu.ram[DATA]) == 7


def test_fetch_hooks_linear_and_physical():
    cpu, seen = flat(), []
    cpu.hook_mem(lambda c, *a: seen.append(a), "fetch", 0x100A, 0x1010)
    cpu.hook_mem(lambda c, *a: seen.append(("p", *a)), "fetch", 0x1011, 0x1011, physical=True)
    cpu.run(100)
    assert seen == [("fetch", 0x100A, 1, None), ("fetch", 0x1010, 1, None),
                    ("p", "fetch", 0x1011, 1, None)]


def test_rep_string_reports_each_element():
    # mov edi,DATA; mov ecx,8; mov al,0x5a; rep stosb; hlt
    cpu = flat(bytes.fromhex("bf00300000 b908000000 b05a f3aa f4"))
    seen = []
    cpu.hook_mem(lambda c, *a: seen.append((*a, c.edi, c.ecx)), "write", DATA + 4, DATA + 4)
    assert cpu.run(100) == Status.HLT
    assert seen == [("write", DATA + 4, 1, 0x5A, DATA + 5, 3)]
    assert bytes(cpu.ram[DATA:DATA + 9]) == b"\x5a" * 8 + b"\0"


def test_a_hook_changes_state_and_redirects():
    cpu = flat()

    def change(c, address):
        c.eax = 7
    cpu.hook_code(change, 0x1005, 0x1005)
    cpu.run(100)
    assert int(cpu.ram[DATA]) == 7 and cpu.ebx == 7

    cpu, seen = flat(), []
    cpu.hook_code(lambda c, a: seen.append(a))

    def skip(c, address):
        c.eip = 0x1010
    cpu.hook_code(skip, 0x1005, 0x1005)
    cpu.run(100)
    assert seen == [0x1000, 0x1005, 0x1010, 0x1011, 0x1012] and int(cpu.ram[DATA]) == 0


def test_stop_from_a_hook_and_resume():
    cpu, seen = flat(), []

    def stop_once(c, address):
        seen.append(address)
        c.stop()
    h = cpu.hook_code(stop_once, 0x100A, 0x100A)
    assert cpu.run(100) == Status.STOPPED and cpu.eip == 0x100A
    cpu.raise_for_status(Status.STOPPED)           # a normal end for CPU.run's callers
    assert cpu.run(100) == Status.HLT and seen == [0x100A] and cpu.ebx == 42
    cpu.hook_del(h)
    cpu.eip = CODE
    w = cpu.hook_mem(lambda c, *a: c.stop(), "write", DATA, DATA)
    assert cpu.run(100) == Status.STOPPED and cpu.eip == 0x100A
    cpu.hook_del(w)
    assert cpu.run(100) == Status.HLT


def test_breakpoints_and_hooks_together():
    cpu, seen = flat(), []
    cpu.breakpoints = {0x1010}
    cpu.hook_code(lambda c, a: seen.append(a))
    assert cpu.run(100) == Status.BREAK and cpu.eip == 0x1010
    assert cpu.run(100) == Status.HLT
    assert seen == ADDRESSES        # the hook at the breakpoint is called once


def test_many_code_ranges_are_merged_but_exact():
    cpu, seen = flat(), []
    for a in range(0x1000, 0x1000 + 40):         # more ranges than the compiled list holds
        cpu.hook_code(lambda c, x, a=a: seen.append(x) if x == a else None, a, a)
    cpu.run(100)
    assert seen == ADDRESSES


def test_interrupt_hook():
    cpu = flat(bytes.fromhex("cd21 f4"))
    gdt, idt, handler = 0x500, 0x800, 0x2000
    code = np.array([0x0000FFFF, 0x00CF9B00], "<u4")      # flat ring-0 code at selector 8
    cpu.ram[gdt + 8:gdt + 16] = code.view(np.uint8)
    gate = np.array([0x00080000 | handler, 0x8E00], "<u4")   # interrupt gate to 8:handler
    cpu.ram[idt + 8 * 0x21:idt + 8 * 0x22] = gate.view(np.uint8)
    cpu.ram[handler] = 0xF4
    cpu.gdtr.base, cpu.gdtr.limit = gdt, 15
    cpu.idtr.base, cpu.idtr.limit = idt, 256 * 8 - 1
    seen = []
    cpu.hook_interrupt(lambda c, v: seen.append((v, c.eip)))
    assert cpu.run(100) == Status.HLT
    assert seen == [(0x21, handler)] and cpu.eip == handler + 1


def test_no_hook_keeps_the_fast_tiers():
    loop = bytes.fromhex("01c8 31c2 49 75f9 f4")    # add eax,ecx; xor edx,eax; dec ecx; jnz; hlt
    cpu = flat(loop)
    h = cpu.hook_mem(lambda c, *a: None, "write", DATA, DATA)
    cpu.ecx = 100_000
    cpu.run(10 ** 6)
    assert cpu.compiled_loops == []              # memory hooks: the general path only
    cpu.hook_del(h)
    cpu.eip, cpu.ecx = CODE, 100_000
    cpu.run(10 ** 6)
    assert cpu.compiled_loops == [(CODE, 7)]


@pytest.mark.parametrize("call, error, match", [
    (lambda c: c.hook_code(lambda *a: None, 5, 4), ValueError, "after end"),
    (lambda c: c.hook_code(lambda *a: None, -1), ValueError, "outside"),
    (lambda c: c.hook_code(lambda *a: None, 0, 1 << 32), ValueError, "outside"),
    (lambda c: c.hook_code(lambda *a: None, 1.5), TypeError, "integer"),
    (lambda c: c.hook_code(lambda *a: None, True), TypeError, "bool"),
    (lambda c: c.hook_code(None), TypeError, "callable"),
    (lambda c: c.hook_mem(lambda *a: None, "exec"), ValueError, "access"),
    (lambda c: c.hook_interrupt(42), TypeError, "callable"),
])
def test_hostile_arguments(call, error, match):
    cpu = flat()
    with pytest.raises(error, match=match):
        call(cpu)
    assert cpu.run(100) == Status.HLT and cpu.ebx == 42


def test_memory_hook_limit():
    cpu = flat()
    for i in range(16):
        cpu.hook_mem(lambda *a: None, "read", i, i)
    with pytest.raises(ValueError, match="at most 16"):
        cpu.hook_mem(lambda *a: None, "write", 0, 0)
    cpu.hook_mem(lambda *a: None, "fetch", 0, 0)   # fetch hooks are code stops


def test_physical_hook_on_the_second_page_of_a_crossing_access():
    # mov [0x400ffe],eax: two bytes in linear page 0x400000 (-> DATA), two in 0x401000 (-> 0x5000)
    cpu = paged(bytes.fromhex("b844332211 a3fe0f4000 f4"))
    cpu.ram[0x12004:0x12008] = np.array([0x5000 | 3], "<u4").view(np.uint8)
    cpu.flush_tlb()
    seen = []
    cpu.hook_mem(lambda c, *a: seen.append(a), "write", 0x5000, 0x5000, physical=True)
    assert cpu.run(100) == Status.HLT
    assert seen == [("write", DATA + 0xFFE, 4, 0x11223344)]
    assert bytes(cpu.ram[0x5000:0x5002]) == b"\x22\x11"
