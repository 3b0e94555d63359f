"""kjcore.loader: the kexec-tools loading rules of SPEC section 10, one test per rule."""
import doctest
import io
import shutil
import subprocess

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given
from hypothesis import strategies as st

import kjcore.elf32
import kjcore.loader
from kjcore.constants import KEXEC_SEGMENT_MAX, PAGE_SIZE, U32
from kjcore.loader import (
    LoadedImage,
    LoaderError,
    load_elf32,
)
from kjcore.segment import Segment

try:
    from . import elfbuild
except ImportError:             # tests/ is not a package: pytest put it on sys.path
    import elfbuild
from elfbuild import PT_INTERP, PT_NOTE, Phdr, build_elf32, set_phdr_field
from loader_world import HYP, one_segment, refused

# Docstring examples of the loader modules and the fixture builder run with this file as well.

@pytest.mark.parametrize("module", [kjcore.loader, kjcore.elf32, elfbuild])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------
# PT_LOAD -> Segment

def test_pt_load_becomes_segment_at_paddr_with_page_rounded_memsz():
    image = load_elf32(one_segment())
    assert isinstance(image, LoadedImage)
    assert image.entry == 0x100004
    (seg,) = image.segments
    assert (seg.mem, seg.bufsz, seg.memsz) == (0x100000, 100, 0x2000)
    assert bytes(seg.read(0, 100)) == b"\x90" * 100


def test_segment_uses_paddr_not_vaddr():
    data = build_elf32([Phdr(0x100000, b"x", 0x1000, vaddr=0xC0100000)])
    assert load_elf32(data).segments[0].mem == 0x100000


@pytest.mark.parametrize("memsz, rounded", [(1, 0x1000), (0x1000, 0x1000), (0x1001, 0x2000),
                                            (0xFFFFF, 0x100000)])
def test_memsz_rounded_up_to_a_page(memsz, rounded):
    data = build_elf32([Phdr(0x400000, b"", memsz)])
    assert load_elf32(data).segments[0].memsz == rounded


def test_segment_buffer_is_a_view_of_the_file_not_a_copy():
    data = bytearray(one_segment())
    seg = load_elf32(data).segments[0]
    offset = data.index(b"\x90" * 100)
    data[offset] = 0xCC
    assert seg.read(0, 1)[0] == 0xCC


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview,
                                  lambda b: np.frombuffer(b, dtype=np.uint8)])
def test_any_bytes_like_input(kind):
    image = load_elf32(kind(one_segment()))
    assert image.segments[0].bufsz == 100


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError):
        load_elf32("\x7fELF")


def test_bufsz_is_min_of_filesz_and_memsz():
    # p_filesz > p_memsz: kexec-tools truncates the buffer to p_memsz and loads it.
    data = build_elf32([Phdr(0x100000, bytes(range(200)), memsz=50)])
    seg = load_elf32(data).segments[0]
    assert (seg.bufsz, seg.memsz) == (50, 0x1000)
    assert bytes(seg.read(0, 50)) == bytes(range(50))


def test_filesz_beyond_memsz_must_still_be_inside_the_file():
    data = build_elf32([Phdr(0x100000, b"abcd", memsz=2, filesz=4)])
    assert load_elf32(data).segments[0].bufsz == 2
    refused("p_filesz", set_phdr_field(data, 0, "p_filesz", len(data)))


def test_zero_memsz_segments_dropped_even_if_unaligned():
    data = build_elf32([Phdr(0x100000, b"a", 0x1000), Phdr(0x123, b"", 0),
                        Phdr(0x200000, b"b", 0x1000)])
    assert [s.mem for s in load_elf32(data).segments] == [0x100000, 0x200000]


def test_non_load_headers_ignored():
    data = build_elf32([Phdr(0, b"note", type=PT_NOTE), Phdr(0x100000, b"a", 0x1000),
                        Phdr(0x5, b"", 0x10, type=0x6474E551)])     # PT_GNU_STACK
    assert len(load_elf32(data).segments) == 1


