"""`reuters-ray data summary` as a user runs it: the installed console script, real files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reuters_ray.config import DataConfig, from_dict
from reuters_ray.errors import ConfigError

# The console script that pip installed beside this interpreter.
SCRIPT = str(Path(sys.executable).parent / "reuters-ray")


def run(*args):
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_summary_prints_the_seed_class_table(reuters_dir):
    out = run("data", "summary", "--data.path", str(reuters_dir))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # first, what Keras's rules do to the wires (one topic each), then the 28 dropped topics with their training
    # counts, the texts they take along and the setting that dropped them
    assert lines[0] == (
        "Keras's Reuters-46 rule: each wire is labelled by its first topic (1455 training and 365 test wires list "
        "other topics too), and the 139 wires whose first topic labels fewer than 15 wires are left out; --data.split "
        "modapte --data.task multi keeps every topic of a wire"
    )
    lines = lines[1:]
    assert lines[0].startswith(
        "dropped 28 class(es) with fewer than data.min_samples=50 training examples and their 755 training and 203 "
        "test texts (training count in brackets)"
    )
    assert lines[0].endswith(": wheat (17), copper (48), housing (16), reserves (49), cotton (26), carcass (20), "
                             "nat-gas (39), meal-feed (15), alum (41), tin (24), strategic-metal (15), livestock (48), "
                             "retail (19), ipi (45), iron-steel (39), rubber (32), heat (11), lei (10), bop (49), "
                             "zinc (19), orange (19), pet-chem (24), dlr (36), gas (30), silver (13), wpi (21), "
                             "hog (12), lead (18)")  # fmt: skip
    lines = lines[next(i for i, line in enumerate(lines) if line.split()[:2] == ["label", "name"]) :]
    assert lines[0].split() == ["label", "name", "train", "test", "weight"]
    assert lines[1].split() == ["0", "cocoa", "55", "12", "2.21"]
    assert lines[4].split() == ["3", "earn", "3159", "813", "0.04"]
    assert lines[19].split() == ["total", "8227", "2043"]
    # then each dropped class as a row of the table: 755 training and 203 test wires in all (data-notes)
    dropped = [line.split() for line in lines[20:48]]
    assert dropped[0] == ["-", "wheat", "17", "5", "dropped", "(data.min_samples=50)"]
    assert sum(int(r[2]) for r in dropped) == 755 and sum(int(r[3]) for r in dropped) == 203
    assert '"checksums": "match Reuters-21578 Distribution 1.0"' in out.stdout


def test_summary_json_from_yaml_config_with_flag_override(reuters_dir, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data:\n  path: {reuters_dir}\n  min_samples: 500\n")
    out = run("data", "summary", "--config", str(cfg), "--data.text", "keras", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert [c["name"] for c in d["classes"]] == ["earn", "acq", "money-fx"]  # >= 500 training wires
    assert d["provenance"]["text_mode"] == "keras" and d["config"]["min_samples"] == 500


def test_bad_input_gives_one_clear_line(tmp_path):
    out = run("data", "summary", "--data.path", str(tmp_path / "missing"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"reuters-ray: error: data path {tmp_path / 'missing'} does not exist (expected a folder of reut2-*.sgm files or reuters21578.tar.gz)"
    ]
    out = run(
        "data",
        "summary",
        "--data.source",
        "table",
        "--data.path",
        str(tmp_path / "x.csv"),
        "--data.min_samples",
        "lots",
    )
    assert out.returncode == 2 and "data.min_samples must be int, got 'lots'" in out.stderr


def test_python_module_entry_point_matches_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "reuters_ray.cli", "data", "summary", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--data.text_column" in out.stdout and "the column holding the text" in out.stdout


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key.*data.min_sample;"):
        from_dict(DataConfig, {"min_sample": 3}, where="data.")
    with pytest.raises(ConfigError, match="data.text must be title\\+body or keras"):
        from_dict(DataConfig, {"text": "body"})
    with pytest.raises(ConfigError, match="data.max_length must be >= 8"):
        DataConfig(max_length=0)
    assert from_dict(DataConfig, {"test_size": "0.3", "keras_num_words": "null"}) == DataConfig(
        test_size=0.3, keras_num_words=None
    )
