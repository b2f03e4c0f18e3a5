"""Beyond one node, and the faults a run must survive (marker `cluster`, left out of the suite's default selection:
`.venv/bin/python -m pytest -m cluster`; CI runs it after the suite). Two Ray nodes on this machine, each with room
for one tiny fold: a head (`ray start --head` on 127.0.0.1, token authentication) and a second node (`ray start
--address ...`, its own `second_node` resource). Every run stores into a real S3 API: moto's server on 127.0.0.1, its
bucket made here; both nodes are started with its credentials, as a user's nodes need the bucket's.

In file order (the last test loses the second node):
1. an undisturbed 2-fold run: everything in the bucket, nothing written locally, one fold on each node; it is the
   reference the faults must end like;
2. two folds of two workers each on room for two workers: each fold's workers on both nodes, the folds queued, a
   killed worker restarts its fold's workers from their checkpoint (issue 32);
3. a search of two trials at once, a node each, in the bucket (issue 29);
4. a table in the bucket labelled by `predict --engine ray-data`, an actor on each node (issue 43);
5. the faults, in one `ray job submit` job: a fold's worker SIGKILLed, the second node lost (its raylet SIGKILLed)
   while the other fold trains there, a hung worker, the job stopped once one fold has finished; submitted again it
   resumes from the bucket and ends with the reference's metrics."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml
from conftest import (
    BIN,
    REPO,
    RUN_TIMEOUT,
    checkpoints,
    dashboard_get,
    local_cluster,
    moto_bucket,
    processes_naming,
    read_json,
    registered,
    same_model_metrics,
    settle,
    state_list,
    tiny_config,
)

from reuters_ray.storage import LOCAL, copy_dir

pytestmark = pytest.mark.cluster

# A fault lands after epoch 1 is registered; a lost node's worker may register epoch 2 before it dies, so the fold
# resumes after epoch 1 or 2 and still has two epochs left: the hung worker is frozen between them (an epoch takes
# about a second here; with 3 epochs a fold resumed after epoch 2 had only its last left, and CI once saw it finish).
EPOCHS = 4
SECOND = "second_node"  # the second node's own resource: it names the node in `ray start` and in /proc


@dataclass
class Cluster:
    dashboard: str  # http://127.0.0.1:<port>
    head: str  # node ids
    second: str
    uri: object  # "bkt/runs" -> s3://bkt/runs?endpoint_override=...
    fs: pafs.S3FileSystem  # the bucket's server

    def run(self, name):
        """(filesystem, path) of run `name` in the bucket, as conftest's readers take it."""
        return self.fs, f"bkt/runs/{name}"

    def fetch(self, name, dst):
        """A local copy of run `name` (its outputs and its folds' Ray storage)."""
        copy_dir(f"bkt/runs/{name}", str(dst), self.fs, LOCAL)
        return Path(dst)


def nodes(dashboard):
    """The alive nodes, from the state API (what `ray list nodes` asks)."""
    answer = dashboard_get(
        dashboard, "/api/v0/nodes?limit=100&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
    )
    return answer["data"]["result"]["result"]


@pytest.fixture(scope="module")
def cluster():
    with moto_bucket() as (uri, fs), local_cluster(1, aws=True, second_node=SECOND) as (_, url):
        deadline = time.monotonic() + 60
        while len(alive := nodes(url)) < 2:
            assert time.monotonic() < deadline, alive
            time.sleep(0.5)
        (b,) = [n["node_id"] for n in alive if SECOND in n["resources_total"]]
        (a,) = [n["node_id"] for n in alive if n["node_id"] != b]
        yield Cluster(url, a, b, uri, fs)


