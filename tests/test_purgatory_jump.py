"""Purgatory inside a real kexec jump (SPEC 7.8): the relocation routine calls it, it verifies
the image, enters it with the boot-protocol registers, and the image returns through the
jump-back entry purgatory left at [ESP]; the first kernel goes on byte-exact (invariant 8)."""
import pytest
from jump_world import DEST, MODES, machine, reboot

from kjcore import KEXEC_PRESERVE_CONTEXT, Segment
from kjcore.errors import GuestHalted
from kjcore.fuzz.oracle import JumpOracle
from kjcore.purgatory import purgatory_segment

PURGATORY = DEST + 0x10000
ZERO_PAGE = DEST + 0x8000
REPORT = 0xEA
# report ESI, ESP, CS, DS and [ESP] on port 0xEA, then return: mov %esi,%eax; out; mov %esp,%eax;
# out; mov %cs,%eax; out; mov %ds,%eax; out; mov (%esp),%eax; out; ret
IMAGE = bytes.fromhex("89f0e7ea" "89e0e7ea" "8cc8e7ea" "8cd8e7ea" "8b0424e7ea" "c3")


def _load(m, image=IMAGE, corrupt=False):
    page = image.ljust(4096, b"\0")
    verified = page if not corrupt else b"\x90" + page[1:]
    data, entry = purgatory_segment(PURGATORY, entry=DEST, zero_page=ZERO_PAGE,
                                    segments=[(DEST, verified)])
    m.kexec_load(entry, [Segment(page, DEST, 4096), Segment(data, PURGATORY, len(data))],
                 KEXEC_PRESERVE_CONTEXT)
    return m.kexec_image


@pytest.mark.parametrize("mode", sorted(MODES))
def test_purgatory_enters_the_image_and_the_image_jumps_back(mode):
    m = machine(mode)
    img = _load(m)
    seen = []
    m.cpu.on_port(REPORT, lambda port, size, value: seen.append(value))
    oracle = JumpOracle(m).before()
    assert reboot(m) == 0 and m.state == "kernel"
    esi, esp, cs, ds, jump_back = seen
    assert (esi, cs, ds) == (ZERO_PAGE, 0x10, 0x18)
    assert esp == img.swap_page + 4096 - 4                     # the stack the routine called with
    assert img.control_page <= jump_back < img.control_page + 2048     # the jump-back entry
    oracle.check()                                             # invariants 8, 9; SPEC 8
    assert m.last_result.debugcon == b""


def test_a_corrupted_image_stops_in_purgatory():
    m = machine()
    _load(m, corrupt=True)
    with pytest.raises(GuestHalted) as info:
        reboot(m)
    assert m.debugcon == (b"purgatory: SHA-256 mismatch in segment 0x00000000 at 0x%08x, "
                          b"0x00001000 bytes\n" % DEST)
    assert PURGATORY <= int(info.value.state["eip"]) < PURGATORY + 4096 and m.state == "image"
