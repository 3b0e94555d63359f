"""Pictures (kjcore/plot.py): rendered for real, then checked (size, legend, file header)."""
import json
import runpy
import struct
import sys
from pathlib import Path

import pytest

import kjcore
from kjcore import KEXEC_PRESERVE_CONTEXT, Segment
from kjcore.commands import main as cli
from kjcore.errors import UsageError
from kjcore.store import save_machine

plot = pytest.importorskip("kjcore.plot")
pytest.importorskip("matplotlib")

MiB = 1 << 20


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _loaded(**kw):
    m = kjcore.Machine(ram_size=16 * MiB, kernel_reserved=2 * MiB, **kw)
    m.kexec_load(0x100000, [Segment(b"\xc3" * 100, 0x100000, 12 * 4096),
                            Segment(b"\x90", 0x400000, 4096)], KEXEC_PRESERVE_CONTEXT)
    return m


def _legend(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_memory_map_shows_every_kind_and_the_pairing(tmp_path):
    m = _loaded(crashkernel=(8 * MiB, 4 * MiB), bios=True)
    fig = plot.memory_map_figure(m)
    legend = _legend(fig)
    for kind in ("kernel", "bios", "crashkernel", "source", "indirection", "control", "swap",
                 "destination", "free"):
        assert kind in legend
    assert legend[-1] == "destination \u2192 source"
    ax = fig.axes[0]
    # one pairing line per run of pages whose destination and source both advance
    pairs = kjcore.inspect.pairing(m)
    assert len(pairs) == 13 and 1 <= len(ax.texts) <= 13
    assert [t.get_text() for t in ax.get_yticklabels()] == ["RAM", "destinations"]
    out = tmp_path / "map.png"
    plot.save_memory_map(m, out)
    assert _png_size(out) == (1000, 320)


def test_svg_and_a_machine_without_image(tmp_path):
    m = kjcore.Machine(ram_size=4 * MiB, kernel_reserved=MiB)
    out = tmp_path / "map.svg"
    plot.save_memory_map(m, out)
    text = out.read_text()
    assert text.startswith("<?xml") and "<svg" in text and "physical address" in text
    assert "destination" not in _legend(plot.memory_map_figure(m))


def test_inspect_plot(tmp_path, capsys):
    m = _loaded()
    path = tmp_path / "m"
    save_machine(m, path)
    out = tmp_path / "map.png"
    assert cli.main(["inspect", str(path), "--plot", str(out)]) == 0
    assert _png_size(out) == (1000, 320)
    assert cli.main(["inspect", str(path), "--plot", str(tmp_path / "map.jpg")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must end in .png, .svg, .pdf" in err


def test_demo_plot(tmp_path, capsys):
    out = tmp_path / "demo.svg"
    assert cli.main(["demo", "--ram", "16M", "--jumps", "1", "--plot", str(out)]) == 0
    assert f"memory map drawn to {out}" in capsys.readouterr().out
    assert "<svg" in out.read_text()


def test_benchmark_plot(tmp_path, monkeypatch):
    results = {"machine_info": {"cpu": {"brand_raw": "test cpu"}},
               "benchmarks": [{"name": f"test_{k}", "stats": {"mean": 10.0 ** -k,
                                                              "stddev": 10.0 ** -k / 10}}
                              for k in range(1, 5)]}
    fig = plot.benchmark_figure(results)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean (\u00b1 std dev)"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["test_4", "test_3", "test_2",
                                                            "test_1"]
    src = tmp_path / "results.json"
    src.write_text(json.dumps(results))
    out = tmp_path / "bench.png"
    script = Path(kjcore.__file__).parent.parent / "benchmarks" / "plot_results.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(src), str(out)])
    runpy.run_path(str(script), run_name="__main__")
    width, height = _png_size(out)
    assert width == 900 and height == int(100 * (1 + 0.35 * 4))
    with pytest.raises(ValueError, match="no benchmarks"):
        plot.benchmark_figure({"benchmarks": []})


def test_missing_matplotlib_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UsageError, match=r"^pictures need matplotlib: pip install "
                                         r"'kjcore\[plot\]'$") as e:
        plot.check_target("map.png")
    assert isinstance(e.value, ImportError)
    with pytest.raises(UsageError):
        plot.memory_map_figure(kjcore.Machine(ram_size=MiB, kernel_reserved=64 << 10))


def test_one_page_stays_visible_on_a_large_machine():
    m = kjcore.Machine(ram_size=256 * MiB, kernel_reserved=4 * MiB)
    m.kexec_load(0x100000, [Segment(b"\xc3", 0x100000, 4096)], KEXEC_PRESERVE_CONTEXT)
    fig = plot.memory_map_figure(m)
    extents = [path.get_extents().width for c in fig.axes[0].collections
               for path in c.get_paths()]
    assert min(extents) >= 256 / 600 * 0.99             # MiB: at least 1/600 of the axis
