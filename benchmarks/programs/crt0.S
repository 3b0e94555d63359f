/* Entry of every benchmark program: the harness sets EAX to the repetition count and
   ESP to the top of the stack; main(count) returns its result in EAX, then HLT. */
	.section .text.start, "ax"
	.globl _start
_start:
	push %eax
	call main
	add $4, %esp
	hlt
	.section .note.GNU-stack, "", @progbits