@pytest.mark.parametrize("e_type", [elfbuild.ET_EXEC, elfbuild.ET_DYN, elfbuild.ET_CORE])
def test_exec_dyn_and_core_accepted_and_dyn_not_relocated(e_type):
    data = build_elf32([Phdr(0x300000, b"a", 0x1000)], entry=0x300000, e_type=e_type)
    assert load_elf32(data) == LoadedImage((Segment(b"a", 0x300000, 0x1000),), 0x300000)


def test_entry_is_e_entry_whatever_its_value():
    # --args-none: entry = e_entry, no purgatory; the kernel checks nothing about it (SPEC 4.1).
    for entry in (0, 0xFFFFFFFF, 0x12345):
        assert load_elf32(one_segment(e_entry=entry)).entry == entry


def test_unaligned_paddr_is_an_error_not_rounded_down():
    err = refused("p_paddr", build_elf32([Phdr(0x100800, b"a", 0x1000)]))
    assert "0x100800" in str(err) and "program header 0" in str(err)


def test_segments_sorted_by_address():
    data = build_elf32([Phdr(0x300000, b"c", 1), Phdr(0x100000, b"a", 1), Phdr(0x200000, b"b", 1)])
    segments = load_elf32(data).segments
    assert [s.mem for s in segments] == [0x100000, 0x200000, 0x300000]
    assert [bytes(s.read(0, 1)) for s in segments] == [b"a", b"b", b"c"]


def test_overlap_rejected_after_page_rounding():
    # 0x100000 + 0x1001 rounds to 0x102000, so the next segment's page is shared.
    refused("mem", build_elf32([Phdr(0x101000, b"b", 1), Phdr(0x100000, b"a", 0x1001)]))
    touching = build_elf32([Phdr(0x101000, b"b", 1), Phdr(0x100000, b"a", 0x1000)])
    assert len(load_elf32(touching).segments) == 2


def test_sixteen_segments_allowed_seventeen_refused():
    phdrs = [Phdr(0x100000 + i * PAGE_SIZE, b"x", 1) for i in range(KEXEC_SEGMENT_MAX)]
    assert len(load_elf32(build_elf32(phdrs)).segments) == 16
    refused("nr_segments", build_elf32(phdrs + [Phdr(0x200000, b"y", 1)]))
    # an empty PT_LOAD does not count
    assert len(load_elf32(build_elf32(phdrs + [Phdr(0x200000, b"", 0)])).segments) == 16


def test_pt_interp_rejected():
    refused("p_type", build_elf32([Phdr(0, b"/lib/ld.so\0", type=PT_INTERP),
                                   Phdr(0x100000, b"a", 0x1000)]))


def test_nothing_to_load_rejected():
    # kexec-tools would pass zero segments to kexec_load, which unloads the current image.
    refused("p_type", build_elf32([Phdr(0, b"n", type=PT_NOTE)]))
    refused("p_type", build_elf32([Phdr(0x100000, b"", 0)]))


def test_address_wrap_rejected():
    refused("p_memsz", build_elf32([Phdr(0xFFFFF000, b"", 0x2000)]))
    # i386 kexec-tools computes the end in 32 bits: ending exactly at 4 GiB wraps to 0 too
    refused("p_memsz", build_elf32([Phdr(0xFFFFF000, b"", 0x1000)]))
    top = load_elf32(build_elf32([Phdr(0xFFFFE000, b"", 0x1001)])).segments[0]
    assert top.mem + top.memsz == 1 << 32


def test_memsz_rounding_past_32_bits_rejected():
    refused("p_memsz", build_elf32([Phdr(0, b"", 0xFFFFF001)]))
    assert load_elf32(build_elf32([Phdr(0, b"", 0xFFFFF000)])).segments[0].memsz == 0xFFFFF000


