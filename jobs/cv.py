"""K-fold cross-validation plus ensemble as a Ray job: the same as `reuters-ray cv`.

python jobs/cv.py --config configs/quick-cpu.yaml
ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/cv.py --config configs/quick-cpu.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, also inside a Ray job's working dir

from reuters_ray.cli import command  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(command(["cv", *sys.argv[1:]]))
