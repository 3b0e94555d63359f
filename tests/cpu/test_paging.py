"""Paging scenarios: page tables built in RAM, the CPU against a plain-Python
reference walk (SDM vol. 3, ch. 4) for every mode, and against Unicorn for
supervisor accesses with 2-level and PSE tables.

Each case maps a code page and one randomly-flagged target mapping, then
executes one load, store or jump through it at CPL 0 or 3, with CR0.WP,
CR4.PSE/PAE/PGE and EFER.NXE random.  Compared: fault or not, #PF error
code and CR2, the value moved, and every Accessed/Dirty bit in the tables.
"""
import random

import numpy as np
import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc, UcError
from unicorn import x86_const as X

from kjcore.cpu import CPU, Status

RAM = 16 << 20
CODE_LIN = 0x400000
CODE_PHYS = 0x200000
TARGET_LIN = 0x800000
PD = 0x100000
P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 16, 32, 64, 128, 256
NX = 1 << 63


def put(ram, addr, value, size):
    ram[addr:addr + size] = np.frombuffer(int(value).to_bytes(size, "little"), np.uint8)


def get(ram, addr, size):
    return int.from_bytes(ram[addr:addr + size].tobytes(), "little")


# ---------------------------------------------------------------- reference walk
def ref_walk(ram, cr0, cr3, cr4, efer, lin, write, user, fetch):
    """Plain-Python page walk. Returns (phys or None, error code, {addr: new entry})."""
    pae = cr4 & 0x20
    nxe = efer & 0x800
    upd = {}

    def fault(err):
        if write:
            err |= 2
        if user:
            err |= 4
        if fetch and nxe and pae:
            err |= 16
        return None, err, upd

    def rd(a, n):
        return get(ram, a, n) if a + n <= len(ram) else (1 << (8 * n)) - 1

    levels = []
    if pae:
        pdpte = rd((cr3 & 0xFFFFFFE0) + ((lin >> 30) & 3) * 8, 8)
        if not pdpte & P:
            return fault(0)
        if pdpte >> 52:
            return fault(1 | 8)
        pde_a = (pdpte & 0xFFFFFF000) + ((lin >> 21) & 0x1FF) * 8
        pde = rd(pde_a, 8)
        if not pde & P:
            return fault(0)
        if (pde >> 63) and not nxe or (pde >> 52) & 0x7FF:
            return fault(1 | 8)
        levels.append((pde_a, pde))
        if pde & PS:
            phys = (pde & 0xFFFE00000) | (lin & 0x1FFFFF)
        else:
            if not pde & A:
                upd[pde_a] = pde | A
            pte_a = (pde & 0xFFFFFF000) + ((lin >> 12) & 0x1FF) * 8
            pte = rd(pte_a, 8)
            if not pte & P:
                return fault(0)
            if (pte >> 63) and not nxe or (pte >> 52) & 0x7FF:
                return fault(1 | 8)
            levels.append((pte_a, pte))
            phys = (pte & 0xFFFFFF000) | (lin & 0xFFF)
    else:
        pde_a = (cr3 & 0xFFFFF000) + (lin >> 22) * 4
        pde = rd(pde_a, 4)
        if not pde & P:
            return fault(0)
        levels.append((pde_a, pde))
        if pde & PS and cr4 & 0x10:
            phys = (pde & 0xFFC00000) | (((pde >> 13) & 0xFF) << 32) | (lin & 0x3FFFFF)
        else:
            if not pde & A:
                upd[pde_a] = pde | A
            pte_a = (pde & 0xFFFFF000) + ((lin >> 12) & 0x3FF) * 4
            pte = rd(pte_a, 4)
            if not pte & P:
                return fault(0)
            levels.append((pte_a, pte))
            phys = (pte & 0xFFFFF000) | (lin & 0xFFF)
    allow_u = all(e & US for _, e in levels)
    allow_w = all(e & RW for _, e in levels)
    nx = any(e >> 63 for _, e in levels) if pae else False
    if user and not allow_u:
        return fault(1)
    if write and not allow_w and (user or cr0 & 0x10000):
        return fault(1)
    if fetch and nx:
        return fault(1)
    leaf_a, leaf = levels[-1]
    new = leaf | A | (D if write else 0)
    if new != leaf:
        upd[leaf_a] = new & 0xFFFFFFFF | (leaf & ~0xFFFFFFFF)
    return phys, 0, upd


