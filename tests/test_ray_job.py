"""`ray job submit` against a real local head (127.0.0.1, token auth), with a user's CSV through the table
source; and cluster.yaml against Ray's own cluster-config schema."""

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BIN, FOLDS, settle

REPO = Path(__file__).resolve().parents[1]


def make_csv(path, n_per_class=40, seed=0):
    """Short news-like texts with string labels; each class has its own words, so a tiny model can learn it."""
    rng = np.random.default_rng(seed)
    words = {
        "sports": "match goal team coach season league win",
        "markets": "shares index trading stocks investors bond yield",
        "weather": "storm rain forecast wind snow temperature cold",
    }
    common = "the a said on in of today reported officials".split()
    rows = []
    for label, vocab in words.items():
        for _ in range(n_per_class):
            toks = list(rng.choice(vocab.split(), 6)) + list(rng.choice(common, 6))
            rng.shuffle(toks)
            rows.append({"headline": " ".join(toks), "section": label})
    pd.DataFrame(rows).sample(frac=1, random_state=seed).to_csv(path, index=False)


def registered(run, fold):
    """[(checkpoint folder, epoch, finished)] Ray Train registered for a fold, oldest first."""
    snap = run / f"fold_{fold}" / "checkpoint_manager_snapshot.json"
    if not snap.exists():
        return []
    rows = [
        (c["checkpoint_dir_name"], c["metrics"]["epoch"], c["metrics"]["finished"])
        for c in json.loads(snap.read_text())["checkpoint_results"]
    ]
    return sorted(rows, key=lambda r: r[1])


# The job client runs in its own process: Ray reads RAY_AUTH_MODE once per process, and this test process may
# have imported Ray already (without token mode) in an earlier test.
CLIENT = """
import sys
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(sys.argv[3])
print(client.get_job_status(sys.argv[2]) if sys.argv[1] == "status" else client.get_job_logs(sys.argv[2]), end="")
"""


def job_client(address, what, job):
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, what, job, address], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def wait_terminal(address, job, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job_client(address, "status", job)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(1)
    raise AssertionError(f"job {job}: still {status} after {timeout} s")


def test_ray_job_submit_stop_and_resubmit_a_users_csv(ray_head, tmp_path):
    """A user's CSV as a `ray job submit` job on a local head (conftest.ray_head: 127.0.0.1, token auth). The job is stopped (`ray job stop`) while folds
    train; the latest checkpoint of an unfinished fold is then damaged (a truncated upload); the same job
    submitted again resumes: finished folds are kept, the damaged fold continues from its previous checkpoint."""
    csv = tmp_path / "news.csv"
    make_csv(csv, n_per_class=100)
    # a class too small to keep (data.min_samples 10) and a row without text: dropped, and the run says so first
    extra = [{"headline": f"garden roses bloom spring {i}", "section": "gardening"} for i in range(5)]
    extra.append({"headline": "", "section": "sports"})
    pd.concat([pd.read_csv(csv), pd.DataFrame(extra)]).to_csv(csv, index=False)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "source": "table",
                    "path": str(csv),
                    "text_column": "headline",
                    "label_column": "section",
                    "min_samples": 10,
                    "max_length": 32,
                },
                "model": {"name": "tiny-bert-random", "hidden_dropout": 0.1},
                "train": {"lr": 3e-3, "batch_size": 16, "grad_accum": 1, "max_epochs": 12, "patience": 12},
                "cv": {"folds": FOLDS, "cpus_per_fold": 0.5, "storage_path": str(tmp_path / "runs"), "name": "csv-job"},
            }
        )
    )
    run = tmp_path / "runs" / "csv-job"
    ray, address = str(BIN / "ray"), ray_head

    def submit(job):
        cmd = [ray, "job", "submit", "--address", address, "--no-wait", "--submission-id", job,
               "--working-dir", str(REPO), "--", "python", "jobs/cv.py", "--config", str(cfg)]  # fmt: skip
        subprocess.run(cmd, capture_output=True, check=True, timeout=120)

    submit("rr-first")
    deadline = time.monotonic() + 600
    while not any(len(registered(run, k)) >= 2 for k in range(FOLDS)):  # some fold has two epochs in storage
        assert time.monotonic() < deadline, job_client(address, "logs", "rr-first")[-3000:]
        time.sleep(0.2)
    subprocess.run(
        [ray, "job", "stop", "--address", address, "rr-first"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert wait_terminal(address, "rr-first") == "STOPPED"
    settle(run)  # the job's actors (fold controllers, workers) go with it; one may register a last checkpoint first
    kept = {k: registered(run, k) for k in range(FOLDS)}
    finished = [k for k in range(FOLDS) if kept[k] and kept[k][-1][2]]
    damaged = next(k for k in range(FOLDS) if k not in finished and len(kept[k]) >= 2)
    name, epoch, _ = kept[damaged][-1]
    weights = run / f"fold_{damaged}" / name / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    assert not (run / "metrics.json").exists() and not (run / "report.md").exists()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written

    submit("rr-second")
    status = wait_terminal(address, "rr-second")
    logs = job_client(address, "logs", "rr-second")
    assert status == "SUCCEEDED", logs[-4000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["label_names"] == ["markets", "sports", "weather"] and metrics["n_test"] == 60  # 20% of 300
    for k in range(FOLDS):
        if k in finished:  # kept as it was: no epoch trained again
            assert registered(run, k) == kept[k] and metrics["folds"][k]["restarts"] == []
        assert [e for _, e, _ in registered(run, k)][-1] == 12 and metrics["folds"][k]["epochs_run"] == 12
    (restart,) = metrics["folds"][damaged]["restarts"]  # the damaged latest checkpoint was skipped
    assert (restart["kind"], restart["after_epoch"]) == ("resumed by a new run", epoch - 1)
    pred = pd.read_parquet(run / "predictions.parquet")
    assert set(pred["true_label"]) == {"markets", "sports", "weather"}
    assert "run csv-job: resuming" in logs and "progress: fold" in logs and "run csv-job: accuracy" in logs
    lines = logs.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("run csv-job: "))
    assert lines[first + 1 : first + 3] == [
        f"warning: {csv}: dropped 1 empty text(s) in column 'headline', data rows 306",
        "dropped 1 class(es) with fewer than data.min_samples=10 training examples (training count in brackets): "
        "gardening (4)",
    ]
    assert (run / "report.md").exists() and not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert "| drop_empty_texts | column=headline, news.csv rows 306 | 1 | 0 |" in (run / "report.md").read_text()


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
