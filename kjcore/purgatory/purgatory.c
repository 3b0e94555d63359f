/*
 * purgatory.c - what runs between the relocation routine and the loaded image (kjcore).
 *
 * Entered from entry.S with paging off and flat segments. Verifies every segment the loader
 * listed against the SHA-256 digest it stored, and stops with a message on the debug
 * console if one differs (the image would run on corrupted memory otherwise). Then copies
 * the backup region: after verifying, because the backup destination is itself a loaded
 * segment whose (zero) contents the loader hashed.
 */
#include "purgatory.h"

#define DEBUGCON_PORT 0xe9

/* In .data, not .bss: the loader writes it into the image it loads. */
struct purgatory_params purgatory_params __attribute__((section(".data.params"))) = { 0 };

static inline void outb(unsigned short port, u8 value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

void console_write(const char *text)
{
	while (*text)
		outb(DEBUGCON_PORT, (u8)*text++);
}

void console_hex(u32 value)
{
	static const char hex[] = "0123456789abcdef";
	char text[11];
	int i;

	text[0] = '0';
	text[1] = 'x';
	for (i = 0; i < 8; i++)
		text[2 + i] = hex[(value >> (28 - 4 * i)) & 15];
	text[10] = '\0';
	console_write(text);
}

static void __attribute__((noreturn)) stop(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

static int same_digest(const u8 *a, const u8 *b)
{
	u8 diff = 0;
	int i;

	for (i = 0; i < SHA256_DIGEST_SIZE; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

static void verify_regions(void)
{
	struct purgatory_params *p = &purgatory_params;
	u8 digest[SHA256_DIGEST_SIZE];
	u32 i, n = p->nr_regions;

	if (n > PURGATORY_MAX_SEGMENTS) {
		console_write("purgatory: bad parameter block\n");
		stop();
	}
	for (i = 0; i < n; i++) {
		const struct purgatory_region *r = &p->region[i];

		sha256_digest((const u8 *)r->mem, r->len, digest);
		if (!same_digest(digest, r->digest)) {
			console_write("purgatory: SHA-256 mismatch in segment ");
			console_hex(i);
			console_write(" at ");
			console_hex(r->mem);
			console_write(", ");
			console_hex(r->len);
			console_write(" bytes\n");
			stop();
		}
	}
}

static void copy_backup(void)
{
	struct purgatory_params *p = &purgatory_params;
	u32 src = p->backup_src, dst = p->backup_dst, n = p->backup_size;

	__asm__ volatile("cld; rep movsb" : "+S"(src), "+D"(dst), "+c"(n) : : "memory");
}

void purgatory_main(void)
{
	verify_regions();
	copy_backup();
}