# ---------------------------------------------------------------- scenario builder
def build(rng, pae, pse, ram):
    """Tables mapping the code page and one random target mapping; returns cr3."""
    ram[PD:PD + 0x10000] = 0
    code_flags = P | RW | US | A
    if pae:
        pdpt = PD
        pd0 = PD + 0x1000
        put(ram, pdpt, pd0 | P, 8)
        pt_code = PD + 0x2000
        put(ram, pd0 + ((CODE_LIN >> 21) & 0x1FF) * 8, pt_code | P | RW | US, 8)
        put(ram, pt_code + ((CODE_LIN >> 12) & 0x1FF) * 8, CODE_PHYS | code_flags, 8)
        pde_a = pd0 + ((TARGET_LIN >> 21) & 0x1FF) * 8
        esz = 8
        cr3 = pdpt
    else:
        pt_code = PD + 0x1000
        put(ram, PD + (CODE_LIN >> 22) * 4, pt_code | P | RW | US, 4)
        put(ram, pt_code + ((CODE_LIN >> 12) & 0x3FF) * 4, CODE_PHYS | code_flags, 4)
        pde_a = PD + (TARGET_LIN >> 22) * 4
        esz = 4
        cr3 = PD
    flags = rng.getrandbits(9) | (P if rng.random() < 0.9 else 0)
    hi = NX if pae and rng.random() < 0.3 else 0
    if rng.random() < 0.02 and pae:
        hi |= 1 << 55                                    # reserved bit
    if rng.random() < 0.4:
        # large page (PS): 4 MiB (2-level, needs PSE to count) or 2 MiB (PAE)
        base = rng.choice((0x400000, 0xC00000)) if not pae else rng.choice((0x600000, 0xA00000))
        if rng.random() < 0.05:
            base = 0x7FC00000 & ~0x1FFFFF                # past the end of RAM
        put(ram, pde_a, base | flags | PS | hi, esz)
    else:
        pt = PD + 0x8000
        put(ram, pde_a, pt | (flags & ~PS & 0x1FF) | (rng.getrandbits(1) * (NX if pae else 0)), esz)
        for i in range(4):
            f2 = rng.getrandbits(9) | (P if rng.random() < 0.85 else 0)
            page = rng.randrange(0x300, 0x400) << 12
            idx = ((TARGET_LIN >> 12) & (0x1FF if pae else 0x3FF)) + i
            put(ram, pt + idx * esz, page | f2 | (NX if pae and rng.random() < 0.3 else 0), esz)
    return cr3


def make_cpu(ram, cr0, cr3, cr4, efer, user):
    cpu = CPU(ram)
    cpu.cr3, cpu.cr4, cpu.efer = cr3, cr4, efer
    cpu.cr0 = cr0
    if user:
        cpu.load_segment("cs", 0x1B, 0, 0xFFFFFFFF, 0xFB, 0xC)
        for seg in ("ds", "es", "ss"):
            cpu.load_segment(seg, 0x23, 0, 0xFFFFFFFF, 0xF3, 0xC)
    return cpu


ACCESSES = {  # code bytes, (write, fetch)
    "read": (bytes.fromhex("8b03f4"), False, False),          # mov eax,[ebx]; hlt
    "write": (bytes.fromhex("8903f4"), True, False),          # mov [ebx],eax; hlt
    "rmw": (bytes.fromhex("0103f4"), True, False),            # add [ebx],eax
    "fetch": (bytes.fromhex("ffe3"), False, True),            # jmp ebx
}


