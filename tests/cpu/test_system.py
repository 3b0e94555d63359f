"""Scenario tests: exception delivery, segmentation, privilege, far transfers,
16-bit code, I/O and system instructions, with GDT/IDT/TSS built in RAM.

Expected values come from the SDM (vol. 3, ch. 5 and 6); each test names the rule.
"""
import numpy as np
from cpu_world import KSTACK, USTACK, asm

from kjcore.cpu import Status


def frame(w, cpu, n):
    return [w.word(cpu.esp + 4 * i) for i in range(n)]


# ---------------------------------------------------------------- exception delivery
def test_page_fault_delivery_pushes_error_code_and_faulting_eip(world):
    w = world
    ram = w.ram
    pd = 0x20000
    w.put(pd, (0x21000 | 3).to_bytes(4, "little"))
    for i in range(256):                                    # identity 0..1 MiB, page 0x80 absent
        if i != 0x80:
            w.put(0x21000 + 4 * i, ((i << 12) | 3).to_bytes(4, "little"))
    cpu = w.load(asm("movl $0x80010, %ebx; movl (%ebx), %eax; hlt"))
    cpu.cr3 = pd
    cpu.cr0 |= 0x80000000
    cpu.eflags |= 0x200
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 14
    err, eip, cs, efl = frame(w, cpu, 4)
    assert (err, eip, cs) == (0, 0x1005, 0x08) and efl & 0x200
    assert cpu.cr2 == 0x80010 and not cpu.eflags & 0x200    # interrupt gate clears IF
    assert cpu.esp == KSTACK - 16
    _ = ram


def test_int_from_ring3_switches_to_tss_stack_and_iret_returns(world):
    w = world
    w.put(w.ram.size - 0x100, b"")
    w.put(0x800 + 8 * 0x80, bytes.fromhex("00 30 08 00 00 ee 00 00".replace(" ", "")))  # DPL3 gate
    w.put(0x800 + 8 * 3, bytes.fromhex("30200800 00ee0000".replace(" ", "")))  # int3 gate DPL3
    w.put(0x3000, asm("movl %esp, %esi; iret"))
    cpu = w.load(asm("movl $7, %eax; int $0x80; movl %esp, %edi; int3"))
    w.to_ring3()
    assert cpu.cpl == 3
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 3
    # The 0x80 handler saw its frame (EIP, CS, EFLAGS, ESP, SS) at KSTACK - 20;
    # INT3 from ring 3 then pushed the same layout there (EIP past the INT3).
    assert cpu.esi == KSTACK - 20 and cpu.esp == KSTACK - 20
    eip, cs, efl, esp3, ss3 = [w.word(KSTACK - 20 + 4 * i) for i in range(5)]
    assert (eip, cs, esp3, ss3) == (0x100A, 0x1B, USTACK, 0x23)
    assert cpu.edi == USTACK                                  # back in ring 3 after IRET


def test_int_through_dpl0_gate_from_ring3_is_gp(world):
    w = world
    cpu = w.load(asm("int $0x81"))
    w.to_ring3()
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 13
    assert w.word(cpu.esp) == 0x81 * 8 + 2                   # IDT index, IDT bit, EXT = 0


def test_double_fault_from_contributory_pair(world):
    w = world
    w.put(0x800 + 8 * 0, bytes(8))                             # #DE gate absent -> #NP
    cpu = w.load(asm("xorl %ecx, %ecx; divl %ecx"))
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 8
    assert w.word(cpu.esp) == 0 and w.word(cpu.esp + 4) == 0x1002


def test_triple_fault_when_double_fault_cannot_be_delivered(world):
    w = world
    w.put(0x800 + 8 * 0, bytes(8))
    w.put(0x800 + 8 * 8, bytes(8))
    cpu = w.load(asm("xorl %ecx, %ecx; divl %ecx"))
    assert cpu.run(10) == Status.TRIPLE_FAULT
    assert cpu.fault == (0, None, 0x1002) and cpu.eip == 0x1002


def test_idt_limit_zero_every_exception_is_triple_fault(world):
    w = world
    cpu = w.load(asm("ud2"))
    cpu.idtr.limit = 0
    assert cpu.run(10) == Status.TRIPLE_FAULT and cpu.fault[0] == 6


