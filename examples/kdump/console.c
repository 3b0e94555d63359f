/*
 * console.c - debug-console output (I/O port 0xE9) and the two memory helpers gcc may call.
 */
#include "capture.h"

#define DEBUGCON_PORT 0xe9

static inline void outb(u16 port, u8 value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

void console_write(const char *text)
{
	while (*text)
		outb(DEBUGCON_PORT, (u8)*text++);
}

void console_hex(u32 value)
{
	static const char digits[] = "0123456789abcdef";
	char text[11];
	int i;

	text[0] = '0';
	text[1] = 'x';
	for (i = 0; i < 8; i++)
		text[2 + i] = digits[(value >> (28 - 4 * i)) & 15];
	text[10] = '\0';
	console_write(text);
}

/* Set once a kexec jump is known to have called us: there is a first kernel to go back to. */
int can_return;

/* Say why; go back to the first kernel if there is one (no snapshot), else stop the CPU. */
void fail(const char *why, u32 value)
{
	console_write("capture: ");
	console_write(why);
	console_write(" ");
	console_hex(value);
	console_write("\n");
	if (can_return)
		back_to_first_kernel();
	for (;;)
		__asm__ volatile("cli; hlt");
}

void *memcpy(void *dst, const void *src, u32 n)
{
	void *ret = dst;

	__asm__ volatile("cld; rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
	return ret;
}

void *memset(void *dst, int c, u32 n)
{
	void *ret = dst;

	__asm__ volatile("cld; rep stosb" : "+D"(dst), "+c"(n) : "a"(c) : "memory");
	return ret;
}
