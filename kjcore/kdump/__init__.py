"""kdump: the crash path of the first kernel and the memory dump it exists for (SPEC §17).

=====================  ==================================================================
:mod:`.notes`          ELF notes: the crash-notes buffer and the i386 ``NT_PRSTATUS`` note
:mod:`.crash`          ``panic`` -> ``crash_kexec`` -> ``machine_crash_shutdown`` -> the crash
                       image (``Machine.panic``)
:mod:`.elfcorehdr`     the ELF core header kexec-tools builds for a crash load, and its
                       hostile-input parser
:mod:`.ranges`         the first kernel's memory ranges as kexec-tools reads them, the
                       640 KiB backup, ``memmap=`` and ``elfcorehdr=``
:mod:`.vmcore`         what ``/proc/vmcore`` gives a capture kernel, as an ELF32 core file
=====================  ==================================================================
"""
