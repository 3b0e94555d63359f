/*
 * kjcore relocation routine for kexec jump on i386 (SPEC sections 6 and 7).
 *
 * Written for kjcore; assemble with
 *     as --32 -o relocate_kernel.o relocate_kernel.S
 *     objcopy -O binary -j .text relocate_kernel.o relocate_kernel.bin
 * tests/test_relocate.py re-assembles this file and compares the result with the committed
 * relocate_kernel.bin.  kjcore/relocate.py copies the binary into the first half of the control
 * page at every exec and calls it from the simulated first kernel:
 *
 *     unsigned long relocate_kernel(head, page_list_va, start, has_pae, preserve_context)
 *
 * The code is position independent: it runs at three addresses (the control page's kernel
 * virtual address, its identity mapping, and with paging off at its physical address) and
 * never refers to an absolute address of its own.  The table format of the kexec page tables
 * (2-level or PAE) is chosen at run time from CR4.PAE at entry, so one binary serves both kinds
 * of first kernel.
 *
 * Two entry points:
 *   relocate_kernel (offset 0)   the 2.6.27 behaviour: on the way back paging is turned on
 *                                before CR4 is restored (a PAE kernel cannot come back), and
 *                                the peer's DF is used as it comes back (no CLD).
 *   relocate_kernel_flags        kjcore's corrections, chosen by the bits in EAX (DATA_FLAGS):
 *                                FLAG_FIX_PAE, Machine(fix_pae_return=True): the saved CR4 is
 *                                restored just before CR0.PG is set again; FLAG_FIX_DF,
 *                                Machine(fix_peer_df=True): DF is cleared before the swap back
 *                                (SPEC 7.10).  The bits are kept in the data area across the
 *                                call to the peer.
 *
 * Registers on the way back are the 2.6.27 routine's: swap_pages leaves ECX = the word that
 * ended the walk (IND_DONE) and EDX = the swap page, and nothing after the swap back touches
 * them, so the first kernel gets them from the call.
 *
 * The binary ends with a symbol table (magic "KJRK", then the offsets of the labels
 * relocate.py needs) so that the Python side never hard-codes an offset of the code.
 */

	.code32

/* Control register bits (Intel SDM vol. 3, 2.5). */
	.equ	CR0_PE,		0x00000001
	.equ	CR0_EM,		0x00000004
	.equ	CR0_TS,		0x00000008
	.equ	CR0_WP,		0x00010000
	.equ	CR0_AM,		0x00040000
	.equ	CR0_PG,		0x80000000
	.equ	CR4_PAE,	0x00000020

	.equ	PAGE_SIZE,	4096
	.equ	PAGE_MASK,	0xfffff000

/* Page-table entry bits used for the two mappings of the control page. */
	.equ	PTE_ATTR,	0x63		/* PRESENT | RW | ACCESSED | DIRTY */
	.equ	PDPTE_ATTR,	0x01		/* a PAE PDPT entry: PRESENT only */

/* page_list word indexes (SPEC 6, the 2.6.27 i386 order). */
	.equ	PA_CONTROL_PAGE,	0
	.equ	VA_CONTROL_PAGE,	1
	.equ	PA_PGD,			2
	.equ	VA_PGD,			3
	.equ	PA_PTE_0,		4
	.equ	VA_PTE_0,		5
	.equ	PA_PTE_1,		6
	.equ	VA_PTE_1,		7
	.equ	PA_SWAP_PAGE,		8
	.equ	PA_PMD_0,		9
	.equ	VA_PMD_0,		10
	.equ	PA_PMD_1,		11
	.equ	VA_PMD_1,		12

/* Data area: the second half of the control page (SPEC 6).  DATA_FLAGS is a kjcore addition. */
	.equ	DATA_AREA,	2048
	.equ	DATA_ESP,	DATA_AREA + 0x00	/* first kernel's ESP after the saves */
	.equ	DATA_CR0,	DATA_AREA + 0x04
	.equ	DATA_CR3,	DATA_AREA + 0x08
	.equ	DATA_CR4,	DATA_AREA + 0x0c
	.equ	DATA_VA_CONTROL, DATA_AREA + 0x10
	.equ	DATA_PA_PGD,	DATA_AREA + 0x14
	.equ	DATA_PA_SWAP,	DATA_AREA + 0x18
	.equ	DATA_HEAD,	DATA_AREA + 0x1c
	.equ	DATA_FLAGS,	DATA_AREA + 0x20	/* FLAG_* bits of the entry point */

	.equ	FLAG_FIX_PAE,	1	/* restore CR4 before paging on, on the way back */
	.equ	FLAG_FIX_DF,	2	/* clear DF before the swap back */

