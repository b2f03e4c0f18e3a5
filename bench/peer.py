"""reuters-ray beside its peer: the same k-fold job two ways on the same machine, each a whole process from its start
to its test figures, one right after the other.

    .venv/bin/python bench/peer.py                      # CPU mode: configs/quick-cpu.yaml, both sides twice
    .venv/bin/python bench/peer.py --mode gpu --data.path DIR --model.name minilm-offline   # the full recipe

(a) the peer, bench/peer_trainer.py: the k-fold loop around Hugging Face's Trainer that users write by hand (folds
one after another, logits averaged at the end), on the config's exact sample, model, max_length, epochs, learning
rate, batch size and seed; (b) `jobs/cv.py` with the same config (a fresh run folder each time). Prints each side's
wall seconds and test accuracy, weighted and macro F1 (ours: the fold ensemble and the blend, the run's predictor,
separately), and the ratio peer / reuters-ray of wall seconds (above 1: reuters-ray is faster). Timings are this
machine's; docs/results.md keeps them with the command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = {"cpu": "configs/quick-cpu.yaml", "gpu": None}  # gpu: the defaults, the full recipe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=sorted(MODES), default="cpu", help="cpu: the quick config; gpu: the full recipe")
    p.add_argument("--config", help="a run config instead of the mode's (YAML)")
    p.add_argument("--data.path", dest="data_path", help="the data, overriding the config's")
    p.add_argument("--model.name", dest="model_name", help="the model, overriding the config's")
    p.add_argument("--repeat", type=int, default=2, help="how many times each side runs (default: 2)")
    p.add_argument("--first", choices=["peer", "ours"], default="peer", help="which side runs first in each round")
    p.add_argument("--work", default="/tmp/reuters-ray-bench-peer", help="where our run folders go (emptied first)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat}")
    args.config = args.config or MODES[args.mode]
    if args.config is not None and not (REPO / args.config).is_file() and not Path(args.config).is_file():
        p.error(f"--config {args.config}: no such file")
    if args.mode == "gpu" and args.model_name is None and args.config is None:
        p.error("--mode gpu: name the model (--model.name minilm-offline offline; the default downloads from the hub)")
    return args


def overrides(args: argparse.Namespace) -> list[str]:
    """The flags both sides take: the config and what overrides it."""
    out = ["--config", args.config] if args.config else []
    out += ["--data.path", args.data_path] if args.data_path else []
    return out + (["--model.name", args.model_name] if args.model_name else [])


def timed(cmd: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one whole command, run from the repository root; raises on a non-zero exit."""
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit status {out.returncode}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def run_peer(args: argparse.Namespace) -> dict:
    wall, stdout = timed([sys.executable, "bench/peer_trainer.py", *overrides(args)])
    figures = json.loads(next(line for line in stdout.splitlines() if line.startswith("PEER "))[5:])
    return {"side": "peer (Trainer k-fold loop)", "wall_s": wall, "ensemble": figures}


def run_ours(args: argparse.Namespace, i: int) -> dict:
    storage = Path(args.work) / f"round-{i}"
    shutil.rmtree(storage, ignore_errors=True)
    cmd = [sys.executable, "jobs/cv.py", *overrides(args), "--cv.storage_path", str(storage), "--cv.name", "peer"]
    wall, _ = timed(cmd + ["--quiet"])
    m = json.loads((storage / "peer" / "metrics.json").read_text())
    blend = {k: m[k] for k in ("accuracy", "f1_weighted", "f1_macro")} if m.get("predictor") == "blend" else None
    return {"side": "reuters-ray (jobs/cv.py)", "wall_s": wall, "ensemble": m["ensemble"], "blend": blend,
            "timing": m["timing"], "folds": [f["device"] for f in m["folds"]]}  # fmt: skip


def line(r: dict) -> str:
    f = lambda m: f"accuracy {m['accuracy']:.4f}, weighted F1 {m['f1_weighted']:.4f}, macro F1 {m['f1_macro']:.4f}"  # noqa: E731
    text = f"{r['side']:<28} {r['wall_s']:7.1f} s | fold ensemble: {f(r['ensemble'])}"
    return text + (f" | blend: {f(r['blend'])}" if r.get("blend") else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench/peer.py: mode {args.mode}, config {args.config or 'the defaults'}, {args.repeat} round(s)")
    for i in range(args.repeat):
        sides = [lambda: run_peer(args), lambda i=i: run_ours(args, i)]
        results = [side() for side in (sides if args.first == "peer" else sides[::-1])]
        peer, ours = sorted(results, key=lambda r: r["side"] != "peer (Trainer k-fold loop)")
        print(f"round {i + 1}:")
        print("  " + line(peer))
        print("  " + line(ours) + f" | phases {json.dumps({k: round(v, 1) for k, v in ours['timing'].items()})}")
        print(f"  ratio peer / reuters-ray (wall): {peer['wall_s'] / ours['wall_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
