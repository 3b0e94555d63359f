/*
 * bioscall.S - bios_call(): from 32-bit physical mode to a real-mode INT and back
 * (kjcore example, written for this project; see bioscall.h for the C interface).
 *
 * A kexec jump payload runs with paging off, flat 4 GiB segments (machine_kexec loaded them),
 * interrupts off and a GDT and IDT of limit 0.  To call the BIOS it must become a real-mode
 * program for a moment:
 *
 *   1. save the caller's GDTR, IDTR, segment selectors, ESP, EFLAGS and CR0;
 *   2. build a GDT of its own: flat descriptors in the slots of the caller's selectors (so
 *      they can be reloaded unchanged on the way back) and a 16-bit code and data segment
 *      (64 KiB limits, as real mode expects them cached);
 *   3. far-jump to 16-bit protected mode, load the 16-bit data segment everywhere, clear
 *      CR0.PE and far-jump to real mode (CS = 0);
 *   4. load real-mode segments, a stack of its own and the real-mode IVT (IDTR 0:3FF),
 *      set the registers from *in and execute INT vector;
 *   5. save the registers and flags, set CR0.PE and far-jump (32-bit offset) to the caller's
 *      code selector, reload the caller's data selectors and ESP, then GDTR, IDTR, CR0 and
 *      EFLAGS, and copy the registers to *out.
 *
 * INT takes its vector as an immediate, so the real-mode part calls one of 256 four-byte
 * entries "int $n; ret" (int_table) instead of patching code.  Everything here, and the
 * program linked with it (bios.ld), lies below 64 KiB: real-mode offsets are plain
 * addresses with segment 0.  Assemble with "as --32".
 */

/* GDT slots of the two 16-bit segments; the caller's selectors must use slots 1-29 */
	.set	GDT_ENTRIES, 32
	.set	SEL_CODE16, 30 * 8
	.set	SEL_DATA16, 31 * 8
	.set	MAX_CALLER_SLOT, 29

/* struct biosregs (bioscall.h) */
	.set	R_EAX, 0
	.set	R_EBX, 4
	.set	R_ECX, 8
	.set	R_EDX, 12
	.set	R_ESI, 16
	.set	R_EDI, 20
	.set	R_EBP, 24
	.set	R_EFLAGS, 28
	.set	R_DS, 32
	.set	R_ES, 34
	.set	R_FS, 36
	.set	R_GS, 38
	.set	R_SIZE, 40

/* the arithmetic flags a caller may set for the BIOS (CF PF AF ZF SF OF), and bit 1 */
	.set	STATUS_FLAGS, 0x08d5
	.set	FLAGS_FIXED, 0x0002

/* flat 4 GiB descriptors, high dword without DPL: present, 32-bit, 4 KiB granular, accessed */
	.set	FLAT_CODE_HI, 0x00cf9b00
	.set	FLAT_DATA_HI, 0x00cf9300

	.code32
	.text
	.globl	bios_call
	.type	bios_call, @function
bios_call:
	pushl	%ebp
	pushl	%ebx
	pushl	%esi
	pushl	%edi
	movl	20(%esp), %eax		/* vector */
	cmpl	$255, %eax
	ja	.Lrefuse		/* also every negative vector */
	leal	int_table(,%eax,4), %eax
	movw	%ax, rm_entry

	/* 1. what the caller had */
	sgdtl	saved_gdtr
	sidtl	saved_idtr
	movw	%cs, saved_cs
	movw	%ds, saved_ds
	movw	%es, saved_es
	movw	%fs, saved_fs
	movw	%gs, saved_gs
	movw	%ss, saved_ss
	pushfl
	popl	saved_eflags
	movl	%cr0, %eax
	movl	%eax, saved_cr0

	/* 2. our GDT: clear the caller's slots, then one flat descriptor per selector */
	cld
	movl	$gdt, %edi
	xorl	%eax, %eax
	movl	$2 * (MAX_CALLER_SLOT + 1), %ecx
	rep	stosl
	movl	$FLAT_CODE_HI, %edx
	movw	saved_cs, %ax
	call	flat_slot
	jc	.Lrefuse
	movl	$FLAT_DATA_HI, %edx
	movl	$saved_ds, %esi
	movl	$5, %ebx		/* ds, es, fs, gs, ss */
