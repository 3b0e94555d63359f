/*
 * bios_tty.c - text output through INT 10h from a kexec jump payload (kjcore example).
 *
 * Load with preserve context and call it (see bios_e820.c for the kjexec lines).  It asks
 * the video mode (AH=0Fh), moves the cursor (AH=02h), writes a line with teletype (AH=0Eh,
 * one call per character), writes a string in white on blue with the cursor following it
 * (AH=13h), reads the cursor back (AH=03h) and reports mode and cursor on the debug console.
 * Returns to the first kernel with EAX = 0, or 1 when a call failed.
 */
#include "bioscall.h"
#include "biosprint.h"

static const char teletype[] = "teletype: hello from real mode\r\n";
static const char string[] = "write string: kexec jump calls the BIOS";
static char line[80];

static int video(unsigned int ax, unsigned int bx, unsigned int dx, struct biosregs *out)
{
	struct biosregs r = { .eax = ax, .ebx = bx, .edx = dx };

	return bios_call(0x10, &r, out);
}

__attribute__((section(".text.start"), used))
unsigned int _start(void)
{
	struct biosregs r;
	const char *c;
	char *p;

	con_write("bios_tty: INT 10h text output\n");
	if (video(0x0f00, 0, 0, &r))			/* AH=0Fh: AL mode, AH columns */
		return 1;
	p = put_str(line, "bios_tty: video mode ");
	p = put_dec(p, r.eax & 0xff);
	p = put_str(p, ", ");
	p = put_dec(p, (r.eax >> 8) & 0xff);
	put_str(p, " columns\n");
	con_write(line);

	if (video(0x0200, 0, 0x0204, &r))		/* AH=02h: row 2, column 4 */
		return 1;
	for (c = teletype; *c; c++)			/* AH=0Eh: AL character, BH page */
		if (video(0x0e00 | (unsigned char)*c, 0x0007, 0, &r))
			return 1;

	r = (struct biosregs){ .eax = 0x1301, .ebx = 0x001f, .ecx = sizeof(string) - 1,
			       .edx = 0x0404, .es = bios_seg(string), .ebp = bios_off(string) };
	if (bios_call(0x10, &r, &r))			/* AH=13h at row 4, column 4 */
		return 1;
	if (video(0x0300, 0, 0, &r))			/* AH=03h: DH row, DL column */
		return 1;
	p = put_str(line, "\nbios_tty: cursor at row ");
	p = put_dec(p, (r.edx >> 8) & 0xff);
	p = put_str(p, ", column ");
	p = put_dec(p, r.edx & 0xff);
	put_str(p, "\n");
	con_write(line);
	return 0;
}
