"""Machines, payload fragments and helpers shared by the kexec-jump tests (test_jump*,
test_reboot)."""
import struct

import kjcore
from kjcore import (
    KEXEC_PRESERVE_CONTEXT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
    Segment,
)
from kjcore.fuzz.jumps import NOT_ARCHITECTURAL

RAM = 1 << 20
RESERVED = 64 << 10
DEST = 0x80000
P = KEXEC_PRESERVE_CONTEXT

#: paging modes of the first kernel that can come back (PAE needs fix_pae_return, SPEC 7.10;
#: the random payloads come back with DF = 1, which needs fix_peer_df)
MODES = {
    "2level": dict(pae=False, fix_peer_df=True),
    "pae": dict(pae=True, fix_pae_return=True, fix_peer_df=True),
    "pae-nx": dict(pae=True, nx=True, fix_pae_return=True, fix_peer_df=True),
}
ENGINES = ("emulated", "native")


def machine(mode="2level", engine="emulated", **kw):
    # no BIOS: payloads land anywhere in the 1 MiB, the read-only ROM included
    return kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, engine=engine,
                          **{"bios": False, **MODES[mode], **kw})


def reboot(m):
    return m.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC)


def asm(*parts):
    """Concatenate machine-code fragments (ints are single bytes, ints > 0xFF are not allowed)."""
    return b"".join(bytes([p]) if isinstance(p, int) else p for p in parts)


def d32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def out_e9(ch):
    return asm(0xB0, ord(ch), 0xE6, 0xE9)           # mov $ch, %al; out %al, $0xe9


def jmp_short(at, target):
    """``jmp target`` encoded at offset ``at`` of the same code (2 bytes)."""
    return bytes([0xEB, (target - (at + 2)) & 0xFF])


RET = b"\xc3"
HLT = b"\xf4"
UD2 = b"\x0f\x0b"
#: mov (%esp),%eax; call *%eax -- the jump-back protocol in its shortest form
CALL_BACK = b"\x8b\x04\x24\xff\xd0"


def load(m, code, dest=DEST, pages=1, flags=P):
    m.kexec_load(dest, [Segment(code, dest, pages * 4096)], flags)
    return m.kexec_image


def state_diff(a, b):
    return [f for f in a.dtype.names if f not in NOT_ARCHITECTURAL and a[f] != b[f]]