1:	movw	(%esi), %ax
	call	flat_slot
	jc	.Lrefuse
	addl	$2, %esi
	decl	%ebx
	jnz	1b

	/* the registers for the BIOS, and where the way back lands */
	movl	24(%esp), %esi		/* in */
	movl	$rm_regs, %edi
	movl	$R_SIZE / 4, %ecx
	rep	movsl
	movl	rm_regs + R_EFLAGS, %eax
	andl	$STATUS_FLAGS, %eax
	orl	$FLAGS_FIXED, %eax
	movw	%ax, rm_flags
	movw	saved_cs, %ax
	movw	%ax, pm_back + 4
	movl	%esp, saved_esp

	/* 3. to 16-bit protected mode */
	lgdtl	gdt_pointer
	ljmpl	$SEL_CODE16, $pm16
.Lrefuse:
	movl	$-1, %eax
	jmp	.Lreturn

	/* 5 (end). back in 32-bit protected mode, on the caller's code selector */
pm32:
	movw	%cs:saved_ss, %ss
	movl	%cs:saved_esp, %esp
	movw	%cs:saved_ds, %ds
	movw	saved_es, %es
	movw	saved_fs, %fs
	movw	saved_gs, %gs
	lgdtl	saved_gdtr
	lidtl	saved_idtr
	movl	saved_cr0, %eax
	movl	%eax, %cr0
	pushl	saved_eflags
	popfl
	movl	28(%esp), %edi		/* out */
	testl	%edi, %edi
	jz	1f
	movl	$rm_regs, %esi
	movl	$R_SIZE / 4, %ecx
	rep	movsl
1:	movl	rm_regs + R_EFLAGS, %eax
	andl	$1, %eax		/* CF */
.Lreturn:
	popl	%edi
	popl	%esi
	popl	%ebx
	popl	%ebp
	ret
	.size	bios_call, . - bios_call

/*
 * flat_slot: put a flat descriptor for selector AX into our GDT.  EDX = its high dword
 * without DPL (the selector's RPL becomes the DPL, so the selector loads again at CPL 0).
 * A null selector needs no slot.  CF = 1: the selector cannot be restored (LDT, a slot this
 * GDT lends to the 16-bit segments, or a slot another selector needs as another kind of
 * segment, such as CS and DS with the same index).
 */
	.type	flat_slot, @function
flat_slot:
	movzwl	%ax, %ecx
	shrl	$3, %ecx
	jz	2f			/* null selector (index 0, GDT) */
	testb	$4, %al			/* LDT */
	jnz	1f
	cmpl	$MAX_CALLER_SLOT, %ecx
	ja	1f
	andl	$3, %eax
	shll	$13, %eax
	orl	%edx, %eax
	cmpl	$0, gdt + 4(,%ecx,8)	/* slot still free (cleared by bios_call)? */
	je	3f
	cmpl	%eax, gdt + 4(,%ecx,8)	/* else it must hold the same descriptor */
	jne	1f
3:	movl	$0x0000ffff, gdt(,%ecx,8)
	movl	%eax, gdt + 4(,%ecx,8)
2:	clc
	ret
1:	stc
	ret
	.size	flat_slot, . - flat_slot

/* ------------------------------------------------------------------ 16-bit code */
	.code16
	.section .text16, "ax", @progbits
pm16:
	movw	$SEL_DATA16, %ax	/* 64 KiB limits, 16-bit: real-mode caches */
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %fs
	movw	%ax, %gs
	movw	%ax, %ss
	movl	%cr0, %eax
	andb	$0xfe, %al		/* PE off */
	movl	%eax, %cr0
	ljmp	$0, $real

	/* 4. real mode */
