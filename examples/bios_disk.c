/*
 * bios_disk.c - read disk sectors with INT 13h from a kexec jump payload (kjcore example).
 *
 * Load with preserve context and call it (see bios_e820.c for the kjexec lines) on a machine
 * with a disk.  It checks the extensions of disk 0x80 (AH=41h), asks its size (AH=48h), reads
 * its first and its last sector with extended reads (AH=42h, a disk address packet pointing
 * to a buffer below 1 MiB) and prints the first 16 bytes of each in hex and the first 64 as
 * text, on the screen with INT 10h (copied to the debug console by kjcore's BIOS).  Returns to
 * the first kernel with EAX = 0, or 1 when a call failed (the reason is on the console).
 */
#include "bioscall.h"
#include "biosprint.h"

#define DISK 0x80

struct disk_address_packet {
	unsigned char size, reserved;
	unsigned short count;
	unsigned short offset, segment;		/* the buffer */
	unsigned long long lba;
} __attribute__((packed));

struct drive_parameters {
	unsigned short size, flags;
	unsigned int cylinders, heads, sectors_per_track;
	unsigned long long sectors;
	unsigned short bytes_per_sector;
} __attribute__((packed));

static unsigned char sector[512] __attribute__((aligned(16)));
static struct disk_address_packet dap;
static struct drive_parameters params;
static char line[128];			/* show() writes 118 bytes */

static unsigned int fail(const char *what, unsigned int ax)
{
	char *p = put_str(line, "bios_disk: ");

	p = put_str(p, what);
	p = put_str(p, " failed, AH=");
	p = put_hex(p, (ax >> 8) & 0xff, 2);
	put_str(p, "\n");
	con_write(line);
	return 1;
}

static int read_sector(unsigned long long lba, struct biosregs *r)
{
	dap = (struct disk_address_packet){ .size = sizeof(dap), .count = 1,
					    .offset = bios_off(sector),
					    .segment = bios_seg(sector), .lba = lba };
	*r = (struct biosregs){ .eax = 0x4200, .edx = DISK, .ds = bios_seg(&dap),
				.esi = bios_off(&dap) };
	return bios_call(0x13, r, r);
}

static void show(unsigned long long lba)
{
	char *p = put_str(line, "lba ");
	int i;

	p = put_hex(p, lba, 8);
	p = put_str(p, ": ");
	for (i = 0; i < 16; i++)
		p = put_hex(p, sector[i], 2);
	p = put_str(p, "\r\n  |");
	for (i = 0; i < 64; i++)
		*p++ = sector[i] >= 0x20 && sector[i] < 0x7f ? (char)sector[i] : '.';
	put_str(p, "|\r\n");
	screen_write(line);
}

__attribute__((section(".text.start"), used))
unsigned int _start(void)
{
	struct biosregs r = { .eax = 0x4100, .ebx = 0x55aa, .edx = DISK };
	char *p;

	con_write("bios_disk: INT 13h extended read from disk 0x80\n");
	if (bios_call(0x13, &r, &r) || (r.ebx & 0xffff) != 0xaa55)
		return fail("AH=41h (extensions check)", r.eax);
	params.size = sizeof(params);
	r = (struct biosregs){ .eax = 0x4800, .edx = DISK, .ds = bios_seg(&params),
			       .esi = bios_off(&params) };
	if (bios_call(0x13, &r, &r))
		return fail("AH=48h (drive parameters)", r.eax);
	p = put_str(line, "bios_disk: disk 0x80 has ");
	p = put_dec(p, (unsigned int)params.sectors);
	p = put_str(p, " sectors of ");
	p = put_dec(p, params.bytes_per_sector);
	put_str(p, " bytes\n");
	con_write(line);
	if (read_sector(0, &r))
		return fail("AH=42h (read lba 0)", r.eax);
	show(0);
	if (read_sector(params.sectors - 1, &r))
		return fail("AH=42h (read the last lba)", r.eax);
	show(params.sectors - 1);
	return 0;
}