def test_wrap_checked_on_every_program_header():
    refused("p_memsz", build_elf32([Phdr(0x100000, b"a", 1),
                                    Phdr(0xFFFF0000, b"", 0x20000, type=PT_NOTE)]))


def test_huge_memsz_needs_no_memory():
    seg = load_elf32(build_elf32([Phdr(0x1000, b"a", 0xF0000000)])).segments[0]
    assert seg.memsz == 0xF0000000 and seg.bufsz == 1


# ---------------------------------------------------------------------------------------------
# Malformed headers: one error naming the field

@pytest.mark.parametrize("field, value", [("EI_CLASS", 2), ("EI_CLASS", 0), ("EI_DATA", 2),
                                          ("EI_DATA", 0), ("EI_VERSION", 0), ("e_version", 2),
                                          ("e_ehsize", 64), ("e_machine", 6), ("e_machine", 62),
                                          ("e_type", 1), ("e_type", 0), ("e_phentsize", 56),
                                          ("e_phnum", 0), ("e_phoff", 0), ("e_phnum", 0xFFFF),
                                          ("e_phoff", 0xFFFFFFFF)])
def test_bad_header_field_named(field, value):
    refused(field, one_segment(**{field: value}))


def test_phdr_table_past_end_names_e_phoff():
    refused("e_phoff", one_segment(e_phnum=10))


def test_bad_magic():
    refused("e_ident", b"\x7fELG" + one_segment()[4:])
    refused("e_ident", b"")


def test_every_truncation_refused():
    data = build_elf32([Phdr(0x100000, b"abc" * 30, 0x1000), Phdr(0, b"note", type=PT_NOTE)],
                       sections=True)
    fields = set()
    for n in range(len(data)):
        with pytest.raises(LoaderError) as info:
            load_elf32(data[:n])
        fields.add(info.value.field)
    assert {"e_ident", "Elf32_Ehdr", "e_phoff", "p_filesz", "e_shoff"} <= fields


def test_phdr_offset_past_end():
    data = one_segment()
    refused("p_offset", set_phdr_field(data, 0, "p_offset", len(data) + 1))
    refused("p_filesz", set_phdr_field(data, 0, "p_filesz", 0xFFFFFFFF))


def test_absurd_sizes_do_not_allocate_or_hang():
    # 65534 program headers claimed in a tiny file: refused by length before anything is read
    refused("e_phoff", one_segment(e_phnum=0xFFFE))
    refused("e_shoff", one_segment(e_shoff=100, e_shnum=0xFFFF, e_shentsize=40))


class TestSections:
    """The section table is checked the way kexec-tools' build_mem_shdrs checks it."""

    def data(self):
        return build_elf32([Phdr(0x100000, b"abc", 0x1000)], sections=True)

    def shdr(self, data, index, field, value):
        ehdr = ELFFile(io.BytesIO(data)).header
        offset = ehdr.e_shoff + index * 40 + 4 * elfbuild.SHDR_FIELDS.index(field)
        return elfbuild.set_field(data, offset, "I", value)

    def test_valid_sections_load(self):
        assert len(load_elf32(self.data()).segments) == 1

    def test_bad_shentsize(self):
        refused("e_shentsize", elfbuild.set_field(self.data(), 46, "H", 64))

    def test_table_past_end(self):
        refused("e_shoff", elfbuild.set_field(self.data(), 32, "I", len(self.data()) - 8))

    def test_no_table_when_shoff_or_shnum_zero(self):
        junk = elfbuild.set_field(self.data(), 46, "H", 7)
        assert load_elf32(elfbuild.set_field(junk, 48, "H", 0)).segments
        assert load_elf32(elfbuild.set_field(junk, 32, "I", 0)).segments

    def test_section_bytes_past_end(self):
        refused("sh_size", self.shdr(self.data(), 1, "sh_size", 0x100000))
        refused("sh_offset", self.shdr(self.data(), 1, "sh_offset", 0x100000))
        # SHT_NOBITS occupies no file bytes
        nobits = self.shdr(self.shdr(self.data(), 1, "sh_type", 8), 1, "sh_size", 0x100000)
        assert load_elf32(nobits).segments

    def test_entsize_of_symbol_table(self):
        symtab = self.shdr(self.data(), 1, "sh_type", 2)
        refused("sh_entsize", symtab)
        assert load_elf32(self.shdr(symtab, 1, "sh_entsize", 16)).segments

    def test_address_wrap(self):
        refused("sh_size", self.shdr(self.data(), 1, "sh_addr", 0xFFFFFFFF))


