"""Hyperparameter search over cross-validation as a Ray job: the same as `reuters-ray tune`.

python jobs/tune.py --config configs/quick-cpu.yaml --search configs/search-quick-cpu.yaml
ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/tune.py --config ... --search ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, also inside a Ray job's working dir

from reuters_ray.cli import command  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(command(["tune", *sys.argv[1:]]))
