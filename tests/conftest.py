"""Shared fixtures. Tests read the real Reuters-21578 files from ../shared/data/reuters21578
(override with $REUTERS21578_PATH) and never touch the network."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Before transformers/huggingface_hub are imported: a hub lookup must fail fast, not wait on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402

from reuters_ray.config import REUTERS_PATH_ENV, load_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REUTERS_DIR = Path(os.environ.get(REUTERS_PATH_ENV) or REPO.parent / "shared" / "data" / "reuters21578")


@pytest.fixture(scope="session")
def reuters_dir() -> Path:
    if not any(REUTERS_DIR.glob("reut2-*.sgm")):
        pytest.fail(f"Reuters-21578 not found in {REUTERS_DIR}; set ${REUTERS_PATH_ENV} to its folder")
    return REUTERS_DIR


@pytest.fixture(scope="session")
def reuters(reuters_dir):
    """Reuters-46 from the raw files, title+body text (loaded once per session)."""
    from reuters_ray.data.reuters21578 import load_reuters21578

    return load_reuters21578(str(reuters_dir))


@pytest.fixture(scope="session")
def reuters_keras_text(reuters_dir):
    from reuters_ray.data.reuters21578 import load_reuters21578

    return load_reuters21578(str(reuters_dir), text="keras")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from reuters_ray.fold.models import load_tokenizer

    return load_tokenizer("minilm-offline")


# --- one Ray cluster for the whole session -------------------------------------------------------------------

BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_naming(marker: str) -> list[int]:
    """The processes whose command line contains `marker`, and all their descendants (read from /proc)."""
    parent, found = {}, set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if marker in cmdline:
            found.add(int(d.name))
    while True:
        children = {p for p, pp in parent.items() if pp in found} - found
        if not children:
            return sorted(found)
        found |= children


def stop_processes(pids: list[int], grace_s: float = 10.0) -> None:
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while (pids := [p for p in pids if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextlib.contextmanager
def local_cluster(cpus: int, aws: bool = False, second_node: str | None = None):
    """A throwaway Ray cluster on 127.0.0.1: `ray start --head` with `cpus` CPUs and token authentication, and with
    `second_node` a second node joined to it (`ray start --address`, `cpus` CPUs and a resource of that name). This
    process joins it meanwhile (RAY_ADDRESS, as under `ray job submit`). Yields (GCS port, dashboard URL). It has a
    temp dir of its own, and only its processes are stopped at the end (`ray stop` would stop every Ray on the
    machine, a developer's running job included)."""
    # Ray Train's controllers collect their workers' reports every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
    # default): 0.25 s here, so that the fault tests see an epoch registered while the next one trains.
    # The nodes get this process's AWS credentials only with `aws`: a driver's credentials are not its cluster's.
    env = {k: v for k, v in os.environ.items() if aws or not k.startswith("AWS_")}
    env.update(RAY_AUTH_MODE="token", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.25", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    ray = str(BIN / "ray")
    if not (Path.home() / ".ray" / "auth_token").exists():
        subprocess.run([ray, "get-auth-token", "--generate"], env=env, capture_output=True, check=True)
    port, dashboard = free_port(), free_port()
    temp_dir = f"/tmp/reuters-ray-test-{port}"  # short: Ray's socket paths live below it (107 characters at most)
    starts = [[ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--dashboard-host",
               "127.0.0.1", "--dashboard-port", str(dashboard), "--num-cpus", str(cpus), "--temp-dir", temp_dir,
               "--disable-usage-stats"]]  # fmt: skip
    if second_node:
        starts.append([ray, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                       "--num-cpus", str(cpus), "--resources", json.dumps({second_node: 1}),
                       "--dashboard-agent-listen-port=0", "--disable-usage-stats"])  # fmt: skip
    # Ray reads RAY_AUTH_MODE once per process: set before this process (or any child) imports Ray's client side.
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
    try:
        for start in starts:
            out = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        # the head's polling for this process's drivers too (a driver passes its own to the folds' controllers)
        os.environ.update(
            RAY_AUTH_MODE="token", RAY_ADDRESS=f"127.0.0.1:{port}", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.25"
        )
        yield port, f"http://127.0.0.1:{dashboard}"
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        # its processes: below its temp dir, the second node's, and those naming its GCS port (Ray's client server
        # is no one's child once `ray start` has exited; an orphan of a lost node neither)
        markers = [temp_dir, f":{port} ", *([second_node] if second_node else [])]
        stop_processes(sorted({p for m in markers for p in processes_naming(m)}), grace_s=2.0)  # throwaway: 2 s
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head():
    """A real local Ray head (local_cluster: 127.0.0.1, token authentication, 2 CPUs, no AWS credentials whatever
    this process has: test_storage's moto fixture sets some), started once and shared by every test that runs Ray:
    each run's driver joins it. Starting Ray costs 10-20 s on 2 cores; once per session instead of once per run.
    Yields the dashboard's URL."""
    with local_cluster(2) as (_, dashboard):
        yield dashboard


def dashboard_get(dashboard: str, path: str):
    """GET a dashboard REST path (job API, state API) with the cluster's token, in this process: no Python process
    per call (Ray's CLI takes seconds to start here)."""
    import urllib.request

    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(dashboard + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def state_list(dashboard: str, resource: str, **filters) -> list[dict]:
    """Ray's state API (what `ray list tasks|actors` asks) over REST: `resource` rows whose fields equal `filters`."""
    import urllib.parse

    params = [("limit", "10000")]
    for key, value in filters.items():
        params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
    answer = dashboard_get(dashboard, f"/api/v0/{resource}?{urllib.parse.urlencode(params)}")
    assert answer["result"], answer.get("msg")
    return answer["data"]["result"]["result"]


@contextlib.contextmanager
def moto_bucket(bucket="bkt"):
    """moto's S3 server (the `test` extra) on 127.0.0.1 at a free port, with `bucket` made in it, and the AWS
    variables moto takes set in this process meanwhile (processes started from here inherit them). Yields (URI
    maker: "bkt/runs" -> s3://bkt/runs?endpoint_override=..., the server's S3FileSystem)."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")  # moto takes any
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"127.0.0.1:{server.get_host_and_port()[1]}"
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(bucket)
    try:
        yield (lambda path: f"s3://{path}?endpoint_override={endpoint}&scheme=http&region=us-east-1"), fs
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


# --- the tiny CV run that several test files share -----------------------------------------------------------

RUN_TIMEOUT = 600  # seconds; a run takes about a minute and a half here
FOLDS = 2  # the tests' runs: two folds show all that three do (finished beside unfinished), for a third less


def tiny_config(reuters_dir, **cv):
    """configs/tiny-cpu.yaml, as shipped, with the data path of this machine and `cv` overrides."""
    cfg = load_yaml(REPO / "configs" / "tiny-cpu.yaml")
    cfg["data"]["path"] = str(reuters_dir)
    cfg["cv"].update(cv)
    return cfg


def cv_cmd(config_path, storage):
    return [
        sys.executable,
        str(REPO / "jobs" / "cv.py"),
        "--config",
        str(config_path),
        "--cv.storage_path",
        str(storage),
    ]


def run_dir_of(storage):
    (run,) = [p for p in Path(storage).iterdir() if p.is_dir()]
    return run


def _on(where):
    """(filesystem, path) of a local Path or of a (filesystem, path) pair: a bucket's run folder."""
    from reuters_ray.storage import LOCAL

    return where if isinstance(where, tuple) else (LOCAL, str(where))


def read_json(path, wait_s=0.0):
    """The JSON file at `path` (a local Path, or a bucket's (filesystem, path)), None if it is not there or (after
    wait_s) still being written: a test polling a running fold may catch Ray writing a snapshot, or copying a
    checkpoint, mid-way."""
    import time

    from reuters_ray.storage import read_bytes

    fs, where = _on(path)
    deadline = time.monotonic() + wait_s
    while True:
        data = read_bytes(fs, where)
        if data is None:
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def checkpoints(run_dir, fold):
    """{checkpoint folder name: its progress.json} of one fold in Ray storage (registered or not); `run_dir` a local
    Path or a bucket's (filesystem, path)."""
    import pyarrow.fs as pafs

    fs, run = _on(run_dir)
    found = fs.get_file_info(pafs.FileSelector(f"{run}/fold_{fold}", allow_not_found=True))
    out = {}
    for ck in (i for i in found if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")):
        progress = read_json((fs, f"{ck.path}/progress.json"))
        if progress is not None:
            out[ck.base_name] = progress
    return out


def registered(run_dir, fold):
    """{checkpoint folder name: metrics} of the checkpoints Ray Train registered for a fold (its snapshot file)."""
    fs, run = _on(run_dir)
    snap = read_json((fs, f"{run}/fold_{fold}/checkpoint_manager_snapshot.json"), wait_s=5.0) or {}
    return {c["checkpoint_dir_name"]: c["metrics"] for c in snap.get("checkpoint_results", [])}


@pytest.fixture(scope="session")
def tiny_yaml(reuters_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(reuters_dir, folds=FOLDS)))
    return path


@pytest.fixture(scope="session")
def finished_run(ray_head, tiny_yaml, tmp_path_factory):
    """The tiny run, finished, run with --quiet (its stdout is kept in <storage>/stdout.txt)."""
    storage = tmp_path_factory.mktemp("runs")
    out = subprocess.run(cv_cmd(tiny_yaml, storage) + ["--quiet"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (storage / "stdout.txt").write_text(out.stdout)
    return run_dir_of(storage)


def settle(run_dir, quiet_s=3.0, timeout=60.0):
    """Waits until no fold's checkpoint snapshot has changed for quiet_s seconds: after a kill, Ray processes that
    outlive the driver for a moment may still register a checkpoint. `run_dir` as for checkpoints()."""
    import time

    import pyarrow.fs as pafs

    fs, run = _on(run_dir)

    def state():
        folds = [i.path for i in fs.get_file_info(pafs.FileSelector(run)) if i.base_name.startswith("fold_")]
        infos = fs.get_file_info([f"{f}/checkpoint_manager_snapshot.json" for f in sorted(folds)])
        return [(i.path, i.mtime_ns, i.size) for i in infos if i.type == pafs.FileType.File]

    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        now = state()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"{run}: checkpoints still changing after {timeout} s")


# --- helpers shared by several test files ----------------------------------------------------------------------


def same_model_metrics(run, ref):
    """The metrics of `run`, a run without the blend, after checking its ensemble equals that of `ref`."""
    new, old = (json.loads((r / "metrics.json").read_text()) for r in (run, ref))
    assert new["predictor"] == "ensemble" and "blend" not in new and not (run / "linear").exists()
    for key in (
        "accuracy",
        "f1_weighted",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "confusion_matrix",
        "per_class",
    ):
        assert new[key] == new["ensemble"][key] == old["ensemble"][key], key
    assert new["out_of_fold"] == old["out_of_fold"]  # the best models' validation logits survived every restart
    for a, b in zip(new["folds"], old["folds"]):
        assert (a["best_epoch"], a["val_f1_weighted"], a["test_f1_weighted"]) == (
            b["best_epoch"],
            b["val_f1_weighted"],
            b["test_f1_weighted"],
        )
    return new


def copy_reuters(reuters_dir: Path, tmp_path: Path) -> Path:
    """A copy of the 22 .sgm files in tmp_path/reuters, to damage or edit."""
    folder = tmp_path / "reuters"
    folder.mkdir()
    for f in reuters_dir.glob("reut2-*.sgm"):
        shutil.copy(f, folder / f.name)
    return folder


class Exploit:
    """Unpickling this creates the file `path`: what a malicious pickle could do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def latest_checkpoint(folder: Path) -> Path | None:
    """The highest-numbered epoch_NNN checkpoint folder train_fold wrote in `folder`, if any."""
    found = sorted(p for p in Path(folder).glob("epoch_*") if p.is_dir() and not p.name.startswith("."))
    return found[-1] if found else None


def majority_f1(y_true, num_classes: int) -> float:
    """Weighted F1 of always predicting the most frequent class: the floor a model must beat."""
    import numpy as np
    from sklearn.metrics import f1_score

    pred = np.full_like(y_true, np.bincount(y_true, minlength=num_classes).argmax())
    return float(f1_score(y_true, pred, average="weighted", zero_division=0))


def uses_checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on, under either transformers name."""
    flag = getattr(model, "is_activation_checkpointing", None)
    return bool(flag if flag is not None else model.is_gradient_checkpointing)


def make_csv(path, n_per_class=40, seed=0):
    """Short news-like texts with string labels; each class has its own words, so a tiny model can learn it."""
    import numpy as np
    import pandas as pd

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
