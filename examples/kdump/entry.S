/*
 * entry.S - the capture program's entry and its jump-back protocol (kjcore example).
 *
 * First entry: from purgatory, ESI = zero page, [ESP] = the jump-back entry of a
 * preserve-context jump (for a crash load, whatever word lies there). The program runs on
 * its own stack. To go back it pops the jump-back entry and calls it, so the relocation
 * routine records the next instruction as the image's new start: the next exec continues
 * there with a new jump-back entry at [ESP], and the program takes another snapshot.
 */
	.code32
	.section .text.start, "ax"
	.globl	_start
_start:
	cli
	cld
	movl	%esi, zero_page
entered:
	movl	%esp, entry_esp
	movl	(%esp), %eax
	movl	%eax, jump_back

	movl	$stack_top, %esp
	pushl	jump_back
	pushl	zero_page
	call	capture_main
	testl	%eax, %eax
	jnz	halt

/* Also where fail() goes in a snapshot: a failed snapshot still returns the machine. */
	.globl	back_to_first_kernel
back_to_first_kernel:
	movl	entry_esp, %esp
	popl	%eax			/* the jump-back entry */
	call	*%eax			/* back to the first kernel ... */
	cli				/* ... and re-entered by the next exec */
	cld
	jmp	entered

halt:
	cli
	hlt
	jmp	halt

	.section .bss
	.balign	4
zero_page:	.long 0
entry_esp:	.long 0
jump_back:	.long 0
	.balign	16
stack:	.skip	16384
stack_top:
