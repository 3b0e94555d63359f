/*
 * bios_roundtrip.c - time BIOS call round trips from a kexec jump payload (kjcore example).
 *
 * Calls INT 12h (conventional memory size: the cheapest BIOS service) CALLS times through
 * bios_call, reading the time-stamp counter before and after, and prints the TSC ticks per
 * round trip (PM -> real mode -> INT 12h -> PM) to the debug console.  On kjcore the TSC
 * counts executed instructions, so the figure is guest instructions per round trip.  Returns
 * to the first kernel with EAX = the number of calls that did not report 639 KiB.
 * Used by benchmarks/bench_bioscall.py.
 */
#include "bioscall.h"
#include "biosprint.h"

#define CALLS 1000

static char line[96];

static inline unsigned long long rdtsc(void)
{
	unsigned long long t;

	__asm__ volatile("rdtsc" : "=A"(t));
	return t;
}

__attribute__((section(".text.start"), used))
unsigned int _start(void)
{
	struct biosregs r;
	unsigned int i, wrong = 0, ticks;
	unsigned long long t0;
	char *p;

	t0 = rdtsc();
	for (i = 0; i < CALLS; i++) {
		r = (struct biosregs){ 0 };
		if (bios_call(0x12, &r, &r) || (r.eax & 0xffff) != 639)
			wrong++;
	}
	ticks = (unsigned int)(rdtsc() - t0);
	p = put_str(line, "bios_roundtrip: ");
	p = put_dec(p, CALLS);
	p = put_str(p, " calls of INT 12h, ");
	p = put_dec(p, wrong);
	p = put_str(p, " wrong, ");
	p = put_dec(p, ticks / CALLS);
	put_str(p, " TSC ticks per call\n");
	con_write(line);
	return wrong;
}
