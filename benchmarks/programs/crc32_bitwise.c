/* CRC-32 (IEEE, reflected) one bit at a time over a 4 KiB buffer, count times. */
#include "common.h"

static u8 data[4096];

u32 main(u32 count)
{
	u32 crc = 0xFFFFFFFFu;

	fill(data, sizeof(data), 1);
	while (count--) {
		for (u32 i = 0; i < sizeof(data); i++) {
			crc ^= data[i];
			for (int b = 0; b < 8; b++)
				crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
		}
	}
	return ~crc;
}
