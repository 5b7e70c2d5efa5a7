"""Issue 11 items 1-5: --strategy, MirroredStrategy on two logical CPU devices, two workers on 127.0.0.1 (identical
weights, the chief's run complete, no worker folder left, a killed worker -> one clear error, --resume finishes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from imgclass_cli.cli import app
from imgclass_cli.run import distribute
from tests.conftest import commands_argv, make_class_folders, split_commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--arch", "simple-cnn", "--image-size", "32", "--augment", "none", "--batch-size", "8", "--quiet",
        "--learning-rate", "0.003"]
TINY_12 = [*TINY[:TINY.index("--batch-size")], *TINY[TINY.index("--batch-size") + 2:], "--batch-size", "12"]
RUN_FILES = ("model.keras", "config.json", "labels.json", "history.csv", "metrics.json", "split.csv")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


# --- no TensorFlow: the choice and its errors -------------------------------------------------------------


def test_auto_picks_multiworker_only_for_a_cluster():
    two = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}})
    one = json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}})
    assert distribute.check("auto", {"TF_CONFIG": two}) == distribute.Strategy.multiworker
    assert distribute.check("auto", {"TF_CONFIG": one}) == distribute.Strategy.auto  # then GPUs decide
    assert distribute.check("auto", {}) == distribute.Strategy.auto
    c = distribute.cluster_from_env({"TF_CONFIG": two})
    assert (c.tasks, c.index, c.is_chief) == (2, 1, False)
    with_chief = json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "chief", "index": 0}})
    assert distribute.cluster_from_env({"TF_CONFIG": with_chief}).is_chief


@pytest.mark.parametrize("tf_config, message", [
    (None, "TF_CONFIG must name a cluster"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 5}}', '"task" must name this'),
])
def test_multiworker_without_a_usable_tf_config_fails_fast(runner, data_dir, tmp_path, tf_config, message):
    env = {"TF_CONFIG": tf_config} if tf_config else {}
    if tf_config is None:
        os.environ.pop("TF_CONFIG", None)
    result = runner.invoke(app, ["train", data_dir, "--strategy", "multiworker", "--out", str(tmp_path / "r")],
                           env=env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "see docs/scaling.md" in result.stderr
    assert not os.path.exists(tmp_path / "r")


def test_each_worker_checks_and_trains_its_own_shard_and_every_file_is_in_exactly_one(tmp_path):
    """Two workers simulated in one process (the all-reduce is a plain sum): shards are disjoint and cover the
    split; a bad file found by one worker leaves both lists, so both train the same files."""
    from imgclass_cli.data.folders import Dataset, Sample

    def data():
        return Dataset(str(tmp_path), ["a", "b"], {"train": [Sample(f"t{i}", i % 2) for i in range(9)],
                                                   "val": [Sample(f"v{i}", i % 2) for i in range(5)]})

    full = [data(), data()]
    workers = [distribute.Distribution(distribute.Strategy.multiworker, None, 2, 8, distribute.Cluster(2, w, f"worker {w}"))
               for w in range(2)]
    locals_ = []
    for w, d in zip(workers, full):
        local = w.local(d)
        assert [s.path for s in local.splits["val"]] == [f"v{i}" for i in range(w.worker, 5, 2)]
        # worker 1 finds t3 and v1 unreadable (what verify.screen would drop)
        local.splits = {k: [s for s in v if s.path not in ("t3", "v1")] for k, v in local.splits.items()}
        locals_.append(local)
    contributions = []
    for w in workers:
        w.all_sum = lambda a, _c=contributions: (_c.append(a), a)[1]
    for w, d, local in zip(workers, full, locals_):
        w.screened(d, local)  # records each worker's flags
    total = contributions[0] + contributions[1]
    screened = []
    for w, d, local in zip(workers, full, locals_):
        w.all_sum = lambda a, _t=total: _t
        screened.append(w.screened(d, local))
    for d in screened:
        assert [s.path for s in d.splits["train"]] == [f"t{i}" for i in range(9) if i != 3]
        assert [s.path for s in d.splits["val"]] == ["v0", "v2", "v3", "v4"]
    shards = [w.shard(d) for w, d in zip(workers, screened)]
    for split in ("train", "val"):
        paths = [s.path for sh in shards for s in sh.splits[split]]
        assert sorted(paths) == sorted(s.path for s in screened[0].splits[split])  # each file exactly once
    rows = np.concatenate([w.positions("val", 4) for w in workers])
    assert sorted(rows) == [0, 1, 2, 3]
    for w, sh in zip(workers, shards):
        assert [screened[0].splits["val"][r].path for r in w.positions("val", 4)] == [s.path for s in sh.splits["val"]]


# --- MirroredStrategy on two logical CPU devices ---------------------------------------------------------

DEVICES = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * {n})
"""


