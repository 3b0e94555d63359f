/*
 * pingpong.S - a kexec jump peer that ping-pongs with the first kernel (kjcore example).
 *
 * Load it as a preserve-context image and execute it again and again:
 *     kjexec --machine M -l --load-preserve-context --args-none \
 *            --mem-min=0x100000 --mem-max=0x1fffff pingpong.elf
 *     kjexec --machine M -e        (prints "pingpong 1"; again: "pingpong 2", ...)
 *
 * The peer protocol (SPEC 7.8-7.9): the relocation routine enters us with paging off, flat
 * segments, interrupts off and ESP at the top of the swap page, where the only word is the
 * return address into the routine: its jump-back entry.  Instead of returning with RET we
 * CALL that address.  The routine then reads the word at ESP -- our own return address --
 * and the first kernel makes it the image's new start, so the next exec resumes right after
 * the CALL, with every byte of our pages as we left them.  A plain RET would make the first
 * kernel read its re-entry point from the page after the swap page instead.
 *
 * State lives in our own pages (.data below); the swap page is only used as a stack.
 * Registers need not be preserved: the routine saves what the first kernel needs.
 */
	.code32
	.equ	DEBUGCON, 0xe9

	.text
	.globl	_start
	.type	_start, @function
_start:
	movl	(%esp), %eax		/* first entry: remember the jump-back entry */
	movl	%eax, jump_back
next_round:
	incl	counter
	movl	$prefix, %esi
	call	puts
	movl	counter, %eax
	call	put_decimal
	movb	$'\n', %al
	outb	%al, $DEBUGCON
	call	*jump_back		/* back to the first kernel; the next exec returns here */
	jmp	next_round
	.size	_start, . - _start

/* puts: write the NUL-terminated string at ESI to the debug console. */
puts:
	lodsb
	testb	%al, %al
	jz	1f
	outb	%al, $DEBUGCON
	jmp	puts
1:	ret

/* put_decimal: write EAX in decimal (the digits are produced backwards onto the stack). */
put_decimal:
	movl	$10, %ecx
	xorl	%ebx, %ebx		/* number of digits pushed */
1:	xorl	%edx, %edx
	divl	%ecx
	addb	$'0', %dl
	pushl	%edx
	incl	%ebx
	testl	%eax, %eax
	jnz	1b
2:	popl	%eax
	outb	%al, $DEBUGCON
	decl	%ebx
	jnz	2b
	ret

	.section .rodata, "a", @progbits
prefix:
	.asciz	"pingpong "

	.data
	.balign	4
	.globl	jump_back, counter
jump_back:				/* the routine's jump-back entry, found at first entry */
	.long	0
counter:				/* rounds played so far */
	.long	0

	/* no executable stack: keeps ld quiet, means nothing with paging off */
	.section .note.GNU-stack, "", @progbits