def one_case(rng, pae):
    ram = np.zeros(RAM, np.uint8)
    pse = rng.random() < 0.7
    cr3 = build(rng, pae, pse, ram)
    user = rng.random() < 0.4
    wp = rng.random() < 0.5
    cr0 = 0x80000011 | (0x10000 if wp else 0)
    cr4 = (0x10 if pse else 0) | (0x20 if pae else 0) | (0x80 if rng.random() < 0.3 else 0)
    efer = 0x800 if pae and rng.random() < 0.6 else 0
    kind = rng.choice(sorted(ACCESSES))
    code, write, fetch = ACCESSES[kind]
    ram[CODE_PHYS:CODE_PHYS + len(code)] = np.frombuffer(code, np.uint8)
    lin = TARGET_LIN + (rng.randrange(0, 4) * 4096 if fetch else rng.randrange(0, 4 * 4096 - 4))
    if fetch:
        # a HLT wherever the target may land, so a successful jump ends there
        for base in (0x300000, 0x400000, 0x600000, 0xA00000, 0xC00000):
            ram[base:base + 0x100000:4096] = 0xF4
    ref_ram = ram.copy()
    # the code page itself is walked first: apply its updates to the reference
    _, _, upd = ref_walk(ref_ram, cr0, cr3, cr4, efer, CODE_LIN, False, user, True)
    for a, v in upd.items():
        put(ref_ram, a, v, 4)
    if kind == "rmw":
        # Read-modify-write: the load faults first (W=0 in the error code),
        # as QEMU/Unicorn do; only a readable page is then checked for writing.
        phys, err, upd = ref_walk(ref_ram, cr0, cr3, cr4, efer, lin, False, user, False)
        if phys is not None:
            phys, err, upd = ref_walk(ref_ram, cr0, cr3, cr4, efer, lin, True, user, False)
    else:
        phys, err, upd = ref_walk(ref_ram, cr0, cr3, cr4, efer, lin, write, user, fetch)
    if phys is not None and phys + 4 > RAM:
        phys_in_ram = False
    else:
        phys_in_ram = True
    cpu = make_cpu(ram, cr0, cr3, cr4, efer, user)
    cpu.eip = CODE_LIN
    cpu.ebx = lin
    cpu.eax = 0x11223344
    st = cpu.run(1)
    if fetch and st == Status.STEP_LIMIT:
        st = cpu.run(1)                       # the instruction at the target (HLT)
    desc = (f"pae={pae} pse={pse} user={user} wp={wp} cr4={cr4:#x} efer={efer:#x} {kind} "
            f"lin={lin:#x}")
    if phys is None:
        assert st == Status.TRIPLE_FAULT, desc
        assert cpu.fault[:2] == (14, err), desc + f" got {cpu.fault}"
        assert cpu.cr2 == lin, desc
    elif fetch:
        if phys_in_ram:
            # HLT at CPL 3 is #GP(0); at CPL 0 it halts: either way the fetch worked
            assert (st, cpu.fault[0] if user else None) == (
                (Status.TRIPLE_FAULT, 13) if user else (Status.HLT, None)), desc
        else:
            assert st == Status.TRIPLE_FAULT and cpu.fault[0] != 14, desc
        assert cpu.translate(lin, fetch=True, user=user) == phys, desc
    else:
        assert st == Status.STEP_LIMIT, desc + f" fault={cpu.fault} cr2={cpu.cr2:#x}"
        if kind == "read":
            want = get(ref_ram, phys, 4) if phys_in_ram else 0xFFFFFFFF
            assert cpu.eax == want, desc
        elif kind == "write" and phys_in_ram:
            assert get(ram, phys, 4) == 0x11223344, desc
    for a, v in upd.items():
        assert get(ram, a, 4) == v & 0xFFFFFFFF, desc + f" entry at {a:#x}"
    return phys is None


@pytest.mark.parametrize("pae", [False, True])
def test_paging_against_reference_walk(pae):
    rng = random.Random(1234 + pae)
    faults = sum(one_case(rng, pae) for _ in range(400))
    assert 40 < faults < 360          # both outcomes well represented


