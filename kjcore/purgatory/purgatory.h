/*
 * purgatory.h - the parameter block the loader fills in (kjcore purgatory).
 *
 * The Python side (kjcore/purgatory/params.py) packs exactly this layout, little-endian,
 * at the address of the symbol purgatory_params, and checks the symbol's size against it.
 */
#ifndef KJCORE_PURGATORY_H
#define KJCORE_PURGATORY_H

typedef unsigned char u8;
typedef unsigned int u32;

/* kexec accepts 16 segments (KEXEC_SEGMENT_MAX); purgatory is one of them. */
#define PURGATORY_MAX_SEGMENTS 15
#define SHA256_DIGEST_SIZE 32

struct purgatory_region {
	u32 mem;			/* physical address of the segment */
	u32 len;			/* bytes hashed from mem on */
	u8 digest[SHA256_DIGEST_SIZE];	/* what the loader computed */
};

struct purgatory_params {
	u32 entry;			/* where the image starts (jumped to, never called) */
	u32 zero_page;			/* ESI at the image's entry: boot_params */
	u32 backup_src;			/* copy backup_size bytes from src to dst */
	u32 backup_dst;			/*   after verifying (0 bytes: no backup) */
	u32 backup_size;
	u32 nr_regions;
	struct purgatory_region region[PURGATORY_MAX_SEGMENTS];
};

extern struct purgatory_params purgatory_params;

void sha256_digest(const u8 *data, u32 len, u8 out[SHA256_DIGEST_SIZE]);
void console_write(const char *text);
void console_hex(u32 value);

#endif
