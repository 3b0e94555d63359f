/*
 * entry.S - purgatory's entry point (kjcore).
 *
 * The relocation routine jumps or calls here with paging off, interrupts off and flat
 * segments whose descriptor caches outlive a GDT of limit 0. The stack is whatever it was:
 * the top of the control page for a plain kexec, the swap page with the jump-back entry at
 * [ESP] for a preserve-context image. Purgatory borrows the stack below ESP and gives it
 * back unchanged, so the image finds that return address where the routine left it.
 *
 * Then the Linux/x86 32-bit boot protocol: a GDT with flat 4 GiB code at selector 0x10
 * (__BOOT_CS) and data at 0x18 (__BOOT_DS) loaded into CS, DS, ES, SS (FS, GS too),
 * interrupts off, ESI = the zero page, EBP = EDI = EBX = 0; EAX, ECX, EDX are zeroed as well.
 *
 * Linked at 0: the loader adds the load address to every absolute word (R_386_32).
 */
	.code32
	.section .text.entry, "ax"
	.globl	purgatory_start
purgatory_start:
	cli
	cld
	call	purgatory_main		/* returns only if every digest matched */

	lgdt	boot_gdt_descriptor
	ljmp	$0x10, $1f
1:	movl	$0x18, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs

	xorl	%eax, %eax
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	movl	purgatory_params + 4, %esi	/* zero_page */
	jmp	*purgatory_params		/* entry */

	.section .rodata.gdt, "a"
	.balign	8
boot_gdt:
	.quad	0				/* null */
	.quad	0				/* unused (0x08) */
	/* Accessed bits preset: loading a selector then writes nothing to the GDT, so
	 * purgatory's page holds exactly what the loader put there. */
	.quad	0x00cf9b000000ffff		/* 0x10: code, base 0, limit 4 GiB, 32-bit */
	.quad	0x00cf93000000ffff		/* 0x18: data, base 0, limit 4 GiB */
boot_gdt_end:
	.balign	4
	.word	0				/* so the limit+base pair below is aligned */
boot_gdt_descriptor:
	.word	boot_gdt_end - boot_gdt - 1
	.long	boot_gdt
