/* Call/return-heavy recursion: a naive Fibonacci, count times. */
#include "common.h"

__attribute__((noinline)) static u32 fib(u32 n)
{
	return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

u32 main(u32 count)
{
	u32 sum = 0;

	while (count--)
		sum += fib(18 + (count & 1));
	return sum;
}
