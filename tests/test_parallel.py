"""Data parallelism (vlmheads.parallel): the world, the shares, and the commands under torchrun with two
gloo processes on CPU giving byte-identical outputs to one process; failing ranks; resume from 2 to 1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heads.intervene import main as intervene_main
from heads.locate import main as locate_main
from vlmheads import parallel
from vlmheads.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("parallel_worker.py")
ONE_THREAD = ["--threads", "1"]  # every process alike: the thread count can change the last bits


def test_shares_are_strided_cover_every_item_once_and_may_be_empty():
    shares = [parallel.World(rank=r, size=3).share(7) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert [parallel.World(rank=r, size=3).share(2) for r in range(3)] == [[0], [1], []]  # rank 2 idle
    assert parallel.World().share(4) == [0, 1, 2, 3]


def test_the_world_comes_from_the_launchers_environment():
    assert parallel.from_environment({}) == parallel.World()
    torchrun = parallel.from_environment({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (torchrun.rank, torchrun.size, torchrun.local_rank, torchrun.local_size, torchrun.launcher) == \
        (1, 4, 1, 2, "torchrun")
    assert parallel.from_environment({"RANK": "0", "WORLD_SIZE": "2", "ACCELERATE_MIXED_PRECISION": "no"}).launcher \
        == "accelerate"
    assert parallel.from_environment({"VLMHEADS_COLLECTIVE_TIMEOUT": "20"}).timeout_s == 20
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"},
                {"VLMHEADS_COLLECTIVE_TIMEOUT": "0"}):
        with pytest.raises(InputError):
            parallel.from_environment(bad)


def test_in_one_process_a_map_is_a_plain_loop_and_errors_are_raised_as_they_are():
    assert parallel.map_batches(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6]
    assert parallel.map_batches(lambda x: parallel.map_batches(lambda y: y + x, [1, 2]), [10, 20]) == \
        [[11, 12], [21, 22]]
    with pytest.raises(KeyError):
        parallel.map_batches(lambda x: {}[x], [1])
    assert parallel.gather(5) == [5] and parallel.broadcast("a") == "a"


def test_each_rank_of_a_node_spreads_its_model_over_its_own_block_of_gpus():
    assert [parallel.gpu_block(r, 4, 8) for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [parallel.gpu_block(r, 3, 8) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]  # 6 and 7 unused
    with pytest.raises(InputError, match="4 processes on this node but 2 visible GPU"):
        parallel.gpu_block(0, 4, 2)
    previous = parallel.use(parallel.World(rank=3, size=4, local_rank=1, local_size=2))
    try:
        caps = parallel.rank_max_memory({2: "70GiB", 0: "10GiB", "cpu": "100GiB"}, 4, lambda i: 80 << 30)
        assert caps == {2: "70GiB", 3: 80 << 30, "cpu": "100GiB"}  # GPUs 2 and 3; the cap given for 2 kept
    finally:
        parallel.use(previous)
    assert parallel.rank_max_memory(None, 4, lambda i: 1) is None  # one process: the device map's own choice


def test_a_command_that_runs_as_one_process_refuses_a_launcher(monkeypatch, capsys):
    from heads.organism import main as organism_main

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert organism_main(["eval", "--n", "4"]) == 2
    assert "runs as one process, and this is process 1 of 2 (torchrun)" in capsys.readouterr().err


def torchrun(args: list[str], plant: str | None = None, command: str = "locate", nproc: int = 2,
             timeout: float = 400) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nproc -m heads.COMMAND -- ARGS`` (or the planted worker)."""
    target = [str(WORKER), plant, command] if plant else ["-m", f"heads.{command}"]
    env = {**os.environ, "VLMHEADS_COLLECTIVE_TIMEOUT": "120", "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), *target, "--", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


LOCATE_OUTPUTS = ("scores.csv", "heads.json", "samples.jsonl")
CASES = {
    # every default method and direct logit attribution; batches of 2, 2 and 1: rank 0 takes two, rank 1 one
    "zero, every method": ["--methods", "ablation,patching,attribution,probe,attention,dla",
                           "--n", "5", "--batch-size", "2"],
    # redundancy's random head sets, summed batch by batch (~128 passes a batch: the smallest batches)
    "redundancy": ["--methods", "redundancy", "--select-by", "redundancy", "--dataset", "organism:controlled",
                   "--function", "relational", "--n", "4", "--batch-size", "2"],
    # one batch per function: rank 1 is idle in every map; the mean over all functions broadcast by the gather
    "mean, screen and verify, idle rank": ["--methods", "ablation", "--ablation", "mean", "--screen", "attribution",
                                           "--verify", "8", "--n", "6", "--batch-size", "8"],
    # resample borrows a neighbour row of the same batch: batches stay whole
    "resample, prior target": ["--target", "prior", "--methods", "ablation,prior", "--ablation", "resample",
                               "--dataset", "organism:controlled", "--n", "24", "--batch-size", "12"],
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES))
def test_locate_with_two_processes_writes_what_one_process_writes(tmp_path, case):
    argv = ["--function", "spatial", "--random-draws", "2", *ONE_THREAD, *CASES[case]]
    if "--function" in CASES[case] or "--target" in CASES[case]:
        argv = argv[2:]  # the case's own function (--target prior picks relational)
    assert locate_main([*argv, "--out", str(tmp_path / "one")]) == 0
    done = torchrun([*argv, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    for name in LOCATE_OUTPUTS:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    meta = __import__("json").loads((tmp_path / "two" / "metadata.json").read_text())
    assert meta["parallel"]["size"] == 2 and [r["rank"] for r in meta["parallel"]["ranks"]] == [0, 1]
    assert all(r["threads"] == 1 for r in meta["parallel"]["ranks"])
    assert done.stdout.count("run directory:") == 1  # rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # one run directory, rank 0's


@pytest.mark.e2e
def test_flow_with_two_processes_writes_what_one_process_writes(tmp_path):
    argv = ["--function", "spatial", "--n", "6", "--batch-size", "4", "--window", "4", *ONE_THREAD]
    from heads.flow import main as flow_main

    assert flow_main([*argv, "--out", str(tmp_path / "one")]) == 0
    done = torchrun([*argv, "--out", str(tmp_path / "two")], command="flow")
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").iterdir() if p.suffix in (".csv", ".html"))
    assert "knockout.csv" in names and "rollout.csv" in names and "probes.csv" in names
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


@pytest.mark.e2e
def test_intervene_sweep_with_two_processes_writes_what_one_process_writes(tmp_path):
    """Head-free methods (no locate run to make first): the sweep over validation, AdaptVis's shared-cache path,
    the random-attention and blind controls; batches of 3, 3 and 2 (uneven)."""
    argv = ["--dataset", "organism:controlled", "--n", "8", "--batch-size", "3", "--method", "none",
            "--method", "scalingvis", "--method", "adaptvis", "--sweep", "--random-attention", "1", "--blind",
            *ONE_THREAD]
    assert intervene_main([*argv, "--out", str(tmp_path / "one")]) == 0
    done = torchrun([*argv, "--out", str(tmp_path / "two")], command="intervene")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("results.csv", "interventions.json", "samples.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    rows = (tmp_path / "one" / "results.csv").read_text()
    assert "scalingvis (random attention)" in rows and "none (blind)" in rows


FAILING = ["--function", "spatial", "--n", "6", "--batch-size", "4", "--methods", "ablation", *ONE_THREAD]


@pytest.mark.e2e
def test_a_rank_that_fails_in_its_share_ends_the_job_at_once_with_its_message(tmp_path):
    t0 = time.time()
    done = torchrun([*FAILING, "--out", str(tmp_path / "run")], plant="raise-in-share")
    assert done.returncode != 0 and time.time() - t0 < 90
    assert "error: rank 1 failed in head sweep: ValueError: planted failure on rank 1" in done.stderr
    assert "Traceback" in done.stderr and "planted failure on rank 1" in done.stderr  # rank 1's own, with its traceback
    meta = __import__("json").loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["status"].startswith("failed: RankFailed: rank 1 failed in head sweep")


@pytest.mark.e2e
def test_a_rank_that_dies_ends_the_others_in_seconds(tmp_path):
    """Under torchrun a rank that exits without a word is noticed by the launcher, which stops the others and
    names the rank and its exit code (the shards' own heartbeat is tested with the file transport)."""
    t0 = time.time()
    done = torchrun([*FAILING, "--out", str(tmp_path / "run")], plant="die")
    assert done.returncode != 0 and time.time() - t0 < 90, done.stderr[-2000:]
    assert "exitcode: 3) local_rank: 1" in done.stderr


@pytest.mark.e2e
def test_a_run_cut_with_two_processes_resumes_with_one_to_the_uninterrupted_outputs(tmp_path, capsys):
    argv = ["--function", "spatial", "--n", "6", "--batch-size", "4", "--methods", "ablation,probe",
            "--random-draws", "2", *ONE_THREAD]
    assert locate_main([*argv, "--out", str(tmp_path / "whole")]) == 0
    run = tmp_path / "cut"
    done = torchrun([*argv, "--out", str(run)], plant="ctrl-c-stage-3")
    assert done.returncode != 0
    assert len(list((run / "stages").glob("*.pt"))) == 2  # two ablation stages finished, saved by rank 0 alone
    assert __import__("json").loads((run / "metadata.json").read_text())["status"] == "interrupted"
    capsys.readouterr()
    assert locate_main(["--resume", str(run)]) == 0
    assert "resumed: 2 of" in capsys.readouterr().out
    for name in LOCATE_OUTPUTS:
        if name == "heads.json":
            continue  # it records the resumed stages
        assert (run / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_shards_meet_through_files_and_a_shard_that_stopped_or_never_came_is_named(tmp_path):
    """Two shards in threads of this process gather through the folder; a shard whose heartbeat is old is
    reported at once; one that never started is waited for up to the timeout; a reused shard is refused."""
    import threading

    worlds = [parallel.World(rank=r, size=2, launcher="shards", timeout_s=30, shard_dir=str(tmp_path / "a"))
              for r in range(2)]
    files = [parallel._Files(w) for w in worlds]
    got = {}

    def run(r):
        got[r] = [files[r].gather({"rank": r, "step": s}, f"step {s}") for s in range(3)]

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join(20) for t in threads]
    assert got[0] == got[1] == [[{"rank": 0, "step": s}, {"rank": 1, "step": s}] for s in range(3)]
    assert sorted(p.name for p in (tmp_path / "a").glob("*.pt")) == ["2.0.pt", "2.1.pt"]  # read ones are gone
    for f in files:
        f.close()
    with pytest.raises(InputError, match="already ran there"):
        parallel._Files(worlds[0])

    lonely = parallel._Files(parallel.World(rank=0, size=2, launcher="shards", timeout_s=0.3,
                                            shard_dir=str(tmp_path / "b")))
    t0 = time.time()
    with pytest.raises(parallel.CollectiveFailed, match="waited 0 s for shard 1 .not started"):
        lonely.gather(1, "step one")
    beat = tmp_path / "b" / "alive.1"
    beat.write_text("0")
    os.utime(beat, (time.time() - 3600, time.time() - 3600))
    with pytest.raises(parallel.CollectiveFailed, match="step two: shard 1 stopped .no heartbeat"):
        lonely.gather(2, "step two")
    assert time.time() - t0 < 5
    lonely.close()


def shards(args: list[str], n: int = 2, command: str = "locate", timeout: float = 400) -> list:
    """``python -m heads.COMMAND ARGS --shard I/n`` for every I, all at once (a job array)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    procs = [subprocess.Popen([sys.executable, "-m", f"heads.{command}", *args, "--shard", f"{i}/{n}"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    return [(p.wait(timeout), *p.communicate()) for p in procs]


@pytest.mark.e2e
def test_two_shards_of_a_job_array_write_what_one_process_writes(tmp_path):
    argv = ["--function", "spatial", "--random-draws", "2", *ONE_THREAD, *CASES["mean, screen and verify, idle rank"]]
    argv[-2:] = ["--batch-size", "3"]  # two batches per function: both shards compute
    assert locate_main([*argv, "--out", str(tmp_path / "one")]) == 0
    done = shards([*argv, "--out", str(tmp_path / "two")])
    assert [code for code, _, _ in done] == [0, 0], done[0][2][-2000:] + done[1][2][-2000:]
    for name in LOCATE_OUTPUTS:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert "wrote" in done[0][1] and done[1][1] == ""  # shard 0 alone reports
    meta = __import__("json").loads((tmp_path / "two" / "metadata.json").read_text())
    assert meta["parallel"]["launcher"] == "shards" and meta["parallel"]["size"] == 2
    again = shards([*argv, "--out", str(tmp_path / "two")], n=2)  # the same attempt once more
    assert {code for code, _, _ in again} == {2}
    assert "already ran there; give every shard of a new attempt another --shard-job" in again[0][2]


@pytest.mark.e2e
def test_shards_started_with_other_options_are_refused(tmp_path):
    base = ["--function", "spatial", "--n", "2", "--methods", "ablation", *ONE_THREAD, "--out", str(tmp_path / "r")]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    procs = [subprocess.Popen([sys.executable, "-m", "heads.locate", *base, "--seed", str(i), "--shard", f"{i}/2"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    done = [(p.wait(300), p.communicate()[1]) for p in procs]
    assert [code for code, _ in done] == [2, 2]
    assert "error: rank 1 runs another options (config.json) than rank 0" in done[0][1]


@pytest.mark.parametrize("argv, message", [
    (["--shard", "0/2"], "--shard 0/2 needs --out RUN_DIR"),
    (["--shard", "2/2", "--out", "x"], "--shard 2/2: I must be 0..N-1"),
    (["--shard", "one", "--out", "x"], "write it as I/N"),
    (["--shard-job", "7"], "--shard-job names one attempt of a sharded run"),
])
def test_bad_shard_options_are_one_line(argv, message, capsys):
    assert locate_main(["--n", "2", *argv]) == 2
    assert message in capsys.readouterr().err
