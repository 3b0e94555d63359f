/*
 * phy_mode.S - a physical-mode program for kexec jump (kjcore example).
 *
 * Load it with
 *     kjexec --machine M -l --load-preserve-context --args-none \
 *            --mem-min=0x1000000 --mem-max=0x1ffffff phy_mode.elf
 * and call it with "kjexec --machine M -e".
 *
 * The relocation routine calls _start with paging off, flat 4 GiB segments, interrupts
 * off and ESP at the top of the kexec swap page; the only word on that stack is the return
 * address, the jump-back entry into the first kernel. We may use that stack and our own
 * pages (0x1000000 and up, see phy_mode.ld); every other byte belongs to the first kernel.
 *
 * The program writes one line to the debug console (I/O port 0xE9) and returns to the
 * first kernel like a cdecl function: EAX = number of bytes written, ESI preserved.
 */
	.code32
	.section .text.start, "ax", @progbits
	.globl	_start
	.type	_start, @function
_start:
	pushl	%esi
	movl	$message, %esi
	movw	$0xe9, %dx		/* debug console port */
1:	movb	(%esi), %al
	testb	%al, %al
	jz	2f
	outb	%al, %dx
	incl	%esi
	jmp	1b
2:	movl	%esi, %eax
	subl	$message, %eax		/* bytes written */
	popl	%esi
	ret				/* back to the jump-back entry */
	.size	_start, . - _start

	.section .rodata, "a", @progbits
message:
	.asciz	"phy_mode: hello from physical mode\n"

	/* no executable stack: keeps ld quiet, means nothing with paging off */
	.section .note.GNU-stack, "", @progbits
