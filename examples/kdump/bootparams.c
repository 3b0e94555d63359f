/*
 * bootparams.c - what the capture program reads from the Linux/x86 zero page (boot_params)
 * and from the ELF core header kexec-tools built for a crash load.
 *
 * boot_params offsets (Documentation/x86/zero-page.txt): e820_entries (u8) at 0x1E8,
 * hdr.cmd_line_ptr (u32) at 0x228, e820_map (128 entries of u64 addr, u64 size, u32 type)
 * at 0x2D0. Every value is checked before use: a count larger than the table, a command
 * line without its terminating NUL within 2048 bytes, an ELF header that is not an i386
 * ELF32 core stop the program with a message.
 */
#include "capture.h"

#define BP_E820_ENTRIES		0x1e8
#define BP_CMD_LINE_PTR		0x228
#define BP_E820_MAP		0x2d0
#define E820_MAX		128
#define E820_RAM		1
#define COMMAND_LINE_SIZE	2048

#define KERNEL_PAGE_OFFSET	0xc0000000u
#define LOWMEM_LIMIT		0x38000000u	/* 896 MiB: what the kernel maps at PAGE_OFFSET */
#define MAX_RAM_END		0xfffff000u	/* RAM a 32-bit range can describe */

#define PT_LOAD 1
#define PT_NOTE 4

struct elf32_ehdr {
	u8 e_ident[16];
	u16 e_type, e_machine;
	u32 e_version, e_entry, e_phoff, e_shoff, e_flags;
	u16 e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx;
};

struct elf32_phdr {
	u32 p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align;
};

struct elf32_nhdr {
	u32 n_namesz, n_descsz, n_type;
};

/* The notes of every CPU, merged into one PT_NOTE as /proc/vmcore does. */
static u8 notes_buf[4096];

const char *boot_command_line(u32 zero_page)
{
	const char *cmdline = (const char *)*(const u32 *)(zero_page + BP_CMD_LINE_PTR);
	u32 i;

	if (!cmdline)
		return "";
	for (i = 0; i < COMMAND_LINE_SIZE; i++)
		if (cmdline[i] == '\0')
			return cmdline;
	fail("command line without its NUL in 2048 bytes at", (u32)cmdline);
}

static void add_load(struct core_layout *core, u32 source, u32 paddr, u32 vaddr, u32 size)
{
	if (core->nr_loads == MAX_RANGES)
		fail("too many memory ranges, limit", MAX_RANGES);
	core->load[core->nr_loads].paddr = paddr;
	core->load[core->nr_loads].vaddr = vaddr;
	core->load[core->nr_loads].size = size;
	core->load[core->nr_loads].source = source;
	core->nr_loads++;
}

/* A RAM range as PT_LOADs: the part the kernel maps at PAGE_OFFSET, then the rest. */
static void add_ram(struct core_layout *core, u32 start, u32 end)
{
	if (start < LOWMEM_LIMIT) {
		u32 low_end = end < LOWMEM_LIMIT ? end : LOWMEM_LIMIT;

		add_load(core, start, start, KERNEL_PAGE_OFFSET + start, low_end - start);
		start = low_end;
	}
	if (start < end)
		add_load(core, start, start, start, end - start);
}

int boot_usable_ram(u32 zero_page, struct core_layout *core)
{
	u32 n = *(const u8 *)(zero_page + BP_E820_ENTRIES), i;

	if (n > E820_MAX)
		fail("e820_entries larger than the table:", n);
	core->nr_loads = 0;
	core->notes = core->notes_size = 0;
	for (i = 0; i < n; i++) {
		const u8 *e = (const u8 *)(zero_page + BP_E820_MAP + 20 * i);
		u64 addr = *(const u64 *)e, size = *(const u64 *)(e + 8);
		u64 start = (addr + PAGE_SIZE - 1) & ~(u64)(PAGE_SIZE - 1);	/* whole pages */
		u64 end = (addr + size) & ~(u64)(PAGE_SIZE - 1);

		if (*(const u32 *)(e + 16) != E820_RAM || addr + size < addr)
			continue;
		if (end > MAX_RAM_END)
			end = MAX_RAM_END;
		if (start < end)
			add_ram(core, (u32)start, (u32)end);
	}
	return core->nr_loads;
}

