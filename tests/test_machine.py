"""CPU facts and the defaults they decide: float32 where the CPU has no fast half kernels, threads from
the free cores; both said and recorded."""

from __future__ import annotations

import json

import pytest
import torch

from vlmheads import machine
from vlmheads.machine import auto_threads, choose_threads, cpu_dtype, fast_half_on_cpu


@pytest.mark.parametrize("flags,bf16,fp16", [
    ({"avx2", "fma"}, False, False),  # the machine the 6x bf16 slowdown was measured on
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, True, False),  # AMX: bf16 5.8x faster than float32
    ({"avx512_fp16", "amx_fp16"}, False, True),
    ({"fp", "asimd", "bf16", "asimdhp"}, True, True),  # arm "Features"
])
def test_fast_half_kernels_are_read_from_the_cpu_flags(flags, bf16, fp16):
    assert fast_half_on_cpu(torch.bfloat16, flags) is bf16 and fast_half_on_cpu(torch.float16, flags) is fp16
    assert fast_half_on_cpu(torch.float32, flags)


def test_a_cpu_run_computes_a_bf16_checkpoint_in_float32_only_without_bf16_kernels():
    dtype, note = cpu_dtype(torch.bfloat16, {"avx2"})
    assert dtype == torch.float32 and note.startswith("dtype: float32, not the checkpoint's bfloat16")
    assert "--dtype bfloat16" in note
    assert cpu_dtype(torch.bfloat16, {"amx_bf16"}) == (None, None)
    assert cpu_dtype(torch.float32, set()) == (None, None) and cpu_dtype(None, set()) == (None, None)


@pytest.mark.parametrize("cores,load,threads", [(2, 0.05, 2), (2, 1.3, 1), (2, 0.62, 1), (16, 3.2, 13), (16, 40, 1),
                                                (4, 0.0, 4)])
def test_automatic_threads_are_the_free_cores(cores, load, threads):
    choice = auto_threads(cores, load)
    assert choice["threads"] == threads and choice["chosen_by"] == f"free cores: {cores} usable, load {load:.2f}"


def test_threads_asked_for_win_then_the_environment_then_the_free_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("VLMHEADS_THREADS", "2")
        assert choose_threads(1) == {"threads": 1, "chosen_by": "--threads"} and torch.get_num_threads() == 1
        assert choose_threads(None) == {"threads": 2, "chosen_by": "VLMHEADS_THREADS"}
        monkeypatch.setenv("VLMHEADS_THREADS", "many")
        with pytest.raises(ValueError, match="VLMHEADS_THREADS='many' is not a whole number"):
            choose_threads(None)
        monkeypatch.delenv("VLMHEADS_THREADS")
        monkeypatch.setattr(machine, "_AUTO", None)
        monkeypatch.setattr(machine, "auto_threads", lambda **kw: {"threads": 1, "chosen_by": "free cores: 2 usable"})
        assert choose_threads(None)["threads"] == 1 == torch.get_num_threads()
        monkeypatch.setattr(machine, "auto_threads", lambda **kw: {"threads": 2, "chosen_by": "changed"})
        assert choose_threads(None)["threads"] == 1  # decided once per process
        assert choose_threads(None, "accelerator")["chosen_by"] == "torch default (accelerator run)"
    finally:
        torch.set_num_threads(before)


def test_processes_of_a_data_parallel_job_share_the_free_cores(monkeypatch):
    from vlmheads import parallel

    assert machine.auto_threads(cores=2, load=0.0, processes=2)["threads"] == 1
    assert machine.auto_threads(cores=16, load=0.0, processes=8)["threads"] == 2
    assert machine.auto_threads(cores=16, load=8.0, processes=2)["threads"] == 4
    assert machine.auto_threads(cores=2, load=1.9, processes=2)["threads"] == 1  # never below one
    assert "shared by 8 processes" in machine.auto_threads(cores=16, load=0.0, processes=8)["chosen_by"]
    before = torch.get_num_threads()
    previous = parallel.use(parallel.World(rank=0, size=8, local_size=8))
    try:
        monkeypatch.setattr(machine, "usable_cores", lambda: 16)
        monkeypatch.delenv("VLMHEADS_THREADS", raising=False)
        assert machine.choose_threads(None, "cuda:0") == {
            "threads": 2, "chosen_by": "cuda:0 run: 16 cores shared by 8 processes on this node"}
    finally:
        parallel.use(previous)
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    """A tiny Qwen2-VL saved in bfloat16, as real VLM checkpoints are."""
    from vlmheads.testing import TINY_BUILDERS, tiny_processor

    where = tmp_path_factory.mktemp("bf16") / "tiny-qwen2-vl"
    model, _, _ = TINY_BUILDERS["qwen2_vl"](gqa=True)
    model.to(torch.bfloat16).save_pretrained(where)
    tiny_processor("qwen2_vl").save_pretrained(where)
    assert json.loads((where / "config.json").read_text())["dtype"] == "bfloat16"
    return where


def test_loading_a_bf16_checkpoint_on_a_cpu_without_bf16_kernels(bf16_checkpoint, monkeypatch):
    from vlmheads.models import load_model

    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2"}))
    slow = load_model(bf16_checkpoint)
    assert slow.dtype == torch.float32 and len(slow.notes) == 1 and "no avx512_bf16/amx_bf16" in slow.notes[0]
    assert slow.identity()["notes"] == list(slow.notes)
    for dtype in ("auto", "bfloat16"):  # asked for: kept, without a note
        kept = load_model(bf16_checkpoint, dtype=dtype)
        assert kept.dtype == torch.bfloat16 and kept.notes == ()
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    fast = load_model(bf16_checkpoint)
    assert fast.dtype == torch.bfloat16 and fast.notes == () and "notes" not in fast.identity()


@pytest.mark.e2e
def test_a_command_says_the_dtype_once_and_records_dtype_and_threads(bf16_checkpoint, tmp_path, capsys, monkeypatch):
    from heads.locate import main as locate_main

    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2"}))
    out = tmp_path / "run"
    assert locate_main(["--model", str(bf16_checkpoint), "--n", "8", "--methods", "ablation", "--random-draws", "1",
                        "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("dtype: float32, not the checkpoint's bfloat16") == 1
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model"]["dtype"] == "float32" and meta["threads"] == {"threads": 1, "chosen_by": "--threads"}
    assert json.loads((out / "config.json").read_text())["threads"] == 1


def test_a_resumed_run_keeps_the_thread_count_it_chose():
    """Another count can change the last bits of the scores (seen: 1 vs 2 threads, 6th decimal), so
    --resume of a run whose threads were chosen automatically uses the count it used."""
    from vlmheads.locate import LocateConfig
    from vlmheads.models.spec import ModelSpec

    chosen = ModelSpec.of(LocateConfig()).resumed({"threads": {"threads": 1, "chosen_by": "free cores: 2 usable"}})
    assert (chosen.threads, chosen.threads_reason) == (1, "the resumed run's")
    pinned = ModelSpec.of(LocateConfig(threads=2)).resumed({"threads": {"threads": 2, "chosen_by": "--threads"}})
    assert (pinned.threads, pinned.threads_reason) == (2, "--threads")
    old = ModelSpec.of(LocateConfig()).resumed({})  # a run made before threads were recorded
    assert old.threads is None