/* Indirection list flags (SPEC 1.1), tested in this order. */
	.equ	IND_DESTINATION,	0x1
	.equ	IND_INDIRECTION,	0x2
	.equ	IND_DONE,		0x4
	.equ	IND_SOURCE,		0x8

/* Arguments on the first kernel's stack once the five saved words are pushed. */
	.equ	SAVED,		20
	.equ	ARG_HEAD,	SAVED + 4
	.equ	ARG_PAGE_LIST,	SAVED + 8
	.equ	ARG_START,	SAVED + 12
	.equ	ARG_HAS_PAE,	SAVED + 16
	.equ	ARG_PRESERVE,	SAVED + 20

	.text
relocate_kernel:
	/* Which behaviour on the way back: EAX is a scratch register under cdecl. */
	xorl	%eax, %eax
relocate_kernel_flags:
	/* Step 1: the callee-saved registers and EFLAGS stay on the caller's stack. */
	pushl	%ebx
	pushl	%esi
	pushl	%edi
	pushl	%ebp
	pushfl

	movl	ARG_PAGE_LIST(%esp), %ebp
	movl	4*VA_CONTROL_PAGE(%ebp), %edi	/* data area through the kernel mapping */
	movl	%eax, DATA_FLAGS(%edi)
	movl	%esp, DATA_ESP(%edi)
	movl	%cr0, %eax
	movl	%eax, DATA_CR0(%edi)
	movl	%cr3, %eax
	movl	%eax, DATA_CR3(%edi)
	movl	%cr4, %eax
	movl	%eax, DATA_CR4(%edi)

	/*
	 * Step 2: enter the control page in the kexec page tables at its kernel virtual address
	 * (through PTE_0 / PMD_0) and at its physical address (PTE_1 / PMD_1), so that the code
	 * keeps running across the CR3 switch and across turning paging off and on.
	 */
	testl	$CR4_PAE, %eax
	jnz	map_pae

	/* 2-level: PGD[addr >> 22] -> PTE page, PTE[(addr >> 12) & 1023] -> control page. */
	movl	4*VA_CONTROL_PAGE(%ebp), %eax
	movl	4*PA_PTE_0(%ebp), %edx
	movl	4*VA_PTE_0(%ebp), %ecx
	call	map_2level
	movl	4*PA_CONTROL_PAGE(%ebp), %eax
	movl	4*PA_PTE_1(%ebp), %edx
	movl	4*VA_PTE_1(%ebp), %ecx
	call	map_2level
	jmp	mapped

map_pae:
	/* PAE: PDPT[addr >> 30] -> PMD page, PMD[(addr >> 21) & 511] -> PTE page,
	 * PTE[(addr >> 12) & 511] -> control page; 8-byte entries, the high halves stay 0. */
	movl	4*VA_CONTROL_PAGE(%ebp), %eax
	movl	4*PA_PMD_0(%ebp), %edx
	movl	4*VA_PMD_0(%ebp), %ecx
	movl	4*PA_PTE_0(%ebp), %esi
	movl	4*VA_PTE_0(%ebp), %ebx
	call	map_pae_one
	movl	4*PA_CONTROL_PAGE(%ebp), %eax
	movl	4*PA_PMD_1(%ebp), %edx
	movl	4*VA_PMD_1(%ebp), %ecx
	movl	4*PA_PTE_1(%ebp), %esi
	movl	4*VA_PTE_1(%ebp), %ebx
	call	map_pae_one

mapped:
	/* Step 3: interrupts off and every other flag cleared (DF = 0 for the first pass). */
	pushl	$0
	popfl

	/* Everything needed after the CR3 switch is copied out of page_list now: the first
	 * kernel's stack is not mapped in the kexec page tables. */
	movl	4*VA_CONTROL_PAGE(%ebp), %eax
	movl	%eax, DATA_VA_CONTROL(%edi)
	movl	4*PA_PGD(%ebp), %eax
	movl	%eax, DATA_PA_PGD(%edi)
	movl	4*PA_SWAP_PAGE(%ebp), %eax
	movl	%eax, DATA_PA_SWAP(%edi)
	movl	ARG_HEAD(%esp), %ebx
	movl	%ebx, DATA_HEAD(%edi)
	movl	ARG_START(%esp), %edx
	movl	ARG_HAS_PAE(%esp), %ecx
	movl	ARG_PRESERVE(%esp), %esi

	/* Step 4: kexec page tables, stack at the top of the control page (its physical
	 * address, identity-mapped now), then on to the identity-mapped copy of this code. */
	movl	4*PA_PGD(%ebp), %eax
	movl	4*PA_CONTROL_PAGE(%ebp), %edi
	movl	%eax, %cr3
	leal	PAGE_SIZE(%edi), %esp
	leal	(identity_mapped - relocate_kernel)(%edi), %eax
	jmp	*%eax

