/*
 * capture.h - shared declarations of the kdump/snapshot capture program (kjcore example).
 */
#ifndef CAPTURE_H
#define CAPTURE_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define PAGE_SIZE 4096u
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define SECTOR_SIZE 512u

/* The PT_LOAD and PT_NOTE ranges of the core file being written. */
#define MAX_RANGES 64
struct range {
	u32 paddr;
	u32 vaddr;
	u32 size;
	u32 source;		/* where the bytes are read (a crash load's backup copy) */
};

struct core_layout {
	u32 nr_loads;
	struct range load[MAX_RANGES];
	u32 notes;			/* physical address of the merged notes, or 0 */
	u32 notes_size;
};

/* entry.S: return to the first kernel through the jump-back entry */
void __attribute__((noreturn)) back_to_first_kernel(void);

/* console.c */
extern int can_return;
void console_write(const char *text);
void console_hex(u32 value);
void __attribute__((noreturn)) fail(const char *why, u32 value);

/* ata.c: disk 0 (primary master) by PIO, 28-bit LBA */
u32 ata_sectors(void);
void ata_write(u32 lba, const void *src, u32 count);
void ata_flush(void);

/* swapmap.c: where the first kernel's page at an address lies during a kexec jump */
int swapmap_build(u32 jump_back);
u32 swapmap_lookup(u32 page);

/* bootparams.c: the zero page */
const char *boot_command_line(u32 zero_page);
int boot_usable_ram(u32 zero_page, struct core_layout *core);
int parse_elfcorehdr(const char *cmdline, u32 *address);
void elfcorehdr_walk(u32 address, struct core_layout *core);

/* core.c: write the ELF32 core file at LBA 0 */
void core_write(const struct core_layout *core, int snapshot);

/* libc-like helpers (console.c) */
void *memcpy(void *dst, const void *src, u32 n);
void *memset(void *dst, int c, u32 n);

#endif
