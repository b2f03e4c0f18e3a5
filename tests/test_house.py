"""The layout the code keeps (issues 28 and 42), checked from its source: rooms cut by concept, each importing only
the rooms below it, without a circle; Ray Train, Ray Tune and Ray Serve each behind one module; short functions and
modules; own-package imports at the top; a declared public face; the epoch row's keys spelled in one place."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "reuters_ray"
MODULES = sorted(PACKAGE.rglob("*.py"))

# The rooms, lowest first; a module may import its own room and the ones below it, never one above. run and
# predictor stand side by side (neither imports the other); the ground modules import only each other.
GROUND = {"config", "errors", "console", "rows", "storage", "stopping"}
RANKS = {"ground": 0, "data": 1, "scoring": 2, "fold": 3, "run": 4, "predictor": 4, "track": 5, "recipes": 6, "cli": 7}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def room(module: str) -> str:
    """The room of a module of the package: its subpackage, "ground", or "cli" (the package's face counts as cli)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "cli"  # reuters_ray/__init__.py: the public face, above everything it names
    return "ground" if parts[1] in GROUND else parts[1]


def own_imports(path: Path) -> list[tuple[str, ast.ImportFrom, bool]]:
    """(module imported, the node, whether inside a function) for every import of the package's own modules."""
    tree = ast.parse(path.read_text())
    inner = {
        id(m)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for m in ast.walk(f)
        if isinstance(m, ast.ImportFrom)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reuters_ray":
            names = [node.module]
            if node.module == "reuters_ray":  # from reuters_ray import rows
                names = [f"reuters_ray.{a.name}" for a in node.names]
            found += [(n, node, id(node) in inner) for n in names]
    return found


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found | {m for m, _, _ in own_imports(path)}


def test_the_package_imports_without_a_circle():
    graph = {module_name(p): {m for m in imports(p) if m.startswith("reuters_ray.")} for p in MODULES}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            assert state.get(d) != "open", f"import circle: {' -> '.join(path[path.index(d) :] + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert len(graph) >= 40


def test_every_module_lives_in_a_room():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == GROUND | {"cli"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(RANKS) - {
        "ground",
        "cli",
    }


def test_no_room_imports_a_room_above_it_or_beside_it():
    wrong = []
    for p in MODULES:
        here = room(module_name(p))
        for target, node, _ in own_imports(p):
            there = room(target)
            if there != here and RANKS[there] >= RANKS[here]:
                wrong.append(f"{p.relative_to(REPO)}:{node.lineno} ({here}) imports {target} ({there})")
    assert wrong == []


def test_ray_train_tune_and_serve_each_behind_one_module():
    def ray_users(prefix: str) -> set[str]:
        return {
            str(p.relative_to(PACKAGE))
            for p in MODULES
            if any(m == prefix or m.startswith(prefix + ".") for m in imports(p))
        }

    # the driver's side in cluster.py; what the folds' own Ray processes unpickle, light, in fold_worker.py
    assert ray_users("ray.train") == {"recipes/cluster.py", "recipes/fold_worker.py"}
    assert ray_users("ray.tune") == {"recipes/search.py"}
    assert ray_users("ray.serve") == {"predictor/serve.py"}
    # Ray Data's batch inference (predict --engine ray-data) is predictor/batch.py's; cluster.py imports one Ray Data
    # internal, the autoscaling coordinator that Ray Train's controllers share (_create_train_shared_actors)
    assert ray_users("ray.data") == {"predictor/batch.py", "recipes/cluster.py"}
    # Ray's application metrics (ray.util.metrics), the dashboard's live view of the folds, are track/live.py's
    assert ray_users("ray.util.metrics") == {"track/live.py"}
    assert ray_users("ray") == {
        "recipes/cluster.py",
        "recipes/fold_worker.py",
        "recipes/search.py",
        "predictor/serve.py",
        "predictor/batch.py",
        "track/live.py",
    }


def test_no_module_imports_ray_before_it_runs():
    """Importing every module of the package imports no Ray: the three that use it import it when they run, so bad
    input is refused, and data, scoring, fold, run and the ground are used, without Ray."""
    code = "".join(f"import {module_name(p)}\n" for p in MODULES)
    code += "import sys; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{p.relative_to(REPO)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in MODULES
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80
    ]
    assert long == []


def test_no_module_is_longer_than_700_lines():
    long = {str(p.relative_to(REPO)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 700}
    assert long == {}


def test_own_imports_sit_at_the_top_outside_the_cli():
    """Inside a function only where a heavy or optional dependency is deferred (10 at most outside the CLI, each
    with its reason in a comment on its line); the CLI defers the rooms each verb needs, so `--help` and bad input
    answer at once."""
    inner = [(p, node) for p in MODULES if p.name != "cli.py" for _, node, in_function in own_imports(p) if in_function]
    assert len(inner) <= 10
    for p, node in inner:
        line = p.read_text().splitlines()[node.lineno - 1]
        assert "#" in line, f"{p.relative_to(REPO)}:{node.lineno}: an import inside a function says why"


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{p.relative_to(REPO)}:{node.lineno} {target} {a.name}"
        for p in [*MODULES, *sorted((REPO / "bench").glob("*.py"))]
        for target, node, _ in own_imports(p)
        for a in node.names
        if a.name.startswith("_") and target != module_name(p)
    ]
    assert private == []


def test_no_two_modules_define_the_same_name():
    """Each function and class is defined once in the package: no same-named twins in sibling modules."""
    where: dict[str, list[str]] = {}
    for p in MODULES:
        for n in ast.parse(p.read_text()).body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("__"):
                where.setdefault(n.name, []).append(str(p.relative_to(PACKAGE)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def test_few_lines_are_kept_from_the_formatter():
    skips = sum(p.read_text().count("# fmt: skip") for p in MODULES)
    assert skips <= 8


def test_the_public_face_names_what_users_call():
    import reuters_ray

    assert set(reuters_ray.__all__) >= {
        "RunConfig",
        "DataConfig",
        "load_config",
        "load_dataset",
        "TextDataset",
        "Ensemble",
        "run_cv",
        "run_search",
        "run_distill",
        "DataError",
        "ConfigError",
    }
    for name in reuters_ray.__all__:
        assert getattr(reuters_ray, name) is not None, name
    assert reuters_ray.run_cv is importlib.import_module("reuters_ray.recipes.cv").run_cv
    assert issubclass(reuters_ray.DataError, reuters_ray.ReutersRayError)


def test_the_epoch_rows_keys_are_spelled_in_rows_py_alone():
    keys = set(re.findall(r'"((?:train|val|time|best|memory)/[a-z_0-9]+)"', (PACKAGE / "rows.py").read_text()))
    assert {"val/f1_weighted", "time/epoch_s", "train/loss"} <= keys
    for path in [*MODULES, *sorted((REPO / "bench").glob("*.py"))]:
        if path.name == "rows.py":
            continue
        spelled = set(re.findall(r'"((?:train|val|time|best|memory)/[a-z_0-9]+)"', path.read_text())) & keys
        assert spelled == set(), f"{path.relative_to(REPO)} spells {sorted(spelled)}: use reuters_ray.rows"
