"""Constants of the kexec ABI (include/linux/kexec.h, reboot.h) and of the i386 memory layout."""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = 0xFFFFF000
U32 = 0xFFFFFFFF

# kexec_load(2) flags.
KEXEC_ON_CRASH = 0x1
KEXEC_PRESERVE_CONTEXT = 0x2
KEXEC_UPDATE_ELFCOREHDR = 0x4          # mainline profile only
KEXEC_CRASH_HOTPLUG_SUPPORT = 0x8      # mainline profile only
KEXEC_ARCH_MASK = 0xFFFF0000
KEXEC_ARCH_DEFAULT = 0
KEXEC_ARCH_386 = 3 << 16
KEXEC_ARCH_X86_64 = 62 << 16
KEXEC_SEGMENT_MAX = 16

# Indirection list entry flags (low bits of a page-aligned physical address).
IND_DESTINATION = 0x1
IND_INDIRECTION = 0x2
IND_DONE = 0x4
IND_SOURCE = 0x8
IND_FLAGS = IND_DESTINATION | IND_INDIRECTION | IND_DONE | IND_SOURCE
#: data entries per indirection page: the last of its 1024 words links to the next page
IND_ENTRIES_PER_PAGE = PAGE_SIZE // 4 - 1

# reboot(2).
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_MAGIC2A = 85072278
LINUX_REBOOT_MAGIC2B = 369367448
LINUX_REBOOT_MAGIC2C = 537993216
LINUX_REBOOT_MAGIC2_ALL = (LINUX_REBOOT_MAGIC2, LINUX_REBOOT_MAGIC2A,
                           LINUX_REBOOT_MAGIC2B, LINUX_REBOOT_MAGIC2C)
LINUX_REBOOT_CMD_KEXEC = 0x45584543

# i386 layout of the first kernel.
PAGE_OFFSET = 0xC0000000
#: control pages must end strictly below this (KEXEC_CONTROL_MEMORY_LIMIT on i386 = TASK_SIZE)
KEXEC_CONTROL_MEMORY_LIMIT = 0xC0000000
#: largest machine: the simulated first kernel direct-maps all of RAM at PAGE_OFFSET
MAX_RAM_SIZE = 1 << 30

PROFILES = ("2.6.27", "mainline")