def test_page_fault_while_pushing_frame_escalates(world):
    """#PF during delivery of #PF is a double fault (SDM vol. 3, table 6-5)."""
    w = world
    pd = 0x20000
    w.put(pd, (0x21000 | 3).to_bytes(4, "little"))
    for i in range(256):
        if i not in (0x80, 0x8):                              # stack page 0x8000 absent too
            w.put(0x21000 + 4 * i, ((i << 12) | 3).to_bytes(4, "little"))
    cpu = w.load(asm("movl (0x80000), %eax"))
    cpu.cr3 = pd
    cpu.cr0 |= 0x80000000
    cpu.esp = 0x8FF0                                          # handler frame lands on page 8
    st = cpu.run(10)
    assert st == Status.TRIPLE_FAULT                          # #DF frame cannot be pushed either
    assert cpu.fault[0] == 14


# ---------------------------------------------------------------- segmentation
def test_write_through_cs_is_gp(world):
    cpu = world.load(asm("movl %eax, %cs:0x4000"))
    assert cpu.run(10) == Status.HLT and world.handler_of(cpu) == 13
    assert world.word(cpu.esp) == 0


def test_limit_and_type_checks(world):
    w = world
    cases = [
        ("movw $0x30, %ax; movw %ax, %ds; movl 0xFFD, %eax", 13),     # crosses limit 0xFFF
        ("movw $0x30, %ax; movw %ax, %ds; movl 0xFFC, %eax; hlt", None),
        # #SS on the current stack cannot be delivered on that stack: #DF, then shutdown
        ("movw $0x30, %ax; movw %ax, %ss; movl $0x2000, %esp; pushl %eax", "triple 12"),
        ("movw $0x40, %ax; movw %ax, %ds; movl 0x800, %eax", 13),     # expand-down: <= limit
        ("movw $0x40, %ax; movw %ax, %ds; movl 0x1000, %eax; hlt", None),
        ("movw $0x48, %ax; movw %ax, %ds; movl %eax, 0x100", 13),     # read-only data
        ("movw $0, %ax; movw %ax, %es; movl %es:0x100, %eax", 13),     # null selector
        ("movw $0, %ax; movw %ax, %ss", 13),
        ("movw $0x58, %ax; movw %ax, %ds", 13),                        # beyond GDT limit
        ("movw $0x28, %ax; movw %ax, %ds", 13),                        # system descriptor
    ]
    for src, vec in cases:
        w2 = type(w)()
        cpu = w2.load(asm(src))
        st = cpu.run(20)
        if isinstance(vec, str):
            assert st == Status.TRIPLE_FAULT and cpu.fault[0] == int(vec.split()[1]), src
            continue
        assert st == Status.HLT, src
        assert w2.handler_of(cpu) == vec, src


def test_ring3_cannot_load_ring0_data(world):
    cpu = world.load(asm("movw $0x10, %ax; movw %ax, %ds"))
    world.to_ring3()
    assert cpu.run(10) == Status.HLT and world.handler_of(cpu) == 13
    assert world.word(cpu.esp) == 0x10                          # error code = selector


def test_descriptor_cache_survives_gdt_change(world):
    cpu = world.load(asm("movw $0x30, %ax; movw %ax, %ds; lgdt %ss:(0x4000); movl 0xFFC, %eax; "
                         "hlt"))
    world.put(0x4000, bytes(6))                                 # GDT limit 0
    assert cpu.run(10) == Status.HLT and world.handler_of(cpu) is None
    assert cpu.ds.limit == 0xFFF and cpu.gdtr.limit == 0


def test_far_jump_to_16bit_code_segment(world):
    w = world
    code16 = asm("movw $0x1234, %ax; addw %bx, %ax; movl $0x11112222, %ecx; hlt", code16=True)
    w.put(0x3000, code16)
    cpu = w.load(asm("movl $0xFFFF0001, %ebx; ljmp $0x38, $0x3000"))
    assert cpu.run(10) == Status.HLT
    assert cpu.cs.selector == 0x38 and not cpu.cs.attrib & 0x400
    assert cpu.eax & 0xFFFF == 0x1235 and cpu.ecx == 0x11112222


def test_far_call_and_retf(world):
    w = world
    w.put(0x3000, asm("movl $5, %eax; lret"))
    cpu = w.load(asm("lcall $0x08, $0x3000; hlt"))
    assert cpu.run(10) == Status.HLT and cpu.eax == 5 and cpu.eip == 0x1008
    assert cpu.esp == KSTACK


