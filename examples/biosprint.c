/*
 * biosprint.c - text output for the BIOS-calling examples (kjcore example); see biosprint.h.
 */
#include "bioscall.h"
#include "biosprint.h"

#define DEBUGCON_PORT 0xe9

static inline void outb(unsigned short port, unsigned char value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

void con_write(const char *s)
{
	while (*s)
		outb(DEBUGCON_PORT, (unsigned char)*s++);
}

/* One string on video page 0 at the cursor, attribute light grey; 0 or the failing call's -1/1. */
int screen_write(const char *s)
{
	struct biosregs r = { 0 };
	unsigned int n = 0;
	int status;

	while (s[n])
		n++;
	r.eax = 0x0300;				/* AH=03h: where is the cursor (DH row, DL column) */
	status = bios_call(0x10, &r, &r);
	if (status)
		return status;
	r.eax = 0x1301;				/* AH=13h write string, AL bit 0: move the cursor */
	r.ebx = 0x0007;				/* BH page 0, BL attribute */
	r.ecx = n;
	r.es = bios_seg(s);
	r.ebp = bios_off(s);			/* DX: the cursor AH=03h returned */
	return bios_call(0x10, &r, &r);
}

char *put_str(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	*p = '\0';
	return p;
}

char *put_hex(char *p, unsigned long long value, int digits)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = digits - 1; i >= 0; i--)
		*p++ = hex[(value >> (4 * i)) & 0xf];
	*p = '\0';
	return p;
}

char *put_dec(char *p, unsigned int value)
{
	char digits[10];
	int n = 0;

	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n)
		*p++ = digits[--n];
	*p = '\0';
	return p;
}
