"""The layout the code keeps (issue 28), checked from its source: no import circle, Ray behind its two modules, no
function longer than a screen and a half, the epoch row's keys spelled in one place."""

import ast
import re
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "reuters_ray"
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "reuters_ray":  # from reuters_ray import rows
                found |= {f"reuters_ray.{a.name}" for a in node.names}
    return found


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
    assert len(graph) >= 25


def test_ray_is_imported_by_the_runner_and_the_service_alone():
    users = {p.name: {m for m in imports(p) if m == "ray" or m.startswith("ray.")} for p in MODULES}
    assert {name for name, mods in users.items() if mods} == {"runner.py", "serve.py"}
    assert not any(m.startswith("ray.serve") or m == "ray.serve" for m in users["runner.py"])
    assert not any(m.startswith("ray.train") for m in users["serve.py"])


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{p.relative_to(REPO)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in MODULES
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80
    ]
    assert long == []


def test_the_epoch_rows_keys_are_spelled_in_rows_py_alone():
    keys = set(re.findall(r'"((?:train|val|time|best|memory)/[a-z_0-9]+)"', (PACKAGE / "rows.py").read_text()))
    assert {"val/f1_weighted", "time/epoch_s", "train/loss"} <= keys
    for path in [*MODULES, *sorted((REPO / "bench").glob("*.py"))]:
        if path.name == "rows.py":
            continue
        spelled = set(re.findall(r'"((?:train|val|time|best|memory)/[a-z_0-9]+)"', path.read_text())) & keys
        assert spelled == set(), f"{path.relative_to(REPO)} spells {sorted(spelled)}: use reuters_ray.rows"
