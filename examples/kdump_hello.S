# kdump_hello: the smallest capture "kernel" of the kdump tutorial (docs/kdump.rst).
#
# Loaded with "kjexec -p --args-linux" at 16 MiB (inside crashkernel=16M@16M) and entered by
# purgatory as the Linux/x86 32-bit boot protocol says: paging off, ESI = the zero page. It
# prints the command line the zero page's cmd_line_ptr (offset 0x228) points at on the debug
# console (port 0xe9) -- kexec-tools' memmap= and elfcorehdr= options included -- and halts.
# Written for kjcore; built by examples/Makefile, the build is committed.

	.code32
	.text
	.globl	_start
_start:
	mov	$banner, %ebx
	call	puts
	mov	0x228(%esi), %ebx	# boot_params.hdr.cmd_line_ptr
	call	puts
	mov	$newline, %ebx
	call	puts
1:	hlt
	jmp	1b

# Print the NUL-terminated string at %ebx on the debug console.
puts:
	movb	(%ebx), %al
	testb	%al, %al
	jz	2f
	outb	%al, $0xe9
	inc	%ebx
	jmp	puts
2:	ret

banner:	.asciz	"kdump_hello: command line: "
newline: .asciz	"\n"
