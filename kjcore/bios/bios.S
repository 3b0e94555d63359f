/*
 * kjcore's resident PC BIOS ROM (SPEC 14.2): 64 KiB loaded at physical 0xF0000.
 *
 * Written for this project.  The ROM does nothing by itself at run time: when a machine is
 * created with bios=True, Python (kjcore.bios) copies these bytes to 0xF0000 and writes the
 * interrupt vector table, the BIOS data area and the EBDA.  Every BIOS service is a stub that
 * traps to Python through the kjcore service port:
 *
 *     svc_NN: out  %al, $SERVICE_PORT   the run stops with an I/O request; Python finds the
 *                                       vector from the stub's address and runs the service
 *                                       on the registers and on FLAGS saved on the stack by
 *                                       INT.  A service waiting for input (INT 16h AH=00h on
 *                                       an empty queue) stops the run with Status.IDLE before
 *                                       the OUT completes: the next run executes it again
 *             iret                      FLAGS (with the service's CF/ZF) come off the stack
 *
 * OUT with an immediate port changes no register, so the caller's AL and DX reach Python
 * intact.  Offsets here are facts of kjcore/bios/layout.py; the tests compare them.
 *
 * Build (the test re-assembles and compares with the committed bios.bin):
 *     as --32 -o bios.o bios.S
 *     ld -m elf_i386 -Ttext=0 -e 0 -o bios.elf bios.o
 *     objcopy -O binary -j .text bios.elf bios.bin
 * or `make -C kjcore/bios`.
 */
        .code16
        .set SERVICE_PORT, 0xEC
        .set STUB_OFFSET, 0x0100
        .set STUB_SIZE, 0x10
        .text

/* 0x0000: the handler of every vector without a service (exceptions, IRQs, unknown INTs) */
        .globl default_stub
default_stub:
        iret

/* 0x0010: where the reset vector leads: there is no boot device, the machine stops */
        .org 0x0010, 0
        .globl reset_entry
reset_entry:
        cli
1:      hlt
        jmp     1b

        .macro service vector, index
        .org STUB_OFFSET + STUB_SIZE * \index, 0
        .globl svc_\vector
svc_\vector:
        out     %al, $SERVICE_PORT
        iret
        .endm

        service 0x10, 0         /* video */
        service 0x11, 1         /* equipment */
        service 0x12, 2         /* conventional memory */
        service 0x13, 3         /* disk */
        service 0x15, 4         /* system: E820, E801, 88h, A20, wait */
        service 0x16, 5         /* keyboard */
        service 0x1A, 6         /* clock */

/* 0xFFF0: the reset vector (CS base 0xFFFF0000 aliases here on a PC) */
        .org 0xFFF0, 0
        .globl reset_vector
reset_vector:
        ljmp    $0xF000, $reset_entry
        .ascii  "10/09/08"      /* BIOS date: the day Linux 2.6.27 came out */
        .byte   0
        .byte   0xFC            /* model byte: AT class */
        .byte   0