@pytest.fixture(scope="module")
def three_replicas(tmp_path_factory):
    """One process with three logical CPU devices (set before TensorFlow starts: a process of its own) runs, in
    turn: a mirrored train of 2 epochs at a global batch of 12, train's automatic batch, and the same batch given as
    --batch-size (one TensorFlow start for the three). (data, mirrored run, the automatic run, (exit code, stderr) of
    each command.)"""
    root = tmp_path_factory.mktemp("replicas")
    data = make_class_folders(root / "data", per_class=12, seed=3)
    mirrored, auto = str(root / "mirrored"), str(root / "auto")
    args = ["train", data, "--arch", "simple-cnn", "--image-size", "32", "--strategy", "mirrored"]
    commands = [["train", data, *TINY_12, "--epochs", "2", "--val", "0.25", "--out", mirrored,
                 "--strategy", "mirrored"],
                [*args, "--epochs", "1", "--out", auto],
                [*args, "--epochs", "1", "--batch-size", "16", "--out", str(root / "refused")]]
    proc = subprocess.run(commands_argv(commands, setup=DEVICES.format(n=3)), env=_env(), capture_output=True,
                          text=True, timeout=900, check=False)  # 300 s a command
    assert proc.returncode == 0, proc.stderr
    return data, mirrored, auto, split_commands(proc.stderr, 3)


@pytest.mark.slow
def test_mirrored_on_three_cpu_devices_matches_the_default_strategy(three_replicas, tmp_path, runner):
    """Same global batch and seed: the three replicas' gradients are averaged, so the run follows the default one.
    Not bit-identical: each replica's BatchNorm normalises its own third of a batch. Tolerance: 0.05 on val accuracy
    and 0.1 on val loss after two epochs."""
    data, mirrored, _, ((code, err), _, _) = three_replicas
    assert code == 0, err
    default = str(tmp_path / "default")
    result = runner.invoke(app, ["train", data, *TINY_12, "--epochs", "2", "--val", "0.25",
                                 "--out", default, "--strategy", "default"])  # in this process: one start less
    assert result.exit_code == 0, result.output
    runs = {}
    for strategy, out in (("default", default), ("mirrored", mirrored)):
        last = open(os.path.join(out, "history.csv")).read().splitlines()
        runs[strategy] = (json.load(open(os.path.join(out, "config.json")))["distribute"],
                          dict(zip(last[0].split(","), map(float, last[-1].split(",")))))
    assert runs["mirrored"][0]["replicas"] == 3 and runs["mirrored"][0]["per_replica_batch"] == 4
    assert runs["mirrored"][0]["training_loop"] == "imgclass"
    assert runs["default"][0]["replicas"] == 1 and runs["default"][0]["training_loop"] == "keras fit"
    a, b = runs["default"][1], runs["mirrored"][1]
    assert a["epoch"] == b["epoch"] == 2
    assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 0.05, (a, b)
    assert abs(a["val_loss"] - b["val_loss"]) <= 0.1, (a, b)


@pytest.mark.slow
def test_the_default_batch_is_rounded_up_to_a_multiple_of_the_replicas_and_a_given_one_is_refused(three_replicas):
    """Three replicas: train's automatic batch (16 for 30 training images) becomes 18, said and recorded; the same
    16 given as --batch-size is an error (exit 2) that names it, before any work."""
    _, _, out, (_, (code, err), (refused, refused_err)) = three_replicas
    assert code == 0, err
    assert "batch size 18 (16 rounded up to a multiple of the 3 replicas; the default for 30 training images" in err
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["options"]["batch_size"] == 18 and config["distribute"]["per_replica_batch"] == 6
    assert refused == 2 and "--batch-size 16: the global batch must be a multiple of the 3 replicas" in refused_err