identity_mapped:
	/* From here EDI = physical address of the control page, EBX = head, EDX = start,
	 * ECX = has_pae, ESI = preserve_context. */

	/* Step 5: paging off.  PE stays set: the descriptor caches keep the flat segments. */
	movl	%cr0, %eax
	andl	$~(CR0_PG | CR0_AM | CR0_WP | CR0_TS | CR0_EM), %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	jmp	1f
1:
	testl	%ecx, %ecx
	jz	2f
	xorl	%eax, %eax
	movl	%eax, %cr4
2:
	xorl	%eax, %eax
	movl	%eax, %cr3

	/* Step 6: destinations and sources change places.  The pass keeps EBX, ESI and EDI
	 * but not EDX: the start address waits on our stack. */
	pushl	%edx
	pushl	DATA_PA_SWAP(%edi)
	pushl	%ebx
	call	swap_pages
	addl	$8, %esp
	popl	%edx

	/* The swap may have rewritten pages holding code: a CR3 write serializes the
	 * instruction stream before anything that was copied runs. */
	xorl	%eax, %eax
	movl	%eax, %cr3

	testl	%esi, %esi
	jnz	preserve

	/* Step 7: a plain kexec.  Known register values, the start address is the only word
	 * on the stack and RET consumes it: the new image starts with ESP at the top of the
	 * control page. */
	pushl	%edx
	xorl	%eax, %eax
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%esi, %esi
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	ret

preserve:
	/* Step 8: the peer gets the swap page as its stack and our return address as its
	 * jump-back entry. */
	movl	DATA_PA_SWAP(%edi), %esp
	addl	$PAGE_SIZE, %esp
	call	*%edx

jump_back_entry:
	/* Step 9: the peer came back (by RET or by calling this address); every register may
	 * have changed.  The word at ESP is the peer's re-entry point. */
	movl	(%esp), %ebp

	/* Find this copy of the code: the pushed return address is our own physical address
	 * (this writes one word just below the peer's ESP). */
	call	1f
1:
	popl	%ebx
	subl	$(1b - relocate_kernel), %ebx

	/* Step 10: swap back with what was recorded on the way out, on our own stack.  The
	 * copies run in the direction the peer left in DF, unless fix_peer_df asked for CLD. */
	leal	PAGE_SIZE(%ebx), %esp
	testl	$FLAG_FIX_DF, DATA_FLAGS(%ebx)
	jz	2f
	cld
2:
	pushl	DATA_PA_SWAP(%ebx)
	pushl	DATA_HEAD(%ebx)
	call	swap_pages
	addl	$8, %esp

	/* From here to the return only EAX, EDI and ESP change: ECX and EDX stay as the pass
	 * left them. */
	movl	DATA_PA_PGD(%ebx), %eax
	movl	%eax, %cr3
	testl	$FLAG_FIX_PAE, DATA_FLAGS(%ebx)
	jz	3f
	/* fix_pae_return: the kexec tables are in the format of the saved CR4. */
	movl	DATA_CR4(%ebx), %eax
	movl	%eax, %cr4
3:
	movl	%cr0, %eax
	orl	$CR0_PG, %eax
	movl	%eax, %cr0
paging_on_return:
	/* Paging is on (the faithful routine under a PAE kernel faults fetching this): continue at the kernel virtual address of the control page. */
	movl	DATA_VA_CONTROL(%ebx), %edi
	leal	(virtual_mapped - relocate_kernel)(%edi), %eax
	jmp	*%eax

virtual_mapped:
	movl	DATA_CR4(%edi), %eax
	movl	%eax, %cr4
	movl	DATA_CR3(%edi), %eax
	movl	%eax, %cr3
	movl	DATA_CR0(%edi), %eax
	movl	%eax, %cr0
	movl	DATA_ESP(%edi), %esp
	movl	%ebp, %eax
	popfl
	popl	%ebp
	popl	%edi
	popl	%esi
	popl	%ebx
	ret

/*
 * map_2level: EAX = address to map to the control page, EDX = PA of the PTE page,
 * ECX = VA of the PTE page; EBP = page_list.  Clobbers EAX, EBX, EDX.
 */
