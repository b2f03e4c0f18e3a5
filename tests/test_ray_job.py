"""cluster.yaml against Ray's own cluster-config schema. (The `ray job submit` fault test: test_cluster.py.)"""

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert [t["node_config"]["InstanceType"] for t in cfg["available_node_types"].values()] == [
        "m5.xlarge",
        "g4dn.xlarge",
        "g4dn.12xlarge",  # several GPUs for one fold (cv.workers_per_fold)
    ]
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in yaml.safe_dump(cfg)
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu_worker"]["node_confg"] = {}  # a typo Ray must catch
    with pytest.raises(Exception, match="node_confg"):
        validate_config(prepare_config(broken))