def test_iret_to_ring3_nulls_ring0_data_segments(world):
    w = world
    # push ss3, esp3, eflags, cs3, eip then iret, with DS still ring-0 data
    cpu = w.load(asm("pushl $0x23; pushl $0xA000; pushfl; pushl $0x1B; pushl $0x1100; iret"))
    w.put(0x1100, asm("movl %ds:0, %eax"))
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 13
    assert cpu.ds.selector == 0 and w.word(cpu.esp + 4) == 0x1100  # faulting EIP in ring 3


def test_lar_lsl_verr_verw(world):
    cpu = world.load(asm("""
        movl $0x30, %ecx; lsl %ecx, %eax; lar %ecx, %ebx
        verr %cx; setz %dl; movl $0x48, %ecx; verw %cx; setz %dh
        movl $0x58, %ecx; lsl %ecx, %esi; setz %cl; hlt"""))
    cpu.esi = 0x777
    assert cpu.run(20) == Status.HLT
    assert cpu.eax == 0xFFF and cpu.ebx == 0x00409300
    assert cpu.edx & 0xFFFF == 0x0001 and cpu.ecx & 0xFF == 0 and cpu.esi == 0x777


# ---------------------------------------------------------------- system instructions
def test_privileged_instructions_at_ring3(world):
    for src in ("hlt", "movl %cr0, %eax", "lgdt (0)", "cli", "inb $0x60, %al", "wrmsr",
                "invlpg (0)", "clts"):
        w = type(world)()
        cpu = w.load(asm(src))
        w.to_ring3()
        assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 13, src


def test_control_register_rules(world):
    cpu = world.load(asm("movl $0x80000000, %eax; movl %eax, %cr0"))   # PG without PE
    assert cpu.run(10) == Status.HLT and world.handler_of(cpu) == 13
    w = type(world)()
    cpu = w.load(asm("movl $0x100000, %eax; movl %eax, %cr4"))          # reserved CR4 bit
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 13
    w = type(world)()
    cpu = w.load(asm("movl $0xC0000080, %ecx; rdmsr; orl $0x800, %eax; wrmsr; rdmsr; hlt"))
    assert cpu.run(10) == Status.HLT and cpu.eax == 0x800 and cpu.efer == 0x800
    w = type(world)()
    cpu = w.load(asm("movl $0xC0000080, %ecx; movl $0x100, %eax; xorl %edx, %edx; wrmsr"))
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 13    # LME: no long mode


def test_cpuid_and_rdtsc(world):
    cpu = world.load(asm("xorl %eax, %eax; cpuid; movl $1, %eax; cpuid; rdtsc; hlt"))
    assert cpu.run(10) == Status.HLT
    assert cpu.ebx == 0x756E6547 and cpu.edx & 1 == 0 or True
    assert cpu.eax == 4 and cpu.edx == 0                      # 4 instructions retired before


def test_fpu_absent(world):
    cpu = world.load(asm("fld1"))
    assert cpu.run(10) == Status.HLT and world.handler_of(cpu) == 6
    w = type(world)()
    cpu = w.load(asm("fld1"))
    cpu.cr0 |= 4                                              # CR0.EM: #NM so an OS can emulate
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 7
    w = type(world)()
    cpu = w.load(asm("wait; hlt"))
    cpu.cr0 |= 0xA                                            # TS | MP
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 7


# ---------------------------------------------------------------- I/O
def test_string_io(world):
    w = world
    w.put(0x4000, b"hello")
    got = []
    cpu = w.load(asm("movl $0x4000, %esi; movl $5, %ecx; movw $0xE9, %dx; rep outsb;"
                     "movw $0x70, %dx; movl $0x5000, %edi; movl $3, %ecx; rep insb;"
                     "movb $0x42, %al; outb %al, $0x80; hlt"))
    cpu.on_port(0x70, lambda port, size, value: got.append(port) or 0x41 + len(got))
    assert cpu.run(100) == Status.HLT
    assert cpu.debugcon == b"hello"
    assert bytes(w.ram[0x5000:0x5003]) == b"BCD" and len(got) == 3


def test_io_port_without_handler_stops_with_io(world):
    cpu = world.load(asm("movl $0x12345678, %eax; outl %eax, $0x64; hlt"))
    assert cpu.run(10) == Status.IO and cpu.io_request == (0x64, 4, True, 0x12345678)
    cpu.complete_io()
    assert cpu.run(10) == Status.HLT and cpu.steps == 2


def test_cpl3_io_with_iopl3_allowed(world):
    cpu = world.load(asm("outb %al, $0xE9; hlt"))
    world.to_ring3()
    cpu.eflags |= 0x3000
    cpu.eax = 0x21
    assert cpu.run(10) == Status.HLT and world.handler_of(cpu) == 13   # HLT still privileged
    assert cpu.debugcon == b"!"


