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
