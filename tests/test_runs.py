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
    assert not loaded and path.is_file() and [p.name for p in path.parent.iterdir()] == ["a--fit.pt"]
    again, loaded = saved_stage(path, compute)
    assert loaded and calls == [1] and torch.equal(again["w"], first["w"]) and again["note"] == "fitted"
    unsaved, loaded = saved_stage(None, compute)  # no path: computed, nothing saved
    assert not loaded and torch.equal(unsaved["w"], first["w"])
    assert calls == [1, 1] and len(list(path.parent.iterdir())) == 1


def test_saved_stage_leaves_nothing_when_the_computation_fails(tmp_path):
    from vlmheads.runs import saved_stage

    def fail():
        raise KeyboardInterrupt

    try:
        saved_stage(tmp_path / "s" / "x.pt", fail)
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "s").exists()