# ---------------------------------------------------------------- against Unicorn
def test_supervisor_paging_against_unicorn():
    rng = random.Random(99)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, RAM)
    vec = []
    uc.hook_add(UC_HOOK_INTR, lambda u, n, _: (vec.append(n), u.emu_stop()))
    ctx = uc.context_save()
    checked = 0
    for _ in range(200):
        ram = np.zeros(RAM, np.uint8)
        pse = rng.random() < 0.7
        cr3 = build(rng, False, pse, ram)
        cr0 = 0x80000011 | (0x10000 if rng.random() < 0.5 else 0)
        cr4 = 0x10 if pse else 0
        kind = rng.choice(("read", "write", "rmw"))
        code = ACCESSES[kind][0]
        ram[CODE_PHYS:CODE_PHYS + 3] = np.frombuffer(code, np.uint8)
        lin = TARGET_LIN + rng.randrange(0, 4 * 4096 - 4)
        cpu = make_cpu(ram.copy(), cr0, cr3, cr4, 0, False)
        cpu.eip, cpu.ebx, cpu.eax = CODE_LIN, lin, 0x55667788
        st = cpu.run(1)
        uc.context_restore(ctx)
        uc.mem_write(0, ram.tobytes())
        uc.reg_write(X.UC_X86_REG_CR3, cr3)
        uc.reg_write(X.UC_X86_REG_CR4, cr4)
        uc.reg_write(X.UC_X86_REG_CR0, cr0)
        uc.reg_write(X.UC_X86_REG_EBX, lin)
        uc.reg_write(X.UC_X86_REG_EAX, 0x55667788)
        uc.ctl_remove_cache(CODE_LIN, CODE_LIN + 16)        # code bytes change per case
        vec.clear()
        try:
            uc.emu_start(CODE_LIN, 0, count=1)
        except UcError:
            continue                                     # physical address outside Unicorn's map
        checked += 1
        if st == Status.TRIPLE_FAULT:
            assert vec == [14] and uc.reg_read(X.UC_X86_REG_CR2) == cpu.cr2
        else:
            assert vec == [] and uc.reg_read(X.UC_X86_REG_EAX) == cpu.eax
        umem = np.frombuffer(bytes(uc.mem_read(PD, 0x10000)), np.uint8)
        assert np.array_equal(umem, cpu.ram[PD:PD + 0x10000]), "A/D bits differ"
        if st != Status.TRIPLE_FAULT:
            assert bytes(uc.mem_read(0x300000, 0x100000)) == cpu.ram[0x300000:0x400000].tobytes()
    assert checked > 120


# ---------------------------------------------------------------- TLB behaviour
def test_tlb_flush_rules():
    """CR3 loads drop non-global entries; INVLPG drops one page; PGE keeps globals."""
    ram = np.zeros(RAM, np.uint8)
    put(ram, PD, 0x101000 | P | RW, 4)                      # 0..4 MiB via PT
    for i in range(1024):
        put(ram, 0x101000 + 4 * i, (i << 12) | P | RW | (G if i == 0x20 else 0), 4)
    cpu = CPU(ram)
    cpu.cr3, cpu.cr4 = PD, 0x80                              # PGE
    cpu.cr0 = 0x80000011
    assert cpu.translate(0x20123) == 0x20123
    # mov ecx,[0x20000]; mov edx,[0x21000]; mov cr3,eax; (the same two loads); hlt
    code = bytes.fromhex("8b0d00000200 8b1500100200 0f22d8 8b0d00000200 8b1500100200 f4")
    ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
    cpu.eip = 0x1000
    cpu.eax = PD
    assert cpu.run(2) == Status.STEP_LIMIT                   # both pages now in the TLB
    # Remap both pages behind the CPU's back.
    put(ram, 0x101000 + 4 * 0x20, (0x50 << 12) | P | RW | G, 4)
    put(ram, 0x101000 + 4 * 0x21, (0x51 << 12) | P | RW, 4)
    ram[0x50000:0x50004] = 0xAA
    ram[0x51000:0x51004] = 0xBB
    assert cpu.run(10) == Status.HLT
    assert cpu.ecx == 0                                      # global page: stale entry kept
    assert cpu.edx == 0xBBBBBBBB                             # non-global: walked again
    cpu.load_segment("ds", 0x10, 0, 0xFFFFFFFF, 0x93, 0xC)
    code2 = bytes.fromhex("0f013d00000200 8b0500000200 f4")   # invlpg [0x20000]; mov eax,[0x20000]
    ram[0x2000:0x2000 + len(code2)] = np.frombuffer(code2, np.uint8)
    cpu.eip = 0x2000
    assert cpu.run(5) == Status.HLT and cpu.eax == 0xAAAAAAAA


def test_paging_off_transition_fetches_next_instruction_physically():
    """mov cr0 clearing PG: the next instruction comes from the physical address."""
    ram = np.zeros(RAM, np.uint8)
    put(ram, PD, 0 | P | RW | PS, 4)                          # identity 4 MiB page for 0..4M
    put(ram, PD + 4 * (0xC0000000 >> 22), 0 | P | RW | PS, 4)  # 0xC0000000 -> 0
    cpu = CPU(ram)
    cpu.cr3, cpu.cr4 = PD, 0x10
    cpu.cr0 = 0x80000011
    # at 0x3000: mov eax,cr0; and eax,0x7fffffff; mov cr0,eax; mov ebx,0x1234; hlt
    code = bytes.fromhex("0f20c0 25ffffff7f 0f22c0 bb34120000 f4")
    ram[0x3000:0x3000 + len(code)] = np.frombuffer(code, np.uint8)
    cpu.eip = 0x3000                                        # identity-mapped copy
    assert cpu.run(10) == Status.HLT and cpu.ebx == 0x1234 and not cpu.cr0 & 0x80000000
    assert cpu.translate(0xC0003000) == 0xC0003000           # identity now