static u32 memparse(const char *s, const char **end)
{
	u32 base = 10, value = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (;; s++) {
		u32 digit;

		if (*s >= '0' && *s <= '9')
			digit = *s - '0';
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			digit = *s - 'a' + 10;
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			digit = *s - 'A' + 10;
		else
			break;
		value = value * base + digit;
	}
	switch (*s) {
	case 'G': case 'g':
		value <<= 10;
		/* fall through */
	case 'M': case 'm':
		value <<= 10;
		/* fall through */
	case 'K': case 'k':
		value <<= 10;
		s++;
	}
	*end = s;
	return value;
}

/* elfcorehdr=[size@]address, the form Linux accepts (kexec-tools writes "elfcorehdr=NK"). */
int parse_elfcorehdr(const char *cmdline, u32 *address)
{
	static const char key[] = "elfcorehdr=";
	const char *p = cmdline, *end;
	int found = 0;

	while (*p) {
		u32 i = 0;

		while (key[i] && p[i] == key[i])
			i++;
		if (!key[i] && (p == cmdline || p[-1] == ' ')) {
			*address = memparse(p + i, &end);
			if (*end == '@')
				*address = memparse(end + 1, &end);
			if (*end != ' ' && *end != '\0')
				fail("bad elfcorehdr= value at", (u32)(p + i));
			found = 1;
		}
		p++;
	}
	return found;
}

static u32 merge_notes(u32 at, const struct elf32_phdr *ph)
{
	u32 used = 0;

	while (used + sizeof(struct elf32_nhdr) <= ph->p_memsz) {
		const struct elf32_nhdr *n = (const struct elf32_nhdr *)(ph->p_offset + used);
		u32 size;

		if (n->n_namesz == 0 || n->n_namesz > 4096 || n->n_descsz > 4096)
			break;
		size = sizeof(*n) + ((n->n_namesz + 3) & ~3u) + ((n->n_descsz + 3) & ~3u);
		if (used + size > ph->p_memsz)
			break;
		used += size;
	}
	if (at + used > sizeof(notes_buf))
		fail("crash notes too large, bytes", at + used);
	memcpy(notes_buf + at, (const void *)ph->p_offset, used);
	return at + used;
}

void elfcorehdr_walk(u32 address, struct core_layout *core)
{
	const struct elf32_ehdr *eh = (const struct elf32_ehdr *)address;
	u32 i;

	if (eh->e_ident[0] != 0x7f || eh->e_ident[1] != 'E' || eh->e_ident[2] != 'L'
	    || eh->e_ident[3] != 'F' || eh->e_ident[4] != 1 || eh->e_ident[5] != 1
	    || eh->e_type != 4 || eh->e_machine != 3
	    || eh->e_phentsize != sizeof(struct elf32_phdr))
		fail("elfcorehdr is not an i386 ELF32 core header at", address);
	if (eh->e_phnum > MAX_RANGES || eh->e_phoff > PAGE_SIZE)
		fail("elfcorehdr has too many program headers:", eh->e_phnum);
	core->nr_loads = 0;
	core->notes_size = 0;
	for (i = 0; i < eh->e_phnum; i++) {
		const struct elf32_phdr *ph = (const struct elf32_phdr *)
			(address + eh->e_phoff + i * sizeof(*ph));

		if (ph->p_offset + ph->p_memsz < ph->p_offset)
			fail("elfcorehdr segment wraps past 4 GiB at", ph->p_offset);
		if (ph->p_type == PT_NOTE)
			core->notes_size = merge_notes(core->notes_size, ph);
		else if (ph->p_type == PT_LOAD && ph->p_memsz)
			add_load(core, ph->p_offset, ph->p_paddr, ph->p_vaddr, ph->p_memsz);
	}
	core->notes = core->notes_size ? (u32)notes_buf : 0;
}
