"""examples/pingpong.elf: a peer that ping-pongs with the first kernel (SPEC 7.8-7.9).

The committed build is reproducible, and 1000 rounds each way keep both sides' memory: the
first kernel's (JumpOracle, invariant 8) and the peer's (its counter lives in its own page,
which the first kernel uses for itself between the rounds).
"""
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

import kjcore
from kjcore import (
    KEXEC_PRESERVE_CONTEXT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
)
from kjcore.fuzz.oracle import JumpOracle
from kjcore.loader import load_elf32
from kjcore.relocate import jump_back_entry

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
PEER = os.path.join(EXAMPLES, "pingpong.elf")
BASE = 0x100000
#: a word of the peer's destination page that the first kernel uses while the peer is out
KERNEL_WORD = BASE + 0x800


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _symbols(data):
    """name -> value from the ELF symbol table (pyelftools, an independent ELF reader)."""
    import io
    elffile = pytest.importorskip("elftools.elf.elffile")
    elf = elffile.ELFFile(io.BytesIO(data))
    return {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}


def test_rebuild_is_byte_identical(tmp_path):
    for tool in ("make", "as", "ld"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found")
    if "--no-warn-rwx-segments" not in subprocess.run(["ld", "--help"], capture_output=True,
                                                     text=True).stdout:
        pytest.skip("ld older than binutils 2.39 (no --no-warn-rwx-segments)")
    for name in ("Makefile", "pingpong.S"):
        shutil.copy(os.path.join(EXAMPLES, name), tmp_path / name)
    r = subprocess.run(["make", "-s", "-C", str(tmp_path), "pingpong.elf"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "pingpong.elf").read_bytes() == _read(PEER)


def test_loads_as_one_page_at_1_mib():
    image = load_elf32(_read(PEER))
    assert image.entry == BASE
    assert [(s.mem, s.memsz) for s in image.segments] == [(BASE, 0x1000)]
    assert b"pingpong \0" in bytes(image.segments[0].buf)


@pytest.mark.parametrize("engine, mode", [("emulated", dict(pae=False)),
                                          ("native", dict(pae=True, nx=True,
                                                          fix_pae_return=True))])
def test_ping_pong_1000_rounds(engine, mode):
    data = _read(PEER)
    sym = _symbols(data)
    image = load_elf32(data)
    m = kjcore.Machine(ram_size=2 << 20, kernel_reserved=64 << 10, engine=engine, **mode)
    m.kexec_load(image.entry, image.segments, KEXEC_PRESERVE_CONTEXT)
    img = m.kexec_image
    oracle = JumpOracle(m)
    page = bytearray(bytes(image.segments[0].buf).ljust(0x1000, b"\0"))
    struct.pack_into("<I", page, sym["jump_back"] - BASE, jump_back_entry(img.control_page))
    reentry = None
    for n in range(1, 1001):
        # The first kernel's turn: it uses the page the peer lives in while the peer is out.
        m.ram[KERNEL_WORD:KERNEL_WORD + 4] = np.frombuffer(struct.pack("<I", 0xF00D0000 + n),
                                                           np.uint8)
        oracle.before()
        assert m.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC) == 0
        r = m.last_result
        assert r.debugcon == b"pingpong %d\n" % n
        struct.pack_into("<I", page, sym["counter"] - BASE, n)
        oracle.check({BASE: bytes(page)})       # both sides kept their memory
        assert struct.unpack_from("<I", m.ram, KERNEL_WORD)[0] == 0xF00D0000 + n
        # the re-entry point is the peer's return address, the same every round
        reentry = reentry or r.start
        assert r.start == img.start == reentry and BASE < reentry < sym["puts"]
    assert m.debugcon == b"".join(b"pingpong %d\n" % n for n in range(1, 1001))
