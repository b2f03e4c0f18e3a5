"""Ray's start-up and the data's tokenization, in a row against at once (start_ray_during; issue 33).

    .venv/bin/python bench/ray_overlap.py            # all 8,227 + 2,043 Reuters-18 wires, max_length 300

Small BERT's uncased vocabulary (small-bert-random). Each way in a fresh process (a local Ray started and shut
down by it): A tokenizes, then calls ray.init; B calls start_ray_during(tokenize), as run_cv does once the
input is checked. Prints both wall times and B/A.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from reuters_ray.config import DataConfig, ModelConfig, RunConfig
from reuters_ray.recipes.cluster import start_ray_during
from reuters_ray.run.inputs import check_input, tokenize_input
cfg = RunConfig(data=DataConfig(path=sys.argv[2], max_length=300), model=ModelConfig(name="small-bert-random"))
prep = check_input(cfg, tokenize_now=False)
t = time.perf_counter()
if sys.argv[1] == "overlapped":
    done = start_ray_during(lambda: tokenize_input(prep, 300))
    ray_up = time.perf_counter()
    tokens_s = done - t
else:
    tokenize_input(prep, 300)
    tokens_s = time.perf_counter() - t
    import ray
    ray.init(log_to_driver=False)
    ray_up = time.perf_counter()
print(json.dumps({"wall_s": ray_up - t, "tokens_s": tokens_s, "texts": len(prep.tokens.ids)}))
import ray
ray.shutdown()
"""


def run(way: str, data: str) -> dict:
    env = dict(os.environ, RAY_DISABLE_USAGE_STATS="1", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", CHILD, way, data], capture_output=True, text=True, env=env, cwd=REPO)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{way}: rc {out.returncode}\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="Reuters-21578 folder (default: $REUTERS21578_PATH, ../shared/data/reuters21578)")
    a = p.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    from common import reuters_path

    data = a.data or reuters_path()
    in_a_row, at_once = run("in_a_row", data), run("overlapped", data)
    print(
        f"{in_a_row['texts']} texts: tokenize then start Ray {in_a_row['wall_s']:.2f} s "
        f"(tokenizing {in_a_row['tokens_s']:.2f} s); at once {at_once['wall_s']:.2f} s "
        f"(tokenizing {at_once['tokens_s']:.2f} s): at once / in a row {at_once['wall_s'] / in_a_row['wall_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
