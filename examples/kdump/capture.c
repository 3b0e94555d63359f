/*
 * capture.c - a kdump capture "kernel" and kexec-jump snapshot program (kjcore example).
 *
 * Entered like Linux (ESI = the zero page, flat 32-bit protected mode, paging off). With
 * elfcorehdr= on its command line it is a kdump capture kernel: it walks the ELF core
 * header the crash load left, writes the crashed kernel's memory as an ELF32 core file to
 * disk 0 from LBA 0 and halts. Without it, it was loaded with --load-preserve-context: it
 * writes a snapshot of the first kernel's usable RAM (the e820 table) the same way, taking
 * each page from where the kexec jump put it (swapmap.c), and returns to the first kernel
 * through the jump-back entry. Every later exec re-enters it after that return and takes
 * a fresh snapshot.
 */
#include "capture.h"

static struct core_layout core;

/* Returns 0 to go back to the first kernel, non-zero to halt. */
int capture_main(u32 zero_page, u32 jump_back)
{
	const char *cmdline = boot_command_line(zero_page);
	u32 elfcorehdr;

	console_write("capture: command line \"");
	console_write(cmdline);
	console_write("\"\n");
	if (parse_elfcorehdr(cmdline, &elfcorehdr)) {
		elfcorehdr_walk(elfcorehdr, &core);
		core_write(&core, 0);
		return 1;
	}
	swapmap_build(jump_back);
	if (!boot_usable_ram(zero_page, &core))
		fail("no usable RAM in the e820 table, entries", 0);
	core_write(&core, 1);
	return 0;
}