# --- two workers on 127.0.0.1 ------------------------------------------------------------------------------

# Runs the CLI and, when it saves the run (chief or worker), taps the final weights into $TAP: the worker's own
# folder is gone by the time the test looks.
WORKER = """
import os, sys
import numpy as np
from imgclass_cli.run import training
save = training._save_run
def tap(out, force, config, data, image_size, model, *rest):
    np.savez(os.environ["TAP"], *model.get_weights())
    return save(out, force, config, data, image_size, model, *rest)
training._save_run = tap
from imgclass_cli.cli import main
sys.argv = ["imgclass", *sys.argv[1:]]
main()
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(tmp_path, script, args, tag) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for i in range(2):
        tmp = tmp_path / f"{tag}-tmp{i}"
        tmp.mkdir(exist_ok=True)
        env = _env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                   TMPDIR=str(tmp), TAP=str(tmp_path / f"{tag}-w{i}.npz"), IMGCLASS_COLLECTIVE_TIMEOUT="60")
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs, timeout=300) -> list[tuple[int, str]]:
    done = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append((p.returncode, err))
    return done


@pytest.mark.slow
def test_two_workers_train_one_run_survive_a_killed_worker_and_resume(tmp_path, runner):
    data = make_class_folders(tmp_path / "data", per_class=12, seed=3)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = str(tmp_path / "run")
    checkpoint = tmp_path / ".run.checkpoint" / "state.json"

    # 1. Kill worker 1 once the chief has checkpointed an epoch: the chief stops with one clear line.
    procs = _start_workers(tmp_path, script, ["train", data, *TINY, "--epochs", "4", "--out", out], "first")
    deadline = time.time() + 240
    while time.time() < deadline and procs[0].poll() is None:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    (chief_rc, chief_err), _ = _finish(procs)
    assert chief_rc == 1, chief_err
    lines = [line for line in chief_err.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: another worker stopped or cannot be reached"), chief_err
    assert f"continue by running on every worker: imgclass train {data} --resume {out}" in lines[-1]
    assert "Traceback" not in chief_err and not os.path.exists(out)
    done_epochs = json.loads(checkpoint.read_text())["epoch"]
    assert 1 <= done_epochs < 4

    # 2. --resume on both workers finishes the run from the last complete checkpoint.
    procs = _start_workers(tmp_path, script, ["train", data, "--resume", out, "--quiet"], "resumed")
    (rc0, err0), (rc1, err1) = _finish(procs)
    assert rc0 == 0 and rc1 == 0, err0 + err1
    for name in RUN_FILES:
        assert os.path.exists(os.path.join(out, name)), name
    assert not checkpoint.parent.exists()
    history = open(os.path.join(out, "history.csv")).read().splitlines()
    assert len(history) == 1 + 4
    # The worker wrote only its own temporary folder, and removed it.
    assert os.listdir(tmp_path / "resumed-tmp1") == []
    w0, w1 = np.load(tmp_path / "resumed-w0.npz"), np.load(tmp_path / "resumed-w1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k])
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["distribute"] == {"strategy": "multiworker", "replicas": 2, "workers": 2, "global_batch": 8,
                                    "per_replica_batch": 4, "learning_rate_scale": 1.0, "training_loop": "imgclass"}
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    # Each validation image counted once: the sum over the two workers' shards is the whole split.
    val = [r for r in open(os.path.join(out, "split.csv")).read().splitlines()[1:] if r.endswith(",val")]
    assert metrics["num_samples"] == len(val) > 0

    # 3. The same data in one process: validation metrics within tolerance (0.15 accuracy: one of 8 images).
    single = str(tmp_path / "single")
    result = runner.invoke(app, ["train", data, *TINY, "--epochs", "4", "--out", single, "--strategy", "default"])
    assert result.exit_code == 0, result.output
    reference = json.load(open(os.path.join(single, "metrics.json")))
    assert abs(reference["accuracy"] - metrics["accuracy"]) <= 0.15