map_2level:
	movl	%eax, %ebx
	shrl	$22, %ebx
	orl	$PTE_ATTR, %edx
	pushl	%ecx
	movl	4*VA_PGD(%ebp), %ecx
	movl	%edx, (%ecx,%ebx,4)
	popl	%ecx
	shrl	$12, %eax
	andl	$1023, %eax
	movl	4*PA_CONTROL_PAGE(%ebp), %edx
	orl	$PTE_ATTR, %edx
	movl	%edx, (%ecx,%eax,4)
	ret

/*
 * map_pae_one: EAX = address to map to the control page, EDX/ECX = PA/VA of the PMD page,
 * ESI/EBX = PA/VA of the PTE page; EBP = page_list.  Only the low halves of the 8-byte
 * entries are written.  Clobbers EAX, EDX, ESI, and uses the stack for EDI.
 */
map_pae_one:
	pushl	%edi
	movl	%eax, %edi
	shrl	$30, %edi
	orl	$PDPTE_ATTR, %edx
	pushl	%ecx
	movl	4*VA_PGD(%ebp), %ecx
	movl	%edx, (%ecx,%edi,8)
	popl	%ecx
	movl	%eax, %edi
	shrl	$21, %edi
	andl	$511, %edi
	orl	$PTE_ATTR, %esi
	movl	%esi, (%ecx,%edi,8)
	shrl	$12, %eax
	andl	$511, %eax
	movl	4*PA_CONTROL_PAGE(%ebp), %edx
	orl	$PTE_ATTR, %edx
	movl	%edx, (%ebx,%eax,8)
	popl	%edi
	ret

/*
 * swap_pages(head, swap_page), cdecl (SPEC 7.6): EBX, ESI, EDI and EBP are kept, EAX is
 * scratch, and like the 2.6.27 routine it returns with ECX = the word that ended the walk
 * (IND_DONE) and EDX = the swap page.  There is no CLD: the copies run in the direction of
 * DF, and D moves on by EDI's progress through the last copy (down a page when DF = 1).
 * In the loop ECX = the word being decoded, EBX = where the next word is read, EDI = D,
 * EDX = swap page; for a SOURCE word EBP = S and EAX = D.  The walk starts like the
 * reference engine: cursor 0, destination 0.
 */
swap_pages:
	pushl	%ebp
	pushl	%ebx
	pushl	%esi
	pushl	%edi
	movl	20(%esp), %ecx
	movl	24(%esp), %edx
	xorl	%ebx, %ebx
	xorl	%edi, %edi
	jmp	decode
next_word:
	movl	(%ebx), %ecx
	addl	$4, %ebx
decode:
	testl	$IND_DESTINATION, %ecx
	jz	1f
	movl	%ecx, %edi
	andl	$PAGE_MASK, %edi
	jmp	next_word
1:
	testl	$IND_INDIRECTION, %ecx
	jz	2f
	movl	%ecx, %ebx
	andl	$PAGE_MASK, %ebx
	jmp	next_word
2:
	testl	$IND_DONE, %ecx
	jnz	done
	testl	$IND_SOURCE, %ecx
	jz	next_word			/* any other word is skipped */
	movl	%ecx, %ebp
	andl	$PAGE_MASK, %ebp
	movl	%edi, %eax
	movl	%ebp, %esi			/* S -> swap page */
	movl	%edx, %edi
	movl	$1024, %ecx
	rep	movsl
	movl	%eax, %esi			/* D -> S */
	movl	%ebp, %edi
	movl	$1024, %ecx
	rep	movsl
	movl	%edx, %esi			/* swap page -> D, leaving EDI at the next D */
	movl	%eax, %edi
	movl	$1024, %ecx
	rep	movsl
	jmp	next_word
done:
	popl	%edi
	popl	%esi
	popl	%ebx
	popl	%ebp
	ret

/* Symbol table for kjcore/relocate.py: magic, count, then one offset per name in the order
 * relocate.SYMBOL_NAMES lists them. */
	.balign	4
symbol_table:
	.ascii	"KJRK"
	.long	8
	.long	relocate_kernel - relocate_kernel
	.long	relocate_kernel_flags - relocate_kernel
	.long	identity_mapped - relocate_kernel
	.long	jump_back_entry - relocate_kernel
	.long	virtual_mapped - relocate_kernel
	.long	swap_pages - relocate_kernel
	.long	paging_on_return - relocate_kernel
	.long	symbol_table - relocate_kernel
relocate_kernel_end:
