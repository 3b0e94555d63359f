/*
 * bioscall.h - call the PC BIOS from a kexec jump physical-mode program (kjcore example).
 *
 * bios_call() (bioscall.S) leaves 32-bit protected mode, executes "INT vector" in real mode
 * with the registers of *in, stores the registers and flags the BIOS returned in *out and
 * comes back to 32-bit protected mode with the caller's GDT, IDT, segment selectors and
 * flags.  Requirements (see bioscall.S): the program is linked below 64 KiB (bios.ld), so its
 * code, stacks and buffers are real-mode addressable with segment 0; the caller runs with
 * paging off and flat segments, as a kexec jump payload does.
 */
#ifndef BIOSCALL_H
#define BIOSCALL_H

/* The registers of one BIOS call.  32-bit fields: INT 15h E820 uses EAX, EBX, ECX, EDX. */
struct biosregs {
	unsigned int eax, ebx, ecx, edx, esi, edi, ebp;
	unsigned int eflags;		/* in: only CF, PF, AF, ZF, SF, OF are loaded */
	unsigned short ds, es, fs, gs;	/* real-mode segments */
};

_Static_assert(sizeof(struct biosregs) == 40, "bioscall.S knows this layout");

#define BIOS_CF 0x0001u			/* carry: most services report failure with it */
#define BIOS_ZF 0x0040u

/*
 * Executes INT vector (0-255) in real mode.  Returns 0 when the BIOS came back with CF = 0,
 * 1 when with CF = 1 (*out holds the registers either way; out may be NULL), -1 without
 * calling the BIOS when vector is out of range or a caller's segment selector cannot be
 * restored (an LDT selector, a GDT index above 29, or one index used by CS and by a data
 * segment register).
 */
int bios_call(int vector, const struct biosregs *in, struct biosregs *out);

/* The real-mode segment:offset of a pointer below 1 MiB (with paging off, address = pointer). */
static inline unsigned short bios_seg(const void *p)
{
	return (unsigned short)((unsigned int)p >> 4);
}

static inline unsigned short bios_off(const void *p)
{
	return (unsigned short)((unsigned int)p & 0xf);
}

#endif
