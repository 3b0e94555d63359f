"""A capture "kernel" for the kdump tests: an i386 ELF that prints the command line its zero
page points at (ESI + 0x228: cmd_line_ptr) on the debug console, then halts."""
from elfbuild import Phdr, build_elf32

MiB = 1 << 20
#: where the capture kernel is linked: inside the tests' crashkernel=16M@16M region
CAPTURE_AT = 0x1000000
CRASHKERNEL = (16 * MiB, 16 * MiB)

#   mov 0x228(%esi), %ebx
# 1: mov (%ebx), %al ; test %al, %al ; jz 2f ; out %al, $0xe9 ; inc %ebx ; jmp 1b
# 2: hlt
PRINT_CMDLINE = bytes([0x8B, 0x9E, 0x28, 0x02, 0x00, 0x00, 0x8A, 0x03, 0x84, 0xC0, 0x74, 0x05,
                       0xE6, 0xE9, 0x43, 0xEB, 0xF5, 0xF4])


def capture_elf(at=CAPTURE_AT, code=PRINT_CMDLINE):
    """The capture kernel as an ELF32 executable linked at ``at``."""
    return build_elf32([Phdr(paddr=at, data=code, memsz=0x1000)], entry=at, sections=True)
