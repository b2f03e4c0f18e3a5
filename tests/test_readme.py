"""The README's commands: every `reuters-ray` / `jobs/cv.py` line parses with the real parser, and the ones that
run in seconds (data summary, baseline, report, predict on the walk-through's run) run as written. The cv runs
themselves are exercised by test_cv.py and test_ray_job.py."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, REUTERS_DIR

from reuters_ray.cli import build_parser

BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """Shell command lines in the README's bash blocks, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def reuters_ray_argv(line: str) -> list[str] | None:
    """The argv after `reuters-ray` (with `cv` for jobs/cv.py) of one command line, or None for other commands."""
    line = line.split("|")[-1].strip()  # the command a pipe feeds
    words = shlex.split(line)
    if words[:3] == ["ray", "job", "submit"] and "--" in words:  # the job's own command
        words = words[words.index("--") + 1 :]
    if words[:1] == [".venv/bin/reuters-ray"]:
        return words[1:]
    if words[:2] == [".venv/bin/python", "jobs/cv.py"] or words[:2] == ["python", "jobs/cv.py"]:
        return ["cv", *words[2:]]
    return None


COMMANDS = [(line, argv) for line in readme_commands() if (argv := reuters_ray_argv(line)) is not None]


def test_the_readme_shows_every_verb():
    verbs = {"data", "cv", "tune", "distill", "report", "predict", "baseline", "export", "serve"}
    assert {argv[0] for _, argv in COMMANDS} == verbs


@pytest.mark.parametrize("line,argv", COMMANDS, ids=[line[:70] for line, _ in COMMANDS])
def test_readme_command_parses(line, argv):
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:  # --help exits 0; unknown flags and bad choices exit 2
        assert e.code == 0 and "--help" in argv, f"{line}: exit status {e.code}"


MULTILABEL = [line for line, _ in COMMANDS if "modapte" in line]  # run by test_multilabel_run.py (marker multilabel)
RUNS_NOW = [
    line
    for line, argv in COMMANDS
    if line not in MULTILABEL
    and (
        argv[0] in ("report", "baseline")
        or (argv[0] == "predict" and "--backend" not in argv)  # the ONNX backends: test_export
        or (argv[:2] == ["data", "summary"] and "news.csv" not in line)
    )
]


@pytest.mark.parametrize("line", RUNS_NOW, ids=[line[:70] for line in RUNS_NOW])
def test_readme_command_runs(line, finished_run, tmp_path):
    """Run as written from the repository root, with the walk-through's run folder (runs/quick) and the search's
    best trial (a run folder too) being the tiny test run, and the data folder the one the tests use."""
    line = line.replace(".venv/bin/", f"{BIN}/").replace("runs/search-quick-cpu/best", str(finished_run))
    line = line.replace("runs/quick", str(finished_run))
    line = line.replace("../shared/data/reuters21578", str(REUTERS_DIR))
    if "configs/quick-cpu.yaml" in line:  # its data.path is relative to the repository root
        line += f" --data.path {REUTERS_DIR}"
    out = subprocess.run(["bash", "-c", line], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()
