import json

import pytest

from vlmheads.runs import RunRecord, new_run_dir


def test_run_dirs_are_never_reused(tmp_path):
    a = new_run_dir("organism", "eval organism", root=tmp_path)
    b = new_run_dir("organism", "eval organism", root=tmp_path)
    assert a != b and a.exists() and b.exists()
    assert a.parent == tmp_path / "organism"


def test_out_with_files_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("finished work")
    with pytest.raises(FileExistsError, match="never overwritten"):
        new_run_dir("organism", "x", out=tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "finished work"
    assert new_run_dir("organism", "x", out=tmp_path / "new") == tmp_path / "new"


def test_run_record_writes_config_and_metadata_even_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with RunRecord(tmp_path, "test", {"alpha": 1}, argv=["--x"], seed=5, model={"name": "m"}):
            raise RuntimeError("boom")
    assert json.loads((tmp_path / "config.json").read_text()) == {"alpha": 1}
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["seed"] == 5 and meta["model"] == {"name": "m"}
    assert meta["status"].startswith("failed: RuntimeError")
    assert {"git", "versions", "argv", "started", "finished", "timings"} <= set(meta)
    assert meta["versions"]["torch"] and meta["versions"]["transformers"]


def test_saved_stage_computes_once_then_loads(tmp_path):
    import torch

    from vlmheads.runs import saved_stage

    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(3), "note": "fitted"}

    path = tmp_path / "stages" / "a--fit.pt"
    first, loaded = saved_stage(path, compute)
    assert not loaded and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["a--fit.pt", "a--fit.pt.sha256"]
    again, loaded = saved_stage(path, compute)
    assert loaded and calls == [1] and torch.equal(again["w"], first["w"]) and again["note"] == "fitted"
    unsaved, loaded = saved_stage(None, compute)  # no path: computed, nothing saved
    assert not loaded and torch.equal(unsaved["w"], first["w"])
    assert calls == [1, 1] and len(list(path.parent.iterdir())) == 2


@pytest.mark.parametrize("damage,why", [
    ("flip", "does not match its checksum"),
    ("cut", "is cut short or grown"),
    ("no-checksum", "has no checksum"),
    ("foreign", "was saved by a run with another config"),
    ("other-code", "was computed by another version of the code (vlmheads source c1; this one is c2)"),
    ("bad-checksum-file", "a--fit.pt.sha256 is unreadable"),
])
def test_a_damaged_or_foreign_stage_is_recomputed_never_trusted(tmp_path, damage, why):
    """A stage whose bytes changed (one flipped byte in a tensor loads fine with torch and gives other
    numbers), cut short, without its checksum, saved under another config or by another version of the
    code, or with a broken checksum file is recomputed, and the log names it."""
    import torch

    from vlmheads.runs import check_path, saved_stage

    path = tmp_path / "stages" / "a--fit.pt"
    saved_stage(path, lambda: {"w": torch.zeros(256)}, fingerprint="abc", code="c1")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        at = data.rindex(bytes(64)) + 3  # inside the tensor's zero bytes: torch.load still reads it
        data[at] ^= 0x40
        path.write_bytes(bytes(data))
        assert torch.load(path)["w"].abs().sum() > 0  # the silent wrong result this guards against
    elif damage == "cut":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "no-checksum":
        check_path(path).unlink()
    elif damage == "bad-checksum-file":
        check_path(path).write_text("{")
    logged = []
    fingerprint, code = "xyz" if damage == "foreign" else "abc", "c2" if damage == "other-code" else "c1"
    value, loaded = saved_stage(path, lambda: {"w": torch.ones(256)}, fingerprint=fingerprint, log=logged.append,
                                code=code)
    assert not loaded and torch.equal(value["w"], torch.ones(256))
    assert len(logged) == 1 and logged[0].startswith("warning: stage stages/a--fit.pt not used: ") and why in logged[0]
    again, loaded = saved_stage(path, lambda: None, fingerprint=fingerprint, code=code)
    assert loaded and torch.equal(again["w"], torch.ones(256))  # the recomputed stage is saved, checksummed


def test_saved_stage_leaves_nothing_when_the_computation_fails(tmp_path):
    from vlmheads.runs import saved_stage

    def fail():
        raise KeyboardInterrupt

    try:
        saved_stage(tmp_path / "s" / "x.pt", fail)
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "s").exists()


def test_a_configs_rendering_is_parsed_once():
    from vlmheads.locate import LocateConfig
    from vlmheads.world.scenes import Rendering

    config = LocateConfig(rendering={"cell": 16, "contrast": 0.4})
    assert config.scene_rendering == Rendering.from_dict({"cell": 16, "contrast": 0.4})
    assert config.scene_rendering is config.scene_rendering  # derived once, kept with the config
    assert config == LocateConfig(rendering={"cell": 16, "contrast": 0.4})  # not a field: configs compare as before
    assert LocateConfig().scene_rendering == Rendering.from_dict(None)
