"""kjcore.testing.strategies: what they draw works end to end, and failing examples shrink."""
from hypothesis import HealthCheck, find, given, settings

import kjcore
from kjcore.constants import PAGE_SIZE
from kjcore.fuzz.oracle import JumpOracle
from kjcore.testing.strategies import address_pattern, payloads, segment_layouts, segments

DEST = 0x80000
#: ``find`` derandomized and without the example database: a fresh checkout (CI) shrinks from
#: scratch, so every local run must too (a minimum remembered from an earlier run would hide a
#: weaker shrink), and the same way every time
FRESH = settings(database=None, derandomize=True, max_examples=2000)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads(dest=DEST, checkpoint_port=0xEA))
def test_drawn_payloads_jump_as_their_model_says(p):
    m = kjcore.Machine(ram_size=1 << 20, kernel_reserved=64 << 10, fix_peer_df=True)
    m.kexec_load(p.entry, p.segments(), kjcore.KEXEC_PRESERVE_CONTEXT)
    img, oracle, pages = m.kexec_image, JumpOracle(m), p.initial_pages()
    for _ in range(3):
        oracle.before()
        console, returned = p.run_round(pages, img.control_page, img.swap_page)
        r = m.kernel_kexec()
        assert r.debugcon == console
        oracle.check(p.image_pages(pages))
        if returned:
            assert r.start == oracle.expected_ret_start(p.image_pages(pages))
            break
        assert r.start == p.reentry


def test_a_failing_payload_property_shrinks_to_one_operation():
    p = find(payloads(dest=DEST), lambda p: p.exit == "ret" and "movs" in dict(p.ops),
             settings=FRESH)
    data = DEST + PAGE_SIZE                 # the first data page
    assert (p.npages, p.ops) == (2, [("movs", (data, data, 1, False))])
    assert len(p.image) == PAGE_SIZE        # the shortest buffer: code, then zeros


def test_a_payload_needing_data_shrinks_to_one_byte_of_it():
    p = find(payloads(dest=DEST), lambda p: any(p.image[PAGE_SIZE:]), settings=FRESH)
    assert (p.ops, p.image[PAGE_SIZE:]) == ([], b"\x01")


def test_segment_contents_shrink_to_the_address_pattern():
    seg = find(segments(hi=1 << 20), lambda seg: seg.bufsz > PAGE_SIZE, settings=FRESH)
    assert (seg.mem, seg.bufsz, seg.memsz) == (0, PAGE_SIZE + 1, 2 * PAGE_SIZE)
    assert bytes(seg.buf) == address_pattern(0, PAGE_SIZE + 1).tobytes()
    assert bytes(seg.buf[0x1000:0x1001]) == b"\x00"


def test_a_failing_layout_property_shrinks_to_one_segment():
    segs = find(segment_layouts(hi=1 << 20), lambda segs: sum(s.bufsz for s in segs) > PAGE_SIZE,
                settings=FRESH)
    # Shrinking reaches a local minimum, not always the single segment: every empty segment is
    # gone (deleting one never matters) and no buffer can lose a byte (the sum is the bound).
    assert sum(s.bufsz for s in segs) == PAGE_SIZE + 1
    assert all(s.bufsz for s in segs) and len(segs) <= 4
