/* Copy 64 KiB word by word between two buffers 1 MiB apart (program.ld), count times,
   and checksum the copy: loads and stores through the TLB at a 1 MiB stride. */
#include "common.h"

extern u32 copy_src[], copy_dst[];

static void copy(u32 *dst, const u32 *src, u32 words)
{
	for (u32 i = 0; i < words; i++)
		dst[i] = src[i];
}

u32 main(u32 count)
{
	u32 sum = 0;

	fill((u8 *)copy_src, 65536, 5);
	while (count--) {
		copy(copy_dst, copy_src, 16384);
		copy_src[count & 16383] += count;
	}
	for (u32 i = 0; i < 16384; i++)
		sum = (sum << 1 | sum >> 31) ^ copy_dst[i];
	return sum;
}
