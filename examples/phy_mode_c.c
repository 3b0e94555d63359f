/*
 * phy_mode_c.c - the phy_mode example in freestanding C (kjcore example).
 *
 * Same contract as phy_mode.S: called with paging off, flat segments, interrupts off and the
 * stack at the top of the kexec swap page (return address = jump-back entry). Writes one
 * line to the debug console (I/O port 0xE9) and returns the number of bytes written.
 *
 * Built with "gcc -m32 -ffreestanding -nostdlib -fno-pic -O2 -static" and linked at
 * physical 0x1000000 by phy_mode.ld; no libc, no libgcc, no SSE or x87 instructions.
 */
#define DEBUGCON_PORT 0xe9

static const char message[] = "phy_mode_c: hello from physical mode (C)\n";

static inline void outb(unsigned short port, unsigned char value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

/* First in .text (see phy_mode.ld) so the image starts with its entry point. */
__attribute__((section(".text.start"), used))
unsigned int _start(void)
{
	unsigned int n = 0;

	while (message[n] != '\0')
		outb(DEBUGCON_PORT, (unsigned char)message[n++]);
	return n;
}
