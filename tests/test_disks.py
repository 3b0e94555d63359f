"""Disks (kjcore.devices.disk, SPEC §15): bounds, read-only disks, files, persistence by
reference, hostile machine directories, and the CLI's --disk / attach."""
import json
import os

import numpy as np
import pytest

import kjcore
from kjcore import store
from kjcore.commands import main as cli
from kjcore.devices import Disk
from kjcore.devices.disk import disk_from_reference
from kjcore.errors import DamagedMachineFile

MiB = 1 << 20


def _image(tmp_path, name="d.img", size=64 << 10, fill=None):
    path = tmp_path / name
    data = bytes(size) if fill is None else bytes([fill]) * size
    path.write_bytes(data)
    return str(path)


# ------------------------------------------------------------------ the Disk API
def test_memory_disk_reads_back_and_is_bounded():
    d = Disk.memory(8 * 512)
    d.write(7, b"\x5a" * 512)
    assert d.sectors == 8 and d.path is None and not d.readonly
    assert d.read(7, 1) == b"\x5a" * 512 and d.read(0, 0) == b""
    for lba, n in [(8, 1), (7, 2), (-1, 1), (0, -1), (1 << 62, 1), (0, 9)]:
        with pytest.raises(ValueError, match="outside the disk"):
            d.read(lba, n)
    with pytest.raises(ValueError, match="outside the disk"):
        d.write(7, bytes(1024))
    with pytest.raises(ValueError, match="whole number of sectors"):
        d.write(0, bytes(100))
    assert d.read(0, 8)[:-512] == bytes(7 * 512)          # nothing was half written


@pytest.mark.parametrize("size", [0, -512, 511, 513, 1 << 60])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="sectors"):
        Disk.memory(size)


def test_file_disk_writes_reach_the_file(tmp_path):
    path = _image(tmp_path)
    d = Disk.open(path)
    d.write(3, b"\x11" * 512)
    d.flush()
    assert d.path == path and d.sectors == 128
    with open(path, "rb") as f:
        f.seek(3 * 512)
        assert f.read(512) == b"\x11" * 512


def test_readonly_disk_refuses_writes(tmp_path):
    path = _image(tmp_path, fill=7)
    d = Disk.open(path, readonly=True)
    with pytest.raises(PermissionError):
        d.write(0, bytes(512))
    assert d.read(0, 1) == b"\x07" * 512
    assert not d.view(0, 1).flags.writeable


@pytest.mark.parametrize("kind", ["missing", "directory", "odd", "empty"])
def test_bad_files_are_refused(tmp_path, kind):
    path = tmp_path / "x"
    if kind == "directory":
        path.mkdir()
    elif kind == "odd":
        path.write_bytes(bytes(1000))
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="^disk "):
        Disk.open(str(path))


def test_create_refuses_an_existing_file(tmp_path):
    path = _image(tmp_path)
    with pytest.raises(ValueError, match="File exists"):
        Disk.create(path, 1 << 20)
    assert os.path.getsize(path) == 64 << 10


# ------------------------------------------------------------------ the machine
def test_machine_disks_and_attach(tmp_path):
    m = kjcore.Machine(16 * MiB, disks=[4096, _image(tmp_path)])
    assert [d.sectors for d in m.disks] == [8, 128] and m.ata is not None
    with pytest.raises(ValueError, match="at most 2 disks"):
        m.attach_disk(4096)
    with pytest.raises(TypeError):
        kjcore.Machine(16 * MiB, disks=[object()])
    assert kjcore.Machine(16 * MiB).ata is None


# ------------------------------------------------------------------ persistence
def test_save_keeps_disks_by_reference(tmp_path):
    img = _image(tmp_path, size=4 * MiB, fill=0x33)
    m = kjcore.Machine(16 * MiB, disks=[img])
    m.attach_disk(_image(tmp_path, "ro.img"), readonly=True)
    m.disks[0].write(1, b"\x44" * 512)
    path = str(tmp_path / "m")
    m.save(path)
    stored = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    assert stored < 16 * MiB + 1 * MiB                     # RAM and state, no disk copy
    m2 = kjcore.Machine.open(path)
    assert [(d.path, d.readonly) for d in m2.disks] == [(img, False),
                                                        (str(tmp_path / "ro.img"), True)]
    assert m2.disks[0].read(1, 1) == b"\x44" * 512        # the file itself was written
    m2.disks[0].write(2, b"\x55" * 512)
    m2.disks[0].flush()
    assert Disk.open(img).read(2, 1) == b"\x55" * 512