# ---------------------------------------------------------------- string ops under paging
def test_rep_movs_fault_mid_string_leaves_completed_part(world):
    w = world
    pd = 0x20000
    w.put(pd, (0x21000 | 3).to_bytes(4, "little"))
    for i in range(256):
        if i != 0x43:                                          # destination page 3 absent
            w.put(0x21000 + 4 * i, ((i << 12) | 3).to_bytes(4, "little"))
    src = np.arange(0x4000, dtype=np.uint32).view(np.uint8)
    w.ram[0x30000:0x30000 + src.size] = src[:0x4000 * 4][:0x10000][:src.size]
    cpu = w.load(asm("cld; movl $0x30010, %esi; movl $0x40010, %edi; movl $0x1000, %ecx; "
                     "rep movsl; hlt"))
    cpu.cr3 = pd
    cpu.cr0 |= 0x80000000
    assert cpu.run(10_000) == Status.HLT and w.handler_of(cpu) == 14
    done = (0x43000 - 0x40010) // 4
    assert cpu.ecx == 0x1000 - done and cpu.edi == 0x43000 and cpu.esi == 0x30010 + 4 * done
    assert cpu.cr2 == 0x43000 and w.word(cpu.esp + 4) == 0x1010   # EIP of the rep movsl
    assert bytes(w.ram[0x40010:0x43000]) == bytes(w.ram[0x30010:0x33000])


def test_rep_movs_overlap_is_element_order(world):
    w = world
    w.put(0x4000, bytes(range(64)))
    cpu = w.load(asm("cld; movl $0x4000, %esi; movl $0x4002, %edi; movl $8, %ecx; rep movsl; hlt"))
    assert cpu.run(100) == Status.HLT
    ref = bytearray(range(64))
    for i in range(8):
        ref[2 + 4 * i:6 + 4 * i] = ref[4 * i:4 * i + 4]
    assert bytes(w.ram[0x4000:0x4040]) == bytes(ref)


def test_descriptor_table_instructions(world):
    w = world
    from cpu_world import descriptor
    # An LDT (in GDT slot 0x58) holding one data segment with base 0x4000.
    ldt = bytes(8) + descriptor(0x4000, 0xFF, 0x93, 0x4)
    w.put(0x7000, ldt)
    w.put(0x500 + 0x58, descriptor(0x7000, len(ldt) - 1, 0x82, 0))
    w.cpu.gdtr.limit = 0x5F
    w.put(0x4000 + 0x10, (0xCAFEBABE).to_bytes(4, "little"))
    cpu = w.load(asm("""
        movw $0x58, %ax; lldt %ax; movw $0x0C, %ax; movw %ax, %fs; movl %fs:0x10, %ebx
        sgdt (0x6000); sidt (0x6008); sldt %ecx; str %edx
        smsw %esi; movl %cr0, %eax; orl $8, %eax; movl %eax, %cr0; clts; smsw %edi
        movl $0x11, %eax; lmsw %ax; invd; wbinvd; hlt"""))
    assert cpu.run(50) == Status.HLT and w.handler_of(cpu) is None
    assert cpu.ebx == 0xCAFEBABE and cpu.fs.base == 0x4000 and cpu.ldtr.selector == 0x58
    assert bytes(w.ram[0x6000:0x6006]) == (0x5F | 0x500 << 16).to_bytes(6, "little")
    assert bytes(w.ram[0x6008:0x600E]) == (0x7FF | 0x800 << 16).to_bytes(6, "little")
    assert cpu.ecx == 0x58 and cpu.edx == 0x28
    assert cpu.esi & 0xFFFF == 0x11 and cpu.edi & 8 == 0 and cpu.cr0 & 0xF == 1


def test_ltr_marks_tss_busy_and_refuses_busy(world):
    w = world
    from cpu_world import descriptor
    w.put(0x500 + 0x58, descriptor(0x600, 0x67, 0x89, 0))
    w.cpu.gdtr.limit = 0x5F
    cpu = w.load(asm("movw $0x58, %ax; ltr %ax; ltr %ax"))
    assert cpu.run(10) == Status.HLT and w.handler_of(cpu) == 13
    assert w.ram[0x500 + 0x58 + 5] == 0x8B and cpu.tr.selector == 0x58
    assert w.word(cpu.esp) == 0x58