def config_yaml(reuters_dir, tmp_path, epochs=EPOCHS, train_sample=500, **cv):
    """configs/tiny-cpu.yaml with `epochs` epochs and a whole CPU (a node's room) per fold."""
    cfg = tiny_config(reuters_dir, **{"cpus_per_fold": 1, **cv})
    cfg["train"]["max_epochs"] = epochs
    cfg["data"]["train_sample"] = train_sample
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cv(cluster, config, name, cwd):
    """`python jobs/cv.py` as a driver on the cluster (RAY_ADDRESS), from the empty folder `cwd`."""
    cmd = [sys.executable, str(REPO / "jobs" / "cv.py"), "--config", str(config), "--cv.name", name,
           "--cv.storage_path", cluster.uri("bkt/runs"), "--no-baseline", "--cv.blend", "false", "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def reference(cluster, reuters_dir, tmp_path_factory):
    """The undisturbed 2-fold run in the bucket, and a local copy of it."""
    tmp = tmp_path_factory.mktemp("reference")
    (tmp / "cwd").mkdir()
    config = config_yaml(reuters_dir, tmp, folds=2)
    run_cv(cluster, config, "reference", tmp / "cwd")
    return config, tmp / "cwd", cluster.fetch("reference", tmp / "copy")


def files(fs, path):
    return sorted(
        i.path.removeprefix(path + "/")
        for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
        if i.type == pafs.FileType.File
    )


def test_a_whole_run_lives_in_the_bucket_with_a_fold_on_each_node(cluster, reference):
    _, cwd, copy = reference
    assert list(cwd.iterdir()) == []  # nothing written where the driver ran
    stored = files(*cluster.run("reference"))
    for name in ("config.yaml", "fold_assignment.json", "metrics.json", "report.md", "report.html",
                 "predictions.parquet", "oof_predictions.parquet"):  # fmt: skip
        assert name in stored, name
    for k in range(2):
        assert f"fold_{k}/fold_result.json" in stored and f"fold_{k}/checkpoint_manager_snapshot.json" in stored
        assert f"models/fold_{k}/model.safetensors" in stored
        progress = [p for p in stored if p.startswith(f"fold_{k}/checkpoint_") and p.endswith("/progress.json")]
        assert len(progress) == EPOCHS  # one Ray Train checkpoint per epoch
    metrics = json.loads((copy / "metrics.json").read_text())
    assert [f["restarts"] for f in metrics["folds"]] == [[], []]
    # each node has room for one fold: they ran at once, one on each
    assert sorted(f["node_ids"] for f in metrics["folds"]) == sorted([[cluster.head], [cluster.second]])
    report = (copy / "report.md").read_text()
    assert f"| {cluster.head[:12]} |" in report and f"| {cluster.second[:12]} |" in report


def two_workers_of_each_fold(cfg_dict, root):
    """The folds of config `cfg_dict` trained by one of two local worker processes each, without Ray (run_local): what
    a fold of two Ray Train workers must compute. Returns each fold's epoch rows."""
    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.features import TokenArrays
    from reuters_ray.fold.train import FoldData, train_fold
    from reuters_ray.run.inputs import check_input

    cfg = from_dict(RunConfig, cfg_dict)
    prep = check_input(cfg)
    histories = []
    for k, (train_idx, val_idx) in enumerate(prep.folds):
        n = prep.n_train
        tokens = TokenArrays(prep.tokens.ids[:n], prep.tokens.lengths[:n], prep.tokens.pad_id)
        data = FoldData(tokens, prep.ds.train_labels, train_idx, val_idx, prep.weights, prep.ds.label_names)
        histories.append(train_fold(cfg, data, root / f"fold_{k}", fold=k, log=lambda _: None).history)
    return histories


def test_folds_of_two_workers_span_the_nodes_queue_and_restart_a_killed_worker_from_its_checkpoint(
    cluster, reuters_dir, tmp_path
):
    """Two folds of two workers each (cv.workers_per_fold 2), one CPU per worker, on two nodes of one CPU: each fold's
    workers sit one on each node, and the folds queue (one at a time). Once the first fold has registered epoch 1,
    its rank-1 worker is SIGKILLed: Ray Train restarts the fold's worker group from that checkpoint. The run ends
    with the epoch figures of the same folds trained undisturbed by two local processes each, without Ray."""
    (tmp_path / "cwd").mkdir()
    config = config_yaml(reuters_dir, tmp_path, folds=2, workers_per_fold=2)
    run = cluster.run("workers")
    cmd = [sys.executable, str(REPO / "jobs" / "cv.py"), "--config", str(config), "--cv.name", "workers",
           "--cv.storage_path", cluster.uri("bkt/runs"), "--no-baseline", "--cv.blend", "false", "--quiet"]  # fmt: skip
    driver = subprocess.Popen(cmd, cwd=tmp_path / "cwd", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, deadline = None, time.monotonic() + RUN_TIMEOUT
    while killed is None and driver.poll() is None:
        assert time.monotonic() < deadline
        for k in range(2):
            rows = sorted(registered(run, k).values(), key=lambda m: m["epoch"])
            if rows:
                assert [m["epoch"] for m in rows] == [1], f"fold {k}: its epoch 1 went by unseen"
                assert rows[0]["worker/workers"] == 2
                os.kill(rows[0]["worker/pids"][1], signal.SIGKILL)
                killed = k
                break
        time.sleep(0.1)
    out, _ = driver.communicate(timeout=RUN_TIMEOUT)
    assert driver.returncode == 0 and killed is not None, out[-4000:]
    metrics = read_json((cluster.fs, f"{run[1]}/metrics.json"))
    folds = metrics["folds"]
    for f in folds:  # each fold's two workers, one on each node
        assert f["workers"] == 2 and sorted(f["node_ids"]) == sorted([cluster.head, cluster.second]), f
    assert [(r["kind"], r["after_epoch"]) for r in folds[killed]["restarts"]] == [("worker restart", 1)]
    assert folds[1 - killed]["restarts"] == []
    starts = {k: sorted(m["time/worker_started_at"] for m in registered(run, k).values()) for k in range(2)}
    first, second = sorted(range(2), key=lambda k: starts[k][0])
    assert starts[second][0] > starts[first][-1]  # queued: the second fold's workers started after the first's
    lasts = [max(checkpoints(run, k).values(), key=lambda p: p["epoch"])["history"] for k in range(2)]
    cfg = yaml.safe_load(config.read_text())
    reference = two_workers_local(cfg, tmp_path / "local")
    keys = ("epoch", "train/loss", "val/loss", "val/accuracy", "val/f1_weighted", "val/f1_macro")
    for k in range(2):
        assert [[r[c] for c in keys] for r in lasts[k]] == [[r[c] for c in keys] for r in reference[k]], k
    report = cluster.fetch("workers", tmp_path / "copy") / "report.md"
    assert "| workers | node(s) |" in report.read_text()


def two_workers_local(cfg_dict, root):
    from reuters_ray.fold.parallel import run_local

    return run_local(two_workers_of_each_fold, 2, cfg_dict, root)[0]


def test_a_search_in_the_bucket_runs_trials_on_both_nodes_and_predict_follows_best(cluster, reuters_dir, tmp_path):
    """Issue 29's room and storage: two 2-fold trials at once (0.45 CPU a fold: a trial fits a node), their run
    folders, results and `best` (a pointer file) in the bucket; predict and report take `<search>/best`."""
    (tmp_path / "cwd").mkdir()
    config = config_yaml(reuters_dir, tmp_path, epochs=1, folds=2, cpus_per_fold=0.45)
    search = tmp_path / "search.yaml"
    search.write_text(
        yaml.safe_dump({"trials": 2, "seed": 0, "space": {"model.hidden_dropout": {"uniform": [0.0, 0.2]}}})
    )
    storage = cluster.uri("bkt/searches")
    cmd = [str(BIN / "reuters-ray"), "tune", "--config", str(config), "--search", str(search), "--cv.storage_path",
           storage, "--cv.baseline", "false", "--cv.blend", "false", "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert list((tmp_path / "cwd").iterdir()) == []
    fs, where = cluster.fs, "bkt/searches/search"
    result = read_json((fs, f"{where}/search.json"))
    assert [r["status"] for r in result["results"]] == ["finished", "finished"]
    best = result["best"]["run"]
    assert fs.open_input_stream(f"{where}/best").read().decode() == best + "\n"
    for name in (
        "trials.csv",
        "report.html",
        "report.md",
        f"{best}/report.md",
        f"{best}/models/fold_1/model.safetensors",
    ):
        assert fs.get_file_info(f"{where}/{name}").type == pafs.FileType.File, name
    node_ids = set()
    for trial in ("trial_0", "trial_1"):
        metrics = read_json((fs, f"{where}/{trial}/metrics.json"))
        node_ids |= {n for f in metrics["folds"] for n in f["node_ids"]}
    assert node_ids == {cluster.head, cluster.second}  # the two trials ran at once, a node each
    best_uri = cluster.uri("bkt/searches/search/best")
    env = {**os.environ, "REUTERS_RAY_CACHE": str(tmp_path / "cache")}
    answer = subprocess.run([str(BIN / "reuters-ray"), "predict", "--run", best_uri, "--json", "Oil prices rose"],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)  # fmt: skip
    assert answer.returncode == 0, answer.stderr[-3000:]
    labels = read_json((fs, f"{where}/{best}/metrics.json"))["label_names"]
    assert json.loads(answer.stdout)["label"] in labels
    report = subprocess.run([str(BIN / "reuters-ray"), "report", best_uri], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, env=env)  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.splitlines()[-1] == cluster.uri(f"bkt/searches/search/{best}/report.md")


def test_a_table_in_the_bucket_is_labelled_by_ray_data_on_both_nodes_as_the_local_engine_labels_it(
    cluster, reference, tmp_path
):
    """Issue 43: the reference run's test wires as a Parquet table in the bucket, rows shuffled; `predict --engine
    ray-data` as a driver on the cluster (RAY_ADDRESS) reads it with Ray Data, scores it with a pool of two actors
    (one per CPU: one on each node) and writes Parquet files into a folder of the bucket. Its rows, ids, order and
    labels are the local engine's on a local copy of the table and run; Ray's task events show each node's actor
    scoring batches. (Before the faults test, which loses the second node.)"""
    import pandas as pd
    import pyarrow.parquet as pq

    from reuters_ray.cli import main
    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.preprocess import prepare

    config, _, copy = reference
    ds = prepare(from_dict(RunConfig, yaml.safe_load(config.read_text())).data)
    frame = pd.DataFrame({"id": ds.test_ids, "text": ds.test_texts}).sample(frac=1, random_state=5)
    frame.to_parquet(tmp_path / "wires.parquet", index=False)
    with cluster.fs.open_output_stream("bkt/tables/wires.parquet") as f:
        f.write((tmp_path / "wires.parquet").read_bytes())
    env = {**os.environ, "REUTERS_RAY_CACHE": str(tmp_path / "cache")}  # the driver's, and so its actors'
    cmd = [str(BIN / "reuters-ray"), "predict", "--run", cluster.uri("bkt/runs/reference"), "--engine", "ray-data",
           "--table", cluster.uri("bkt/tables/wires.parquet"), "--out", cluster.uri("bkt/tables/labelled"),
           "--batch-size", "16"]  # fmt: skip
    (tmp_path / "cwd").mkdir()
    out = subprocess.run(cmd, cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing written where the driver ran
    parts = files(cluster.fs, "bkt/tables/labelled")
    assert parts == [f"part-{n:05d}.parquet" for n in range(len(parts))] and len(parts) >= 2, parts
    assert out.stdout.splitlines() == [
        f"wrote {len(frame)} rows to {cluster.uri('bkt/tables/labelled')} ({len(parts)} Parquet files, 2 actors)"
    ]
    got = pd.concat(
        [pq.read_table(f"bkt/tables/labelled/{p}", filesystem=cluster.fs).to_pandas() for p in parts],
        ignore_index=True,
    )
    assert main(["predict", "--run", str(copy), "--table", str(tmp_path / "wires.parquet"), "--out",
                 str(tmp_path / "local.parquet")]) == 0  # fmt: skip
    want = pd.read_parquet(tmp_path / "local.parquet")
    assert list(got.columns) == list(want.columns) == ["id", "text", "label", *[c for c in want if c.startswith("p_")]]
    assert got["id"].tolist() == want["id"].tolist() == frame["id"].tolist()
    assert got["label"].tolist() == want["label"].tolist()
    # each node's actor scored batches: Ray's task events (the state API), the map_batches actors' tasks
    deadline, scored_on = time.monotonic() + 60, set()
    while scored_on != {cluster.head, cluster.second} and time.monotonic() < deadline:
        tasks = state_list(cluster.dashboard, "tasks", type="ACTOR_TASK", state="FINISHED")
        scored_on = {t["node_id"] for t in tasks if "TableScorer" in t["name"]}
        time.sleep(1)
    assert scored_on == {cluster.head, cluster.second}


def raylet_of(marker):
    """The pid of the raylet whose command line holds `marker`."""
    (pid,) = [
        p for p in processes_naming(marker) if b"raylet" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]
    ]
    return pid


def test_a_job_that_loses_a_worker_and_a_node_stopped_and_submitted_again_ends_like_the_undisturbed_run(
    cluster, reference, tmp_path
):
    """The reference's config as a `ray job submit` job (JSON-lines output), its two folds training at once, one on
    each node, and four faults:
    1. SIGKILL the worker of the fold on the head once its epoch 1 is registered: Ray Train restarts the worker
       (cv.max_failures) from that checkpoint;
    2. SIGKILL the second node's raylet once the fold there has its epoch 1 registered: the node is lost with the
       worker; Ray Train restarts that fold on the head, once the other fold frees its CPU, from its checkpoint in the
       bucket;
    3. SIGSTOP the worker of whichever fold is still training once the other has finished and it has registered an
       epoch after its restart: a hung worker;
    4. `ray job stop` then: Ray ends the job's actors (fold controllers, workers) with its driver.
    The same job submitted again resumes from the bucket: the finished fold is kept, the other continues from its
    checkpoint. The metrics equal the reference's; the report records each fold's restarts and nodes."""
    config, _, ref_copy = reference
    run = cluster.run("faults")
    ray, address = str(BIN / "ray"), cluster.dashboard
    flags = ["--log-format", "json", "--no-baseline", "--cv.blend", "false", "--cv.name", "faults"]

    def submit(job):
        cmd = [ray, "job", "submit", "--address", address, "--no-wait", "--submission-id", job,
               "--working-dir", str(REPO), "--", "python", "jobs/cv.py", "--config", str(config),
               "--cv.storage_path", cluster.uri("bkt/runs"), *flags]  # fmt: skip
        subprocess.run(cmd, capture_output=True, check=True, timeout=120)

    def job_status(job):
        return dashboard_get(address, f"/api/jobs/{job}")["status"]

    def job_logs(job):
        return dashboard_get(address, f"/api/jobs/{job}/logs")["logs"]

    def wait_terminal(job):
        deadline = time.monotonic() + RUN_TIMEOUT
        while (status := job_status(job)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
            assert time.monotonic() < deadline, f"job {job}: still {status}"
            time.sleep(0.2)
        return status

    def events(job):  # the driver's JSON lines (the job's log also holds Ray's own lines on stderr)
        return [json.loads(line) for line in job_logs(job).splitlines() if line.startswith("{")]

    def fold_done(k):
        return read_json((run[0], f"{run[1]}/fold_{k}/fold_result.json")) is not None

    submit("rr-faults-1")
    deadline = time.monotonic() + RUN_TIMEOUT
    killed, lost, frozen = None, None, None  # fold numbers: worker killed, node lost; and the frozen pid
    polls = 0
    while frozen is None:
        assert time.monotonic() < deadline, job_logs("rr-faults-1")[-3000:]
        time.sleep(0.1)
        polls += 1
        if polls % 20 == 0:  # a job that ended on its own will not reach the state waited for: say so at once
            assert job_status("rr-faults-1") in ("PENDING", "RUNNING"), job_logs("rr-faults-1")[-3000:]
        reports = {k: sorted(registered(run, k).values(), key=lambda m: m["epoch"]) for k in range(2)}
        for k, rows in reports.items():
            if k in (killed, lost) or not rows:
                continue
            assert [m["epoch"] for m in rows] == [1], f"fold {k}: its epoch 1 went by unseen ({len(rows)} registered)"
            if rows[0]["worker/node_id"] == cluster.second:
                os.kill(raylet_of(SECOND), signal.SIGKILL)
                lost = k
            else:
                assert rows[0]["worker/node_id"] == cluster.head
                os.kill(rows[0]["worker/pid"], signal.SIGKILL)
                killed = k
        done = [k for k in range(2) if fold_done(k)]
        if killed is not None and lost is not None and len(done) == 1:
            (other,) = {0, 1} - set(done)
            latest = reports[other][-1] if reports[other] else None
            if latest is not None and latest["restarts"] >= 1:  # an epoch registered since its restart
                assert not latest["finished"], "both folds finished before the job could be stopped"
                frozen = latest["worker/pid"]
                os.kill(frozen, signal.SIGSTOP)
    subprocess.run(
        [ray, "job", "stop", "--address", address, "rr-faults-1"], capture_output=True, check=True, timeout=120
    )
    assert wait_terminal("rr-faults-1") == "STOPPED"
    if os.path.exists(f"/proc/{frozen}"):
        os.kill(frozen, signal.SIGKILL)  # not left behind frozen
    settle(run)  # the job's actors go with its driver; one may register a last checkpoint first
    deadline = time.monotonic() + 60  # Ray marks a node dead after its missed health checks
    while [n["node_id"] for n in nodes(address)] != [cluster.head]:
        assert time.monotonic() < deadline, nodes(address)
        time.sleep(0.5)
    (finished,) = done
    assert [k for k in range(2) if any(m["finished"] for m in registered(run, k).values())] == [finished]
    stored = files(*run)
    assert "metrics.json" not in stored and "report.md" not in stored
    assert not [p for p in stored if p.endswith(".tmp")]  # nothing half-written
    before = {k: set(checkpoints(run, k)) for k in range(2)}
    resumed_after = max(m["epoch"] for m in registered(run, other).values())

    def worker_restarts(k):  # (fold, after epoch) of each worker restart on record in the fold's registered state
        latest = max(registered(run, k).items(), key=lambda item: item[1]["epoch"])[0]
        records = checkpoints(run, k)[latest]["restarts"]
        return [(k, r["after_epoch"]) for r in records if r["kind"] == "worker restart"]

    on_record = worker_restarts(killed) + worker_restarts(lost)
    assert [k for k, _ in on_record] == [killed, lost] and all(e in (1, 2) for _, e in on_record), on_record
    assert sorted((e["fold"], e["after_epoch"]) for e in events("rr-faults-1") if e["event"] == "restart") == sorted(
        on_record
    )

    submit("rr-faults-2")
    status = wait_terminal("rr-faults-2")
    assert status == "SUCCEEDED", job_logs("rr-faults-2")[-4000:]
    second = events("rr-faults-2")
    assert any(e.get("resuming") for e in second if e["event"] == "info")
    for k in range(2):
        after = checkpoints(run, k)
        epochs = [c["epoch"] for c in after.values()]
        assert sorted(m["epoch"] for m in registered(run, k).values()) == list(range(1, EPOCHS + 1))
        if k == finished:
            assert set(after) == before[k]  # a finished fold gained no epochs
        else:  # kept its checkpoints and continued, never from the start
            assert before[k] <= set(after) and epochs.count(1) == 1
    copy = cluster.fetch("faults", tmp_path / "faults")
    metrics = same_model_metrics(copy, ref_copy)
    folds = metrics["folds"]
    assert folds[lost]["node_ids"] == [cluster.second, cluster.head]  # trained on the second node, then the head
    assert folds[killed]["node_ids"] == [cluster.head]
    for k in range(2):  # the report records each fold's restarts, in order
        expected = [("worker restart", e) for f, e in on_record if f == k]
        expected += [("resumed by a new run", resumed_after)] if k == other else []
        assert [(r["kind"], r["after_epoch"]) for r in folds[k]["restarts"]] == expected, k
    report = (copy / "report.md").read_text()
    assert f"fold {lost}: worker restart after epoch" in report
    assert f"{cluster.second[:12]}, {cluster.head[:12]}" in report  # the fold table's node(s) column
    assert second[-1]["event"] == "done" and second[-1]["f1_weighted"] == metrics["f1_weighted"]
    assert not [p for p in files(*run) if p.endswith(".tmp")]