def test_fast_path_respects_tlb_rights():
    """The register/memory fast path reuses TLB entries: it must still honour
    U/S, R/W with CR0.WP, and set the Dirty bit on the first write."""
    ram = np.zeros(RAM, np.uint8)
    put(ram, PD, 0x101000 | P | RW | US, 4)
    for i in range(1024):
        put(ram, 0x101000 + 4 * i, (i << 12) | P | RW | US, 4)
    put(ram, 0x101000 + 4 * 0x50, (0x50 << 12) | P | RW, 4)          # supervisor only
    put(ram, 0x101000 + 4 * 0x51, (0x51 << 12) | P | US, 4)          # read-only
    put(ram, 0x101000 + 4 * 0x52, (0x52 << 12) | P | RW | US, 4)     # clean page
    code = bytes.fromhex("8b03 8b03 f4")                               # mov eax,[ebx] x2; hlt

    def cpu_at(lin, user, code=code, wp=True):
        ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
        cpu = make_cpu(ram, 0x80000011 | (0x10000 if wp else 0), PD, 0, 0, False)
        cpu.eip, cpu.ebx = 0x1000, lin
        assert cpu.run(1) == Status.STEP_LIMIT                           # ring 0 fills the TLB
        if user:
            cpu.load_segment("cs", 0x1B, 0, 0xFFFFFFFF, 0xFB, 0xC)
            for seg in ("ds", "es", "ss"):
                cpu.load_segment(seg, 0x23, 0, 0xFFFFFFFF, 0xF3, 0xC)
        return cpu

    cpu = cpu_at(0x50000, user=True)
    assert cpu.run(1) == Status.TRIPLE_FAULT and cpu.fault[:2] == (14, 5)
    cpu = cpu_at(0x51000, user=False, code=bytes.fromhex("8b03 8903 f4"))
    assert cpu.run(1) == Status.TRIPLE_FAULT and cpu.fault[:2] == (14, 3)
    cpu = cpu_at(0x51000, user=False, code=bytes.fromhex("8b03 8903 f4"), wp=False)
    assert cpu.run(2) == Status.HLT                                      # WP=0: ring 0 writes
    cpu = cpu_at(0x52000, user=False, code=bytes.fromhex("8b03 8903 f4"))
    assert get(ram, 0x101000 + 4 * 0x52, 4) & (A | D) == A
    assert cpu.run(2) == Status.HLT
    assert get(ram, 0x101000 + 4 * 0x52, 4) & (A | D) == A | D


@pytest.mark.parametrize("code, err", [("8b03 53 f4", 3),              # push ebx
                                       ("8b03 e800000000 f4", 3),      # call rel32
                                       ("8b03 5a f4", None)])          # pop edx: reads
def test_fast_path_stack_forms_fault_on_a_read_only_page(code, err):
    """PUSH and CALL (inlined fast-path stack forms) writing a read-only page with CR0.WP
    raise #PF at the instruction, ESP unchanged, even with the page in the TLB; POP reads."""
    ram = np.zeros(RAM, np.uint8)
    put(ram, PD, 0x101000 | P | RW | US, 4)
    for i in range(1024):
        put(ram, 0x101000 + 4 * i, (i << 12) | P | RW | US, 4)
    put(ram, 0x101000 + 4 * 0x51, (0x51 << 12) | P | US, 4)          # read-only
    code = bytes.fromhex(code)
    ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
    cpu = make_cpu(ram, 0x80010011, PD, 0, 0, False)
    cpu.eip, cpu.ebx, cpu.esp = 0x1000, 0x51000, 0x51010
    assert cpu.run(1) == Status.STEP_LIMIT                               # TLB filled by the load
    if err is None:
        assert cpu.run(2) == Status.HLT and cpu.esp == 0x51014
        return
    assert cpu.run(1) == Status.TRIPLE_FAULT and cpu.fault[:2] == (14, err)
    assert (cpu.eip, cpu.esp) == (0x1002, 0x51010)
