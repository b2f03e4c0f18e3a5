"""Every shipped config loads and validates, and opens with the command that runs it."""

from pathlib import Path

import pytest

from reuters_ray.cli import build_parser, run_config_from_args
from reuters_ray.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("search-"))
SEARCHES = sorted((REPO / "configs").glob("search-*.yaml"))


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


@pytest.mark.parametrize("path", SEARCHES, ids=lambda p: p.name)
def test_search_file_loads_against_its_run_config_and_names_its_command(path):
    """A search file (search-*.yaml) reads against the run config its command names."""
    import re

    from reuters_ray.run.trials import draw_trials, read_search

    (command,) = [line for line in path.read_text().splitlines() if line.startswith("#") and " tune " in line]
    assert f"--search configs/{path.name}" in command
    base = re.search(r"--config (\S+)", command).group(1)
    cfg = run_config_from_args(build_parser().parse_args(["cv", "--config", str(REPO / base)]))
    trials = draw_trials(read_search(path, cfg))
    assert len(trials) >= 2 and all(set(t) == set(trials[0]) for t in trials)
