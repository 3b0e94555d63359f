/*
 * sha256.c - SHA-256 (FIPS 180-4) over one contiguous range of physical memory.
 *
 * Purgatory hashes each segment in place: whole 64-byte blocks straight from memory,
 * then the tail with its padding in a buffer on the stack. Lengths are 32-bit (a segment
 * never exceeds 4 GiB), so the message length in bits is formed from two 32-bit halves and
 * no 64-bit arithmetic (libgcc) is needed.
 */
#include "purgatory.h"

static const u32 round_constants[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const u32 initial_state[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static inline u32 rotr(u32 x, int n)
{
	return (x >> n) | (x << (32 - n));
}

static inline u32 load_be32(const u8 *p)
{
	return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3];
}

static inline void store_be32(u8 *p, u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

#define BIG_SIGMA0(x) (rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22))
#define BIG_SIGMA1(x) (rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25))
#define SMALL_SIGMA0(x) (rotr(x, 7) ^ rotr(x, 18) ^ ((x) >> 3))
#define SMALL_SIGMA1(x) (rotr(x, 17) ^ rotr(x, 19) ^ ((x) >> 10))
#define CHOOSE(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJORITY(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))

/*
 * One round. Instead of moving eight working variables down one place per round, eight
 * rounds are written out with the names rotated, so each round updates only d and h.
 */
#define ROUND(a, b, c, d, e, f, g, h, i) do {					\
		u32 t1 = h + BIG_SIGMA1(e) + CHOOSE(e, f, g) + round_constants[i] + w[i]; \
		d += t1;							\
		h = t1 + BIG_SIGMA0(a) + MAJORITY(a, b, c);			\
	} while (0)

/* One compression of a 64-byte block into the chaining state. */
static void compress(u32 state[8], const u8 *block)
{
	u32 w[64];
	u32 a, b, c, d, e, f, g, h;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = load_be32(block + 4 * i);
	for (i = 16; i < 64; i++)
		w[i] = w[i - 16] + SMALL_SIGMA0(w[i - 15]) + w[i - 7] + SMALL_SIGMA1(w[i - 2]);
	a = state[0]; b = state[1]; c = state[2]; d = state[3];
	e = state[4]; f = state[5]; g = state[6]; h = state[7];
	for (i = 0; i < 64; i += 8) {
		ROUND(a, b, c, d, e, f, g, h, i);
		ROUND(h, a, b, c, d, e, f, g, i + 1);
		ROUND(g, h, a, b, c, d, e, f, i + 2);
		ROUND(f, g, h, a, b, c, d, e, i + 3);
		ROUND(e, f, g, h, a, b, c, d, i + 4);
		ROUND(d, e, f, g, h, a, b, c, i + 5);
		ROUND(c, d, e, f, g, h, a, b, i + 6);
		ROUND(b, c, d, e, f, g, h, a, i + 7);
	}
	state[0] += a; state[1] += b; state[2] += c; state[3] += d;
	state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

void sha256_digest(const u8 *data, u32 len, u8 out[SHA256_DIGEST_SIZE])
{
	u32 state[8];
	u8 tail[128];
	u32 rest = len & 63, padded, i;

	for (i = 0; i < 8; i++)
		state[i] = initial_state[i];
	for (i = 0; i < len - rest; i += 64)
		compress(state, data + i);

	/* The tail, the 0x80 marker, zeros, and the length in bits as a 64-bit big-endian word. */
	padded = rest < 56 ? 64 : 128;
	for (i = 0; i < padded; i++)
		tail[i] = i < rest ? data[len - rest + i] : 0;
	tail[rest] = 0x80;
	store_be32(tail + padded - 8, len >> 29);
	store_be32(tail + padded - 4, len << 3);
	compress(state, tail);
	if (padded == 128)
		compress(state, tail + 64);

	for (i = 0; i < 8; i++)
		store_be32(out + 4 * i, state[i]);
}
