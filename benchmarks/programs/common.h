/* Shared by the benchmark programs: fixed-width types and a data generator. */
typedef unsigned char u8;
typedef unsigned int u32;

/* Fill buf with n pseudo-random bytes (a 32-bit LCG): the programs need no input. */
static inline void fill(u8 *buf, u32 n, u32 seed)
{
	for (u32 i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		buf[i] = (u8)(seed >> 24);
	}
}
