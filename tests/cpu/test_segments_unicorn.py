"""Segment-register loads and far transfers against Unicorn, with a GDT in RAM.

A random descriptor (any access byte and flags nibble, base and limit) sits in
the GDT; at CPL 0 the guest loads it with MOV to DS/ES/FS/GS/SS, POP DS, LDS,
or jumps/calls/returns far through it.  Compared: the exception vector (#GP,
#SS, #NP), the visible selectors, EIP, ESP and the descriptor's Accessed bit
in memory.  (QEMU does not enforce segment limits on data accesses, so
limits are covered by test_system.py instead.)
"""
import random
import struct

import numpy as np
from cpu_world import descriptor
from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc, UcError
from unicorn import x86_const as X

from kjcore.cpu import CPU, Status

GDT = 0x800
CODE = 0x3000
SEGS = {"es": X.UC_X86_REG_ES, "cs": X.UC_X86_REG_CS, "ss": X.UC_X86_REG_SS,
        "ds": X.UC_X86_REG_DS, "fs": X.UC_X86_REG_FS, "gs": X.UC_X86_REG_GS}

FORMS = {
    "mov_ds": "8ed8", "mov_es": "8ec0", "mov_fs": "8ee0", "mov_gs": "8ee8", "mov_ss": "8ed0",
    "pop_ds": "1f", "lds": "c51d00500000",                      # lds ebx,[0x5000]
    "ljmp": "ea00400000{sel}", "lcall": "9a00400000{sel}", "lret": "cb",
}


def test_segment_loads_and_far_transfers_against_unicorn():
    rng = random.Random(77)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 1 << 20)
    vec = []
    uc.hook_add(UC_HOOK_INTR, lambda u, n, _: (vec.append(n), u.emu_stop()))
    ctx = uc.context_save()
    flat_code = descriptor(0, 0xFFFFF, 0x9B, 0xC)
    flat_data = descriptor(0, 0xFFFFF, 0x93, 0xC)
    checked = 0
    for _ in range(3000):
        access = rng.getrandbits(8) | (0x80 if rng.random() < 0.8 else 0)
        if rng.random() < 0.6:
            access |= 0x10                                       # mostly code/data
        flags = rng.choice((0xC, 0x4, 0x0, 0x8)) | rng.getrandbits(1)
        d = descriptor(rng.choice((0, 0x1000, rng.getrandbits(32))), rng.getrandbits(20),
                       access, flags)
        gdt = bytes(8) + flat_code + flat_data + d
        sel = 0x18 | rng.getrandbits(2) if rng.random() < 0.9 else rng.choice((0, 3, 0x20, 0x1C))
        form = rng.choice(sorted(FORMS))
        code = bytes.fromhex(FORMS[form].format(sel=struct.pack("<H", sel).hex()))
        ram = np.zeros(1 << 20, np.uint8)
        ram[GDT:GDT + len(gdt)] = np.frombuffer(gdt, np.uint8)
        ram[CODE:CODE + len(code)] = np.frombuffer(code, np.uint8)
        esp = 0x8000
        ram[esp:esp + 8] = np.frombuffer(struct.pack("<II", 0x4000 if form == "lret" else sel,
                                                     sel), np.uint8)
        ram[0x5000:0x5006] = np.frombuffer(struct.pack("<IH", 0x12345678, sel), np.uint8)
        regs = {"eax": sel, "esp": esp}
        # kjcore
        cpu = CPU(ram.copy())
        cpu.gdtr.base, cpu.gdtr.limit = GDT, len(gdt) - 1
        for name in SEGS:
            cpu.load_segment(name, 0x08 if name == "cs" else 0x10, 0, 0xFFFFFFFF,
                             0x9B if name == "cs" else 0x93, 0xC)
        cpu.eip, cpu.eax, cpu.esp = CODE, sel, esp
        st = cpu.run(1)
        kvec = cpu.fault[0] if st == Status.TRIPLE_FAULT else None
        if st == Status.UNSUPPORTED:
            continue                                             # gate/TSS target: not modelled
        # Unicorn
        uc.context_restore(ctx)
        uc.mem_write(0, ram.tobytes())
        uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT, len(gdt) - 1, 0))
        for r, v in regs.items():
            uc.reg_write(getattr(X, f"UC_X86_REG_{r.upper()}"), v)
        for name, r in SEGS.items():
            uc.reg_write(r, 0x08 if name == "cs" else 0x10)
        uc.ctl_remove_cache(CODE, CODE + 16)
        vec.clear()
        try:
            uc.emu_start(CODE, 0, count=1)
        except UcError:
            pass
        uvec = vec[0] if vec else None
        desc = f"{form} sel={sel:#x} access={access:#x} flags={flags:#x}"
        assert kvec == uvec, desc
        checked += 1
        if kvec is None:
            for name, r in SEGS.items():
                assert getattr(cpu, name).selector == uc.reg_read(r), desc + " " + name
            assert cpu.eip == uc.reg_read(X.UC_X86_REG_EIP), desc
            assert cpu.esp == uc.reg_read(X.UC_X86_REG_ESP), desc
            ubyte = bytes(uc.mem_read(GDT + 0x18 + 5, 1))[0]
            if form.startswith(("mov", "pop", "lds")):
                assert int(cpu.ram[GDT + 0x18 + 5]) == ubyte, desc + " accessed bit"
            else:
                # Far transfers: SDM vol. 3, 3.4.5 says loading a descriptor into a
                # segment register sets its Accessed bit; QEMU only does it for data
                # segment loads, kjcore for CS too.
                assert int(cpu.ram[GDT + 0x18 + 5]) & 1
    assert checked > 2500