real:
	xorw	%ax, %ax
	movw	%ax, %ss
	movw	$rm_stack_top, %sp
	movw	%ax, %ds
	lidtw	rm_idtr
	movw	rm_regs + R_ES, %es
	movw	rm_regs + R_FS, %fs
	movw	rm_regs + R_GS, %gs
	movl	rm_regs + R_EAX, %eax
	movl	rm_regs + R_EBX, %ebx
	movl	rm_regs + R_ECX, %ecx
	movl	rm_regs + R_EDX, %edx
	movl	rm_regs + R_ESI, %esi
	movl	rm_regs + R_EDI, %edi
	movl	rm_regs + R_EBP, %ebp
	pushw	rm_flags
	pushw	rm_regs + R_DS
	popw	%ds
	popfw
	call	*%ss:rm_entry		/* int $vector; ret */
	pushfl
	popl	%ss:rm_regs + R_EFLAGS
	movl	%eax, %ss:rm_regs + R_EAX
	movl	%ebx, %ss:rm_regs + R_EBX
	movl	%ecx, %ss:rm_regs + R_ECX
	movl	%edx, %ss:rm_regs + R_EDX
	movl	%esi, %ss:rm_regs + R_ESI
	movl	%edi, %ss:rm_regs + R_EDI
	movl	%ebp, %ss:rm_regs + R_EBP
	movw	%ds, %ss:rm_regs + R_DS
	movw	%es, %ss:rm_regs + R_ES
	movw	%fs, %ss:rm_regs + R_FS
	movw	%gs, %ss:rm_regs + R_GS

	/* 5. to protected mode: the BIOS may have touched GDTR (INT 15h AH=87h does) */
	cli
	lgdtl	%ss:gdt_pointer
	movl	%cr0, %eax
	orb	$1, %al			/* PE on */
	movl	%eax, %cr0
	ljmpl	*%ss:pm_back		/* caller's CS : pm32 */

/* int_table[n]: INT n, then back to the call above */
	.balign	4
int_table:
	.set	vector, 0
	.rept	256
	.byte	0xcd, vector		/* int $vector (0xcd even for 3: not int3) */
	ret
	nop
	.set	vector, vector + 1
	.endr

/* ------------------------------------------------------------------ data */
	.data
	.balign	8
gdt:
	.fill	MAX_CALLER_SLOT + 1, 8, 0
	/* SEL_CODE16: base 0, limit 0xffff, present, ring 0, execute/read, 16-bit */
	.long	0x0000ffff, 0x00009b00
	/* SEL_DATA16: base 0, limit 0xffff, present, ring 0, read/write, 16-bit */
	.long	0x0000ffff, 0x00009300
gdt_pointer:
	.word	GDT_ENTRIES * 8 - 1
	.long	gdt
	.balign	2
rm_idtr:
	.word	0x3ff			/* the real-mode IVT: 256 far pointers at 0 */
	.long	0
	.balign	4
pm_back:
	.long	pm32			/* offset */
	.word	0			/* the caller's CS, set by bios_call */

	.bss
	.balign	4
saved_gdtr:	.skip	8
saved_idtr:	.skip	8
saved_esp:	.skip	4
saved_eflags:	.skip	4
saved_cr0:	.skip	4
saved_cs:	.skip	2
saved_ds:	.skip	2		/* ds, es, fs, gs, ss: in this order (bios_call) */
saved_es:	.skip	2
saved_fs:	.skip	2
saved_gs:	.skip	2
saved_ss:	.skip	2
rm_entry:	.skip	2		/* &int_table[vector] */
rm_flags:	.skip	2
	.balign	4
rm_regs:	.skip	R_SIZE
	.balign	16
rm_stack:	.skip	1024		/* the real-mode stack: the BIOS runs on it */
rm_stack_top:

	.section .note.GNU-stack, "", @progbits