def test_in_memory_disks_are_not_saved(tmp_path):
    m = kjcore.Machine(16 * MiB, disks=[4096])
    with pytest.raises(ValueError, match="in-memory disk"):
        m.save(str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m")


def _edit_disks(path, disks):
    name = os.path.join(path, "machine.json")
    with open(name) as f:
        meta = json.load(f)
    meta["disks"] = disks
    meta["meta_sha256"] = store._body_digest(meta)
    with open(name, "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("edit", [
    lambda img: [{"path": img + ".gone", "readonly": False, "sectors": 128}],
    lambda img: [{"path": os.path.dirname(img), "readonly": False, "sectors": 128}],
    lambda img: [{"path": "d.img", "readonly": False, "sectors": 128}],
    lambda img: [{"path": img, "readonly": False, "sectors": 129}],
    lambda img: [{"path": img, "readonly": "no", "sectors": 128}],
    lambda img: [{"path": img, "readonly": False, "sectors": 128, "extra": 1}],
    lambda img: [{"path": img + "\0x", "readonly": False, "sectors": 128}],
    lambda img: [img],
    lambda img: {"path": img},
    lambda img: [{"path": img, "readonly": False, "sectors": 128}] * 3,
    lambda img: [{"path": "/dev/zero", "readonly": True, "sectors": 128}],
    lambda img: [{"path": os.path.join(os.path.dirname(img), "m", "ram-1.bin"),
                  "readonly": False, "sectors": 32768}],
])
def test_hostile_disk_entries_are_one_damaged_line(tmp_path, edit):
    img = _image(tmp_path)
    path = str(tmp_path / "m")
    kjcore.Machine(16 * MiB, disks=[img]).save(path)
    _edit_disks(path, edit(img))
    with pytest.raises(DamagedMachineFile) as e:
        kjcore.Machine.open(path)
    assert "\n" not in str(e.value) and "machine.json" in str(e.value)


def test_a_changed_disk_file_is_noticed(tmp_path):
    img = _image(tmp_path)
    path = str(tmp_path / "m")
    kjcore.Machine(16 * MiB, disks=[img]).save(path)
    os.truncate(img, 32 << 10)
    with pytest.raises(DamagedMachineFile, match="64 sectors, the machine was saved with 128"):
        kjcore.Machine.open(path)


def test_disk_reference_round_trip(tmp_path):
    img = _image(tmp_path)
    d = disk_from_reference({"path": img, "readonly": True, "sectors": 128}, "/nonexistent")
    assert d.readonly and d.sectors == 128


def test_a_disk_inside_the_machine_directory_is_not_saved(tmp_path):
    path = tmp_path / "m"
    kjcore.Machine(16 * MiB).save(str(path))
    m = kjcore.Machine.open(str(path))
    m.attach_disk(_image(path, "inside.img"))
    with pytest.raises(ValueError, match="inside the machine directory"):
        m.save(str(path))
    assert kjcore.Machine.open(str(path)).disks == []


# ------------------------------------------------------------------ the CLI
def test_cli_machine_new_with_disks_and_attach(tmp_path, capsys):
    path, new_img, old_img = str(tmp_path / "m"), str(tmp_path / "n.img"), _image(tmp_path)
    assert cli.main(["machine", "new", path, "--ram", "16M", "--disk", new_img + ":1M"]) == 0
    assert os.path.getsize(new_img) == MiB
    assert cli.main(["machine", "attach", path, old_img, "--readonly"]) == 0
    assert "as disk 1: 64K, read-only" in capsys.readouterr().out
    m = store.open_machine(path)
    assert [(d.path, d.sectors, d.readonly) for d in m.disks] == [(new_img, 2048, False),
                                                                  (old_img, 128, True)]
    assert cli.main(["machine", "attach", path, old_img]) == 1
    assert "at most 2 disks" in capsys.readouterr().err


def test_cli_machine_new_disk_errors_leave_nothing(tmp_path, capsys):
    path, made = str(tmp_path / "m"), str(tmp_path / "made.img")
    assert cli.main(["machine", "new", path, "--ram", "16M", "--disk", made + ":1M",
                     "--disk", str(tmp_path / "missing.img")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kjcore: error: disk ") and err.count("\n") == 1
    assert not os.path.exists(made) and not os.path.exists(path)
    assert cli.main(["machine", "new", path, "--ram", "16M", "--disk", made + ":1000"]) == 1
    assert "512-byte sectors" in capsys.readouterr().err
    assert cli.main(["machine", "attach", str(tmp_path / "none"), made]) == 1


def test_cli_attach_keeps_the_machine_when_the_file_is_bad(tmp_path, capsys):
    path = str(tmp_path / "m")
    assert cli.main(["machine", "new", path, "--ram", "16M"]) == 0
    bad = tmp_path / "bad.img"
    bad.write_bytes(bytes(100))
    assert cli.main(["machine", "attach", path, str(bad)]) == 1
    assert "512-byte sectors" in capsys.readouterr().err
    assert store.open_machine(path).disks == []
    np.testing.assert_equal(len(os.listdir(path)), 4)
    inside = _image(tmp_path / "m", "inside.img")
    assert cli.main(["machine", "attach", path, inside]) == 1
    assert capsys.readouterr().err.endswith("inside the machine directory\n")
    assert store.open_machine(path).disks == []


def test_cli_attach_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli._parser().parse_args(["machine", "attach", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--readonly" in out and "FILE" in out and "``" not in out
