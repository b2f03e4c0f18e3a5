"""`ray job submit` against a real local head (127.0.0.1, token auth): a job that loses a worker, is stopped and is
submitted again; and cluster.yaml against Ray's own cluster-config schema."""

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    BIN,
    FOLDS,
    RUN_TIMEOUT,
    checkpoints,
    dashboard_get,
    registered,
    run_dir_of,
    same_model_metrics,
    settle,
)

REPO = Path(__file__).resolve().parents[1]


def job_client(address, what, job):
    """The job's status or its logs, from the dashboard's job REST API (what `ray job status/logs` call)."""
    body = dashboard_get(address, f"/api/jobs/{job}" + ("/logs" if what == "logs" else ""))
    return body["logs"] if what == "logs" else body["status"]


def wait_terminal(address, job, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job_client(address, "status", job)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job}: still {status} after {timeout} s")


def test_a_job_with_a_killed_worker_stopped_and_submitted_again_ends_like_an_undisturbed_run(
    ray_head, tiny_yaml, finished_run, tmp_path
):
    """The tiny run as a `ray job submit` job on the local head (conftest.ray_head: 127.0.0.1, token auth), with
    JSON-lines output, no baseline and no blend (the seed's pure ensemble), its two folds training at once, and
    three faults:
    1. SIGKILL one fold's training worker in the middle of epoch 2: Ray Train restarts it (cv.max_failures) from
       its epoch-1 checkpoint, and the fold finishes.
    2. SIGSTOP the other fold's worker once its epoch 1 is registered: a hung worker.
    3. `ray job stop` then: Ray ends the job's actors (fold controllers, workers) with its driver.
    The same job submitted again resumes: the finished fold is kept, the other continues from its checkpoint. The
    metrics equal the undisturbed run's, and the report records each fold's restarts. (A damaged latest checkpoint
    on resume: test_runner_parts and test_train.)"""
    storage = tmp_path / "runs"
    flags = ["--log-format", "json", "--no-baseline", "--cv.blend", "false"]
    ray, address = str(BIN / "ray"), ray_head

    def submit(job, *extra):
        cmd = [ray, "job", "submit", "--address", address, "--no-wait", "--submission-id", job,
               "--working-dir", str(REPO), "--", "python", "jobs/cv.py", "--config", str(tiny_yaml),
               "--cv.storage_path", str(storage), *flags, *extra]  # fmt: skip
        subprocess.run(cmd, capture_output=True, check=True, timeout=120)

    def events(job):  # the driver's JSON lines (the job's log also holds Ray's own lines on stderr)
        return [json.loads(line) for line in job_client(address, "logs", job).splitlines() if line.startswith("{")]

    submit("rr-first")
    deadline, victim, frozen, run = time.monotonic() + RUN_TIMEOUT, None, None, None

    def worker_after_epoch_1(fold):  # the pid of the worker that trained the fold's registered epoch 1
        (progress,) = [c for c in checkpoints(run, fold).values() if c["epoch"] == 1]
        return progress["history"][-1]["worker/pid"]

    while True:
        assert time.monotonic() < deadline, job_client(address, "logs", "rr-first")[-3000:]
        time.sleep(0.1)
        if not (storage.exists() and any(storage.iterdir())):
            continue
        run = run_dir_of(storage)
        epochs = {k: sorted(m["epoch"] for m in registered(run, k).values()) for k in range(FOLDS)}
        done = [any(m["finished"] for m in registered(run, k).values()) for k in range(FOLDS)]
        if victim is None:  # the first fold whose epoch-1 checkpoint Ray has registered, while epoch 2 trains
            victim = next((k for k in range(FOLDS) if epochs[k] == [1]), None)
            if victim is not None:
                os.kill(worker_after_epoch_1(victim), signal.SIGKILL)
                (other,) = [k for k in range(FOLDS) if k != victim]
        if victim is not None and frozen is None:
            assert not done[other], "the other fold finished before its worker could be frozen"
            if epochs[other] == [1]:
                frozen = worker_after_epoch_1(other)
                os.kill(frozen, signal.SIGSTOP)
        if frozen is not None and (run / f"fold_{victim}" / "fold_result.json").exists():
            break  # the driver has the victim's result: the rerun will not start that fold again
    subprocess.run([ray, "job", "stop", "--address", address, "rr-first"], capture_output=True, check=True, timeout=120)
    assert wait_terminal(address, "rr-first") == "STOPPED"
    if os.path.exists(f"/proc/{frozen}"):
        os.kill(frozen, signal.SIGKILL)  # not left behind frozen
    settle(run)  # the job's actors go with its driver; one may register a last checkpoint first
    finished_folds = [k for k in range(FOLDS) if any(m["finished"] for m in registered(run, k).values())]
    continued = [k for k in range(FOLDS) if k not in finished_folds and registered(run, k)]  # from a checkpoint
    assert (finished_folds, continued) == ([victim], [other])
    assert not (run / "metrics.json").exists() and not (run / "report.md").exists()
    before = {k: set(checkpoints(run, k)) for k in range(FOLDS)}
    # The kill lands in epoch 2 unless that epoch was already over when Ray registered epoch 1 (it polls a fold's
    # worker every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 0.25 s on the tests' head): then there is no restart.
    restart_on_record = any(
        r["kind"] == "worker restart"
        for name in registered(run, victim)
        for r in checkpoints(run, victim).get(name, {}).get("restarts", [])
    )
    restarts = [(e["fold"], e["after_epoch"]) for e in events("rr-first") if e["event"] == "restart"]
    assert restarts == ([(victim, 1)] if restart_on_record else [])
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written

    submit("rr-second")
    status = wait_terminal(address, "rr-second")
    assert status == "SUCCEEDED", job_client(address, "logs", "rr-second")[-4000:]
    second = events("rr-second")
    assert any(e.get("resuming") for e in second if e["event"] == "info")
    for k in range(FOLDS):
        after = checkpoints(run, k)
        epochs = [c["epoch"] for c in after.values()]
        assert set(epochs) == {1, 2} and sorted(m["epoch"] for m in registered(run, k).values()) == [1, 2]
        if k in finished_folds:
            assert set(after) == before[k]  # a finished fold gained no epochs
        else:
            # kept its checkpoints and continued, never from the start; an epoch whose checkpoint was uploaded but
            # not yet registered when the job stopped is trained again (it then appears twice in storage)
            assert before[k] <= set(after) and epochs.count(1) == 1
    metrics = same_model_metrics(run, finished_run)
    assert "baseline" not in metrics
    for k in range(FOLDS):  # the report records each fold's restarts, in order
        restarts = [(r["kind"], r["after_epoch"]) for r in metrics["folds"][k]["restarts"]]
        expected = [("worker restart", 1)] if k == victim and restart_on_record else []
        expected += [("resumed by a new run", 1)] if k in continued else []  # its epoch 1 was registered
        assert restarts == expected, (k, victim, continued)
    if restart_on_record:
        assert f"fold {victim}: worker restart after epoch 1" in (run / "report.md").read_text()
    assert second[-1]["event"] == "done" and second[-1]["f1_weighted"] == metrics["f1_weighted"]
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".*.tmp"))  # nothing half-written


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert [t["node_config"]["InstanceType"] for t in cfg["available_node_types"].values()] == [
        "m5.xlarge",
        "g4dn.xlarge",
    ]
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in yaml.safe_dump(cfg)
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu_worker"]["node_confg"] = {}  # a typo Ray must catch
    with pytest.raises(Exception, match="node_confg"):
        validate_config(prepare_config(broken))
