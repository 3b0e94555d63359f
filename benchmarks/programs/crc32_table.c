/* CRC-32 (IEEE, reflected) through a 256-entry table over a 4 KiB buffer, count times. */
#include "common.h"

static u8 data[4096];
static u32 table[256];

u32 main(u32 count)
{
	u32 crc = 0xFFFFFFFFu;

	fill(data, sizeof(data), 2);
	for (u32 n = 0; n < 256; n++) {
		u32 c = n;
		for (int b = 0; b < 8; b++)
			c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
		table[n] = c;
	}
	while (count--)
		for (u32 i = 0; i < sizeof(data); i++)
			crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
	return ~crc;
}
