/*
 * capture.c - a kdump capture "kernel" and kexec-jump snapshot program (kjcore example).
 *
 * Entered like Linux (ESI = the zero page, flat 32-bit protected mode, paging off).
 *
 * Called by a preserve-context kexec jump (a jump-back entry at [ESP], swapmap.c) it takes a
 * snapshot: every usable RAM range of the zero page's e820 table, each page read from where
 * the jump put the first kernel's bytes, written as an ELF32 core file to disk 0 from LBA 0;
 * then it returns to the first kernel through the jump-back entry (also when it fails: the
 * message is on the console and the first kernel goes on). kexec-tools also passes
 * elfcorehdr= to a preserve-context image, but that header leaves out the first 640 KiB and
 * the memory window of the jump: a snapshot wants all of the first kernel's RAM, so the e820
 * table decides. Every later exec re-enters the program and takes a fresh snapshot.
 *
 * Otherwise it is a kdump capture kernel: elfcorehdr= on its command line gives the ELF core
 * header of the crash load; it writes the notes and every PT_LOAD (the first 640 KiB from
 * the backup copy purgatory made, as the header's p_offset says) to disk 0 and halts.
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
	if (swapmap_build(jump_back)) {
		if (!boot_usable_ram(zero_page, &core))
			fail("no usable RAM in the e820 table, entries", 0);
		core_write(&core, 1);
		return 0;
	}
	if (!parse_elfcorehdr(cmdline, &elfcorehdr))
		fail("no elfcorehdr= and no kexec jump to return from; [ESP] was", jump_back);
	elfcorehdr_walk(elfcorehdr, &core);
	core_write(&core, 0);
	return 1;
}
