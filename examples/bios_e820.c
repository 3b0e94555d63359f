/*
 * bios_e820.c - print the BIOS memory map (INT 15h E820) from a kexec jump payload
 * (kjcore example).
 *
 * Load with preserve context and call it:
 *     kjexec --machine M -l --load-preserve-context --args-none \
 *            --mem-min=0x8000 --mem-max=0xffff bios_e820.elf
 *     kjexec --machine M -e
 * It asks the BIOS for each E820 entry (EAX=E820h, EDX='SMAP', EBX = continuation, 20-byte
 * buffer at ES:DI below 1 MiB), prints one line per entry to the screen with INT 10h (kjcore's
 * BIOS copies it to the debug console) and a header and a summary to the debug console, then
 * returns to the first kernel through the jump-back entry with EAX = the number of entries.
 */
#include "bioscall.h"
#include "biosprint.h"

#define SMAP 0x534d4150u			/* 'SMAP' */
#define MAX_ENTRIES 64

struct e820entry {
	unsigned long long base, length;
	unsigned int type;
} __attribute__((packed));

static struct e820entry entry;			/* in the image: below 1 MiB, for the BIOS */
static char line[96];

static const char *type_name(unsigned int type)
{
	return type == 1 ? "usable" : type == 2 ? "reserved" : "other";
}

__attribute__((section(".text.start"), used))
unsigned int _start(void)
{
	struct biosregs r;
	unsigned int n = 0, next = 0;
	char *p;

	con_write("bios_e820: INT 15h E820 memory map\n");
	do {
		r = (struct biosregs){ .eax = 0xe820, .edx = SMAP, .ebx = next,
				       .ecx = sizeof(entry), .es = bios_seg(&entry),
				       .edi = bios_off(&entry) };
		if (bios_call(0x15, &r, &r) || r.eax != SMAP)
			break;
		p = put_str(line, "e820: ");
		p = put_hex(p, entry.base, 16);
		p = put_str(p, "-");
		p = put_hex(p, entry.base + entry.length - 1, 16);
		p = put_str(p, " ");
		p = put_str(p, type_name(entry.type));
		put_str(p, "\r\n");
		screen_write(line);
		next = r.ebx;
	} while (++n < MAX_ENTRIES && next != 0);
	p = put_str(line, "bios_e820: ");
	p = put_dec(p, n);
	put_str(p, " entries\n");
	con_write(line);
	return n;
}
