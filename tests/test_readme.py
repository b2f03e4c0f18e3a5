"""The commands of the README and of the pages it links to (docs/*.md): every `reuters-ray` / `jobs/cv.py` line
parses with the real parser, and the ones that run in seconds (data summary, baseline, report, predict on the
walk-through's run) run as written. The cv runs themselves are exercised by test_cv.py and test_ray_job.py. The README
stays a front door (at most 12 KB, its first run and result within its first 3 KB), and no sample output shows a
path of the machine it ran on."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, REUTERS_DIR

from reuters_ray.cli import build_parser

BIN = Path(sys.executable).parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]  # the README and every page of docs/
MAIN_COMMAND = ".venv/bin/python jobs/cv.py --config configs/quick-cpu.yaml --cv.name quick"


def fenced_blocks(text: str, lang: str) -> list[str]:
    """The bodies of a page's ```lang blocks."""
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def readme_commands() -> list[str]:
    """Shell command lines in the bash blocks of the README and docs/*.md, continuation lines joined, comments
    dropped."""
    lines = []
    for page in PAGES:
        for block in fenced_blocks(page.read_text(encoding="utf-8"), "bash"):
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


# a path of the machine a sample ran on (/work/main/runs/quick): samples show runs/quick or other relative paths
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|tmp|home|root|Users)/")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_sample_shows_a_machine_path(page):
    text = page.read_text(encoding="utf-8")
    found = [
        f"{lang} block: {line.strip()[:120]}"
        for lang in ("bash", "text")
        for block in fenced_blocks(text, lang)
        for line in block.splitlines()
        if MACHINE_PATH.search(line)
    ]
    assert not found, f"{page.name}: absolute machine paths in samples:\n" + "\n".join(found)


def test_the_readme_is_a_front_door():
    """At most 12 KB, and the quick run's command and its result line start within the first 3 KB: a reader sees
    what it does, how to run it and what it prints before any detail."""
    raw = (REPO / "README.md").read_bytes()
    assert len(raw) <= 12_288, f"README.md is {len(raw)} bytes; move detail to docs/"
    command = raw.find(f"\n{MAIN_COMMAND}\n".encode()) + 1
    result = re.search(rb"^run quick: accuracy [0-9.]+, weighted F1", raw, re.M)
    assert command > 0 and result, "README.md lost its main command or its result line"
    assert command < 3072 and result.start() < 3072, (command, result.start())
    assert command < result.start()


def github_anchor(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation but hyphens and underscores dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_pages_links_lead_somewhere():
    """Every relative link of the README and docs/*.md names a file that exists, and an anchor of a Markdown page
    one of its headings."""
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", linked.read_text(), flags=re.S), re.M)
                if anchor not in {github_anchor(h) for h in headings}:
                    broken.append(f"{page.name}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


PYTHON_IMPORTS = sorted(
    {
        line.strip()
        for page in PAGES
        for block in fenced_blocks(page.read_text(encoding="utf-8"), "python")
        for line in block.splitlines()
        if re.match(r"\s*from reuters_ray[\w.]* import ", line)
    }
)


@pytest.mark.parametrize("line", PYTHON_IMPORTS)
def test_the_pages_python_imports_work(line):
    """Every `from reuters_ray... import ...` line of a page's Python blocks names what the package holds."""
    exec(line.split("#")[0], {})


NOTEBOOK_CELL = next(
    block
    for block in fenced_blocks((REPO / "README.md").read_text(encoding="utf-8"), "python")
    if "TextClassifier" in block and ".fit(" in block
)


@pytest.mark.runs
def test_the_readme_notebook_cell_runs_and_answers_as_predict(ray_head, tiny_yaml, tmp_path):
    """The README's cell as written (the tiny config for quick-cpu, this machine's data folder), in a process of its
    own in an empty folder: it fits on a DataFrame (no file written by the user), prints a leaderboard of at least
    three rows, and its labels of the two texts are what `reuters-ray predict --run <its run folder>` prints."""
    cell = NOTEBOOK_CELL.replace('"quick-cpu"', repr(str(tiny_yaml))).replace(
        "../shared/data/reuters21578", str(REUTERS_DIR)
    )
    texts = re.search(r"clf\.predict\((\[.*?\])\)", cell)[1]
    cell += (
        f"import json\nprint('ROWS', len(clf.leaderboard()))\nprint('LABELS', json.dumps(list(clf.predict({texts}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", cell], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert int(next(line for line in lines if line.startswith("ROWS ")).split()[1]) >= 3
    labels = json.loads(next(line for line in lines if line.startswith("LABELS "))[7:])
    run = tmp_path / "runs" / "quick-frame"
    assert (run / "metrics.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    cli = subprocess.run(
        [str(BIN / "reuters-ray"), "predict", "--run", str(run), *json.loads(texts)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert [line.split("\t")[0] for line in cli.stdout.splitlines()] == labels
