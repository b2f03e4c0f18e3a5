"""`ray job submit` against a real local head (127.0.0.1, token auth), with a user's CSV through the table
source; and cluster.yaml against Ray's own cluster-config schema."""

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_csv(path, n_per_class=40, seed=0):
    """Short news-like texts with string labels; each class has its own words, so a tiny model can learn it."""
    rng = np.random.default_rng(seed)
    words = {"sports": "match goal team coach season league win", "markets": "shares index trading stocks investors bond yield",
             "weather": "storm rain forecast wind snow temperature cold"}  # fmt: skip
    common = "the a said on in of today reported officials".split()
    rows = []
    for label, vocab in words.items():
        for _ in range(n_per_class):
            toks = list(rng.choice(vocab.split(), 6)) + list(rng.choice(common, 6))
            rng.shuffle(toks)
            rows.append({"headline": " ".join(toks), "section": label})
    pd.DataFrame(rows).sample(frac=1, random_state=seed).to_csv(path, index=False)


def test_ray_job_submit_runs_a_users_csv(tmp_path, monkeypatch):
    csv = tmp_path / "news.csv"
    make_csv(csv)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"source": "table", "path": str(csv), "text_column": "headline", "label_column": "section",
                 "min_samples": 10, "max_length": 32},
        "model": {"name": "tiny-bert-random", "hidden_dropout": 0.1},
        "train": {"lr": 3e-3, "batch_size": 16, "grad_accum": 1, "max_epochs": 5},
        "cv": {"folds": 3, "cpus_per_fold": 0.5, "storage_path": str(tmp_path / "runs"), "name": "csv-job"},
    }))  # fmt: skip
    # Token authentication on, for the head and the client (Ray refuses an unauthenticated job server).
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ray = str(BIN / "ray")
    if not (Path.home() / ".ray" / "auth_token").exists():
        subprocess.run([ray, "get-auth-token", "--generate"], env=env, capture_output=True, check=True)
    start = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
             "--num-cpus", "2", "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, env=env, capture_output=True, check=True, timeout=120)
    try:
        submit = [ray, "job", "submit", "--address", "http://127.0.0.1:8265", "--no-wait", "--submission-id", "rr-test",
                  "--working-dir", str(REPO), "--", "python", "jobs/cv.py", "--config", str(cfg)]  # fmt: skip
        subprocess.run(submit, env=env, capture_output=True, check=True, timeout=120)
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient("http://127.0.0.1:8265")
        deadline, status = time.monotonic() + 600, None
        while time.monotonic() < deadline and not (status and status.is_terminal()):
            time.sleep(2)
            status = client.get_job_status("rr-test")
        logs = client.get_job_logs("rr-test")
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    run = tmp_path / "runs" / "csv-job"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["label_names"] == ["markets", "sports", "weather"] and metrics["n_test"] == 24  # 20% of 120
    assert len(metrics["folds"]) == 3
    pred = pd.read_parquet(run / "predictions.parquet")
    assert set(pred["true_label"]) == {"markets", "sports", "weather"}
    assert "run csv-job: accuracy" in logs


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert [t["node_config"]["InstanceType"] for t in cfg["available_node_types"].values()] == ["m5.xlarge", "g4dn.xlarge"]
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in yaml.safe_dump(cfg)
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu_worker"]["node_confg"] = {}  # a typo Ray must catch
    with pytest.raises(Exception, match="node_confg"):
        validate_config(prepare_config(broken))
