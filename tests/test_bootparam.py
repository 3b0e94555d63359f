"""The --args-linux zero page against the plain-Python boot protocol model (bootparam_model)."""
import pytest
from bootparam_model import model_params

from kjcore.bios.layout import e820 as bios_e820
from kjcore.bootparam import PARAM_BUFFER_SIZE, boot_params, command_line_bytes

MiB = 1 << 20


@pytest.mark.parametrize("base, cmdline, e820", [
    (0x90000, b"console=ttyS0 root=/dev/sda1", bios_e820(64 * MiB)),
    (0x1002000, b"", [(0, 16 * MiB, 1)]),
    (0x0, b"x" * 5000, bios_e820(1024 * MiB)),           # cut to 2047 bytes; ext_mem_k clipped
    (0x3FFFF000, bytes(range(1, 256)), [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2)]),  # no 1 MiB RAM
    (0x200000, b"a b c", [(0, 0x100000, 1)]),          # RAM ends at 1 MiB: nothing above it
])
def test_zero_page_matches_the_model(base, cmdline, e820):
    page = boot_params(base, cmdline, e820)
    assert len(page) == PARAM_BUFFER_SIZE
    assert page == model_params(base, cmdline, e820)


def test_fields_a_kernel_reads():
    page = boot_params(0x91000, b"quiet", bios_e820(64 * MiB))
    word = lambda at, n=4: int.from_bytes(page[at:at + n], "little")  # noqa: E731
    assert page[0x202:0x206] == b"HdrS" and word(0x206, 2) == 0x0206
    assert word(0x228) == 0x92000 and page[0x1000:0x1006] == b"quiet\0"
    assert page[0x1E8] == 5 and word(0x2D0 + 20 * 4, 8) == MiB          # 5th entry: 1 MiB up
    assert word(0x002, 2) == 0xFBFF and word(0x1E0) == 0xFBFF           # (64M - 1) >> 10 - 1024


def test_more_than_128_e820_entries_are_truncated():
    e820 = [(i * 0x2000, 0x1000, 1) for i in range(200)]
    page = boot_params(0, b"", e820)
    assert page[0x1E8] == 128 and page == model_params(0, b"", e820[:128])


def test_command_line_is_cut_with_its_nul():
    assert command_line_bytes(b"y" * 3000) == b"y" * 2047 + b"\0"
    assert command_line_bytes(b"") == b"\0"
