"""A plain-Python model of the Linux/x86 boot protocol's zero page, written from the boot
protocol's description (Documentation/x86/boot.txt, struct boot_params of 2.6.27) with
ctypes, independently of kjcore.bootparam: the tests compare the two byte for byte."""
import ctypes


class E820Entry(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint64), ("type", ctypes.c_uint32)]


class ScreenInfo(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("orig_x", ctypes.c_uint8), ("orig_y", ctypes.c_uint8),
                ("ext_mem_k", ctypes.c_uint16), ("orig_video_page", ctypes.c_uint16),
                ("orig_video_mode", ctypes.c_uint8), ("orig_video_cols", ctypes.c_uint8),
                ("unused2", ctypes.c_uint16), ("orig_video_ega_bx", ctypes.c_uint16),
                ("unused3", ctypes.c_uint16), ("orig_video_lines", ctypes.c_uint8),
                ("orig_video_isVGA", ctypes.c_uint8), ("orig_video_points", ctypes.c_uint16),
                ("rest", ctypes.c_uint8 * 14),
                ("cl_magic", ctypes.c_uint16), ("cl_offset", ctypes.c_uint16),
                ("tail", ctypes.c_uint8 * 0x1C)]


class SetupHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("setup_sects", ctypes.c_uint8), ("root_flags", ctypes.c_uint16),
                ("syssize", ctypes.c_uint32), ("ram_size", ctypes.c_uint16),
                ("vid_mode", ctypes.c_uint16), ("root_dev", ctypes.c_uint16),
                ("boot_flag", ctypes.c_uint16), ("jump", ctypes.c_uint16),
                ("header", ctypes.c_char * 4), ("version", ctypes.c_uint16),
                ("realmode_swtch", ctypes.c_uint32), ("start_sys", ctypes.c_uint16),
                ("kernel_version", ctypes.c_uint16), ("type_of_loader", ctypes.c_uint8),
                ("loadflags", ctypes.c_uint8), ("setup_move_size", ctypes.c_uint16),
                ("code32_start", ctypes.c_uint32), ("ramdisk_image", ctypes.c_uint32),
                ("ramdisk_size", ctypes.c_uint32), ("bootsect_kludge", ctypes.c_uint32),
                ("heap_end_ptr", ctypes.c_uint16), ("pad1", ctypes.c_uint16),
                ("cmd_line_ptr", ctypes.c_uint32), ("initrd_addr_max", ctypes.c_uint32),
                ("kernel_alignment", ctypes.c_uint32), ("relocatable_kernel", ctypes.c_uint8),
                ("pad2", ctypes.c_uint8 * 3), ("cmdline_size", ctypes.c_uint32),
                ("hardware_subarch", ctypes.c_uint32),
                ("hardware_subarch_data", ctypes.c_uint64)]


class BootParams(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("screen_info", ScreenInfo),                    # 0x000
                ("apm_etc", ctypes.c_uint8 * (0x1E0 - 0x40)),    # 0x040
                ("alt_mem_k", ctypes.c_uint32),                  # 0x1e0
                ("scratch", ctypes.c_uint32),                    # 0x1e4
                ("e820_entries", ctypes.c_uint8),                # 0x1e8
                ("eddbuf_entries", ctypes.c_uint8),
                ("edd_mbr_sig_buf_entries", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 6),
                ("hdr", SetupHeader),                            # 0x1f1
                ("pad_hdr", ctypes.c_uint8 * (0x2D0 - 0x248)),
                ("e820_map", E820Entry * 128),                   # 0x2d0
                ("tail", ctypes.c_uint8 * (0x1000 - 0xCD0))]


assert ctypes.sizeof(BootParams) == 0x1000
assert BootParams.hdr.offset == 0x1F1 and SetupHeader.cmd_line_ptr.offset + 0x1F1 == 0x228


def model_params(base, cmdline, e820):
    """The 6 KiB buffer kexec-tools' --args-linux loads: the zero page of a boot loader of
    unknown type (0xff) with protocol 2.06 fields, a VGA 80x25 screen, root /dev/hda read-only,
    the e820 map, the memory above 1 MiB, the command line at +0x1000."""
    bp = BootParams()
    si = bp.screen_info
    si.orig_video_cols, si.orig_video_lines, si.orig_video_isVGA = 80, 25, 1
    si.orig_video_points = 16
    si.cl_magic, si.cl_offset = 0xA33F, 0x1000
    hdr = bp.hdr
    hdr.header, hdr.version, hdr.type_of_loader = b"HdrS", 0x206, 0xFF
    hdr.root_flags, hdr.root_dev = 0xFFFF, 0x300
    hdr.initrd_addr_max, hdr.cmdline_size = 0x37FFFFFF, 2048
    hdr.cmd_line_ptr = base + 0x1000
    bp.e820_entries = len(e820)
    for i, (addr, size, kind) in enumerate(e820):
        bp.e820_map[i] = E820Entry(addr, size, kind)
        last = addr + size - 1
        if kind == 1 and addr <= 0x100000 < last:
            kib = (last >> 10) - 1024
            bp.alt_mem_k, si.ext_mem_k = kib, min(kib, 0xFC00)
    line = cmdline[:2047] + b"\0"
    return bytes(bp) + line + bytes(2048 - len(line))
