"""Every shipped config loads and validates, and opens with the command that runs it."""

from pathlib import Path

import pytest

from reuters_ray.cli import build_parser, run_config_from_args
from reuters_ray.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"tiny-cpu.yaml", "quick-cpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_names_its_command(path):
    args = build_parser().parse_args(["cv", "--config", str(path)])
    cfg = run_config_from_args(args)
    assert isinstance(cfg, RunConfig)
    assert cfg != RunConfig()  # a config file only overrides defaults, and this one does
    commands = [line for line in path.read_text().splitlines() if line.startswith("#") and "jobs/cv.py" in line]
    assert any(f"--config configs/{path.name}" in line for line in commands), "the file must start with its command"
