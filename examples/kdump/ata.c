/*
 * ata.c - write sectors to disk 0 (primary channel master) by ATA PIO, polling.
 *
 * WRITE SECTORS (0x30) with a 28-bit LBA, at most 256 sectors a command; before each
 * sector the host waits for BSY clear and DRQ set, then moves 256 words with REP OUTSW.
 * Any ERR (a sector past the end of the disk, a read-only disk) stops the program.
 */
#include "capture.h"

#define ATA_DATA	0x1f0
#define ATA_COUNT	0x1f2
#define ATA_LBA_LOW	0x1f3
#define ATA_LBA_MID	0x1f4
#define ATA_LBA_HIGH	0x1f5
#define ATA_DEVICE	0x1f6
#define ATA_COMMAND	0x1f7		/* status when read */

#define ATA_BSY	0x80
#define ATA_DRQ	0x08
#define ATA_ERR	0x01

#define CMD_WRITE_SECTORS	0x30
#define CMD_FLUSH_CACHE		0xe7
#define CMD_IDENTIFY		0xec

static inline void outb(u16 port, u8 value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 value;

	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

/* Wait until the device is not busy; with want_drq, until it also asks for data. */
static u8 ata_wait(int want_drq)
{
	u8 status;
	u32 spins = 0;

	do {
		status = inb(ATA_COMMAND);
		if (status & ATA_ERR)
			fail("ATA error, status", status);
		if (++spins == 0x1000000)
			fail("ATA device not ready, status", status);
	} while ((status & ATA_BSY) || (want_drq && !(status & ATA_DRQ)));
	return status;
}

static void ata_select(u32 lba, u32 count, u8 command)
{
	outb(ATA_DEVICE, 0xe0 | ((lba >> 24) & 0x0f));	/* LBA, master */
	outb(ATA_COUNT, count & 0xff);			/* 0 means 256 */
	outb(ATA_LBA_LOW, lba & 0xff);
	outb(ATA_LBA_MID, (lba >> 8) & 0xff);
	outb(ATA_LBA_HIGH, (lba >> 16) & 0xff);
	outb(ATA_COMMAND, command);
}

/* The disk's size in sectors from IDENTIFY DEVICE (words 60-61: user addressable sectors). */
u32 ata_sectors(void)
{
	u16 words[256];
	void *dst = words;
	u32 n = 256;

	ata_select(0, 0, CMD_IDENTIFY);
	ata_wait(1);
	__asm__ volatile("cld; rep insw" : "+D"(dst), "+c"(n) : "d"(ATA_DATA) : "memory");
	return (u32)words[60] | (u32)words[61] << 16;
}

void ata_write(u32 lba, const void *src, u32 count)
{
	while (count) {
		u32 n = count > 256 ? 256 : count, i;

		if (lba + n > 0x10000000)
			fail("sector past 28-bit LBA", lba);
		ata_select(lba, n, CMD_WRITE_SECTORS);
		for (i = 0; i < n; i++) {
			u32 words = SECTOR_SIZE / 2;

			ata_wait(1);
			__asm__ volatile("cld; rep outsw" : "+S"(src), "+c"(words) : "d"(ATA_DATA)
					 : "memory");
		}
		ata_wait(0);
		lba += n;
		count -= n;
	}
}

void ata_flush(void)
{
	ata_select(0, 0, CMD_FLUSH_CACHE);
	ata_wait(0);
}