# ---------------------------------------------------------------------------------------------
# Oracles: pyelftools on generated files, GNU ld on a real one

@st.composite
def elf_layouts(draw):
    """A valid ELF: PT_LOADs in distinct 16-page slots (any order), notes, optional sections."""
    slots = draw(st.lists(st.integers(0, 255), min_size=1, max_size=KEXEC_SEGMENT_MAX,
                          unique=True))
    phdrs = []
    for slot in slots:
        data = draw(st.binary(max_size=300))
        memsz = draw(st.integers(0, 16 * PAGE_SIZE))
        filesz = draw(st.integers(0, len(data)))
        phdrs.append(Phdr(slot * 16 * PAGE_SIZE, data, memsz, filesz=filesz,
                          vaddr=draw(st.integers(0, U32))))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(phdrs)))
        phdrs.insert(at, Phdr(draw(st.integers(0, 0xFFFF)), draw(st.binary(max_size=20)),
                              type=draw(st.sampled_from([0, PT_NOTE, 6, 0x6474E551]))))
    e_type = draw(st.sampled_from([elfbuild.ET_EXEC, elfbuild.ET_DYN, elfbuild.ET_CORE]))
    return build_elf32(phdrs, entry=draw(st.integers(0, U32)), e_type=e_type,
                       sections=draw(st.booleans()), data_align=draw(st.sampled_from([1, 16])))


def expected_by_pyelftools(data):
    """The LoadedImage SPEC section 10 asks for, computed from pyelftools' view of ``data``."""
    segments, entry = elfbuild.pyelftools_load(data)
    return LoadedImage(tuple(Segment(body, mem, memsz) for mem, body, memsz in segments), entry)


@HYP
@given(elf_layouts())
def test_matches_pyelftools_on_generated_files(data):
    expected = expected_by_pyelftools(data)
    if not expected.segments:
        refused("p_type", data)
    else:
        assert load_elf32(data) == expected


def _gnu_i386_toolchain():
    if not (shutil.which("as") and shutil.which("ld")):
        return False
    emulations = subprocess.run(["ld", "-V"], capture_output=True, text=True).stdout
    return "elf_i386" in emulations


@pytest.mark.skipif(not _gnu_i386_toolchain(), reason="needs GNU as/ld with elf_i386")
def test_real_ld_output(tmp_path):
    src = tmp_path / "t.S"
    src.write_text(".globl _start\n.text\n_start: movl $0x1234, %eax\n hlt\n jmp _start\n"
                   ".data\nmsg: .ascii \"hello\"\n.bss\nbuf: .skip 0x3000\n")
    subprocess.run(["as", "--32", "-o", tmp_path / "t.o", src], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-e", "_start", "--build-id=none",
                    "-o", tmp_path / "t.elf", tmp_path / "t.o"], check=True)
    data = (tmp_path / "t.elf").read_bytes()
    image = load_elf32(data)
    assert image == expected_by_pyelftools(data)
    assert image.entry == 0x100000
    text = next(s for s in image.segments if s.mem == 0x100000)
    assert bytes(text.read(0, 6)) == b"\xb8\x34\x12\x00\x00\xf4"      # mov $0x1234,%eax; hlt
    assert max(s.mem + s.memsz for s in image.segments) >= 0x104000     # .bss is in memsz
