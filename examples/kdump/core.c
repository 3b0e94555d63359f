/*
 * core.c - the ELF32 core file, written from LBA 0 of disk 0.
 *
 * Layout: the ELF header, the program headers (one PT_NOTE if there are notes, then the
 * PT_LOADs) and the notes, padded to a page; then each PT_LOAD's bytes, each starting on a
 * page boundary of the file. The file is streamed through a one-page buffer; whole sectors
 * of memory go to the disk straight from where they are.
 */
#include "capture.h"

#define HEADER_SIZE (2 * PAGE_SIZE)

struct elf32_ehdr {
	u8 e_ident[16];
	u16 e_type, e_machine;
	u32 e_version, e_entry, e_phoff, e_shoff, e_flags;
	u16 e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx;
};

struct elf32_phdr {
	u32 p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align;
};

static u8 header[HEADER_SIZE];

static struct {
	u32 lba;		/* next sector of the disk */
	u32 fill;		/* bytes waiting in buf */
	u8 buf[PAGE_SIZE];
} out;

static u32 stream_position(void)
{
	return out.lba * SECTOR_SIZE + out.fill;
}

static void stream_bytes(const u8 *src, u32 n)
{
	while (n) {
		u32 k;

		if (out.fill == 0 && n >= SECTOR_SIZE) {
			k = n & ~(SECTOR_SIZE - 1);
			ata_write(out.lba, src, k / SECTOR_SIZE);
			out.lba += k / SECTOR_SIZE;
		} else {
			k = n < PAGE_SIZE - out.fill ? n : PAGE_SIZE - out.fill;
			memcpy(out.buf + out.fill, src, k);
			out.fill += k;
			if (out.fill == PAGE_SIZE) {
				ata_write(out.lba, out.buf, PAGE_SIZE / SECTOR_SIZE);
				out.lba += PAGE_SIZE / SECTOR_SIZE;
				out.fill = 0;
			}
		}
		src += k;
		n -= k;
	}
}

/* Zeros up to the next page boundary of the file. */
static void stream_pad(void)
{
	u32 n = (PAGE_SIZE - stream_position() % PAGE_SIZE) % PAGE_SIZE;

	memset(out.buf + out.fill, 0, n);
	out.fill += n;
	if (out.fill == PAGE_SIZE) {
		ata_write(out.lba, out.buf, PAGE_SIZE / SECTOR_SIZE);
		out.lba += PAGE_SIZE / SECTOR_SIZE;
		out.fill = 0;
	}
}

/* A range of memory, page by page from where its bytes are (the swap map for a snapshot). */
static void stream_memory(u32 addr, u32 size, int snapshot)
{
	while (size) {
		u32 k = PAGE_SIZE - (addr & ~PAGE_MASK);
		u32 from = snapshot ? swapmap_lookup(addr & PAGE_MASK) | (addr & ~PAGE_MASK) : addr;

		if (k > size)
			k = size;
		stream_bytes((const u8 *)from, k);
		addr += k;
		size -= k;
	}
}

static u32 page_up(u32 n)
{
	return (n + PAGE_SIZE - 1) & PAGE_MASK;
}

void core_write(const struct core_layout *core, int snapshot)
{
	struct elf32_ehdr *eh = (struct elf32_ehdr *)header;
	struct elf32_phdr *ph = (struct elf32_phdr *)(header + sizeof(*eh));
	u32 nr_notes = core->notes_size ? 1 : 0, phnum = nr_notes + core->nr_loads;
	u32 notes_at = sizeof(*eh) + phnum * sizeof(*ph), offset, total, i;

	if (notes_at + core->notes_size > HEADER_SIZE)
		fail("core header too large, bytes", notes_at + core->notes_size);
	memset(header, 0, sizeof(header));
	memcpy(eh->e_ident, "\177ELF\1\1\1", 7);	/* ELF32, little-endian, version 1 */
	eh->e_type = 4;					/* ET_CORE */
	eh->e_machine = 3;				/* EM_386 */
	eh->e_version = 1;
	eh->e_phoff = sizeof(*eh);
	eh->e_ehsize = sizeof(*eh);
	eh->e_phentsize = sizeof(*ph);
	eh->e_phnum = phnum;
	if (nr_notes) {
		ph->p_type = 4;				/* PT_NOTE */
		ph->p_offset = notes_at;
		ph->p_filesz = ph->p_memsz = core->notes_size;
		memcpy(header + notes_at, (const void *)core->notes, core->notes_size);
		ph++;
	}
	offset = page_up(notes_at + core->notes_size);
	for (i = 0; i < core->nr_loads; i++, ph++) {
		const struct range *r = &core->load[i];

		ph->p_type = 1;				/* PT_LOAD */
		ph->p_offset = offset;
		ph->p_vaddr = r->vaddr;
		ph->p_paddr = r->paddr;
		ph->p_filesz = ph->p_memsz = r->size;
		ph->p_flags = 7;			/* RWX */
		if (offset + page_up(r->size) < offset)
			fail("core file larger than 4 GiB at range", i);
		offset += page_up(r->size);
	}
	total = offset;
	if (total / SECTOR_SIZE > ata_sectors())
		fail("core file does not fit disk 0, bytes", total);

	console_write("capture: writing ");
	console_hex(total);
	console_write(snapshot ? " bytes (snapshot) to disk 0\n" : " bytes (kdump) to disk 0\n");
	out.lba = out.fill = 0;
	stream_bytes(header, page_up(notes_at + core->notes_size));
	for (i = 0; i < core->nr_loads; i++) {
		stream_memory(core->load[i].source, core->load[i].size, snapshot);
		stream_pad();
	}
	ata_flush();
	console_write("capture: done\n");
}
