/* Insertion sort of 512 pseudo-random words, count times (refilled each time). */
#include "common.h"

static u32 a[512];

u32 main(u32 count)
{
	u32 seed = 4, sum = 0;

	while (count--) {
		for (u32 i = 0; i < 512; i++) {
			seed = seed * 1664525u + 1013904223u;
			a[i] = seed;
		}
		for (u32 i = 1; i < 512; i++) {
			u32 v = a[i];
			int j = (int)i - 1;
			while (j >= 0 && a[j] > v) {
				a[j + 1] = a[j];
				j--;
			}
			a[j + 1] = v;
		}
		sum += a[0] ^ a[511] ^ a[256];
	}
	return sum;
}
