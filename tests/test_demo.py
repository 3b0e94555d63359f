"""``kjcore demo`` runs the whole story and checks itself."""
import pytest

import kjcore
from kjcore.commands.demo import PAYLOAD, PAYLOAD_AT, main
from kjcore.fuzz.oracle import preserved_mask


@pytest.mark.parametrize("argv", [["--jumps", "3", "--ram", "16M", "--image-size", "64K"],
                                  ["--jumps", "2", "--ram", "16M", "--engine", "native",
                                   "--pae"]])
def test_demo_passes_its_checks(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("guest said 'hello from physical mode'") == int(argv[1])
    assert "all checks passed" in out and "DESTINATION  0x00100000" in out


def test_preserved_mask_catches_a_changed_byte():
    m = kjcore.Machine(16 << 20)
    m.kexec_load(PAYLOAD_AT, [kjcore.Segment(PAYLOAD, PAYLOAD_AT, 0x1000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    keep = preserved_mask(m, m.kexec_image)
    assert not keep[m.kexec_image.swap_page] and keep[PAYLOAD_AT] and keep[0x2000]
    assert not keep[m.first_kernel.kexec_pgd]

