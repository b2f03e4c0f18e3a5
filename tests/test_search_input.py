"""A search file's bad input (issue 29): one line naming the key, exit status 2, before Ray starts, nothing written.
And the trials: drawn from the seed alone, the same every time."""

import pytest
import yaml

from reuters_ray.cli import main
from reuters_ray.config import RunConfig
from reuters_ray.run.trials import draw_trials, read_search

GOOD = {"train.lr": {"log_uniform": [1.0e-4, 1.0e-3]}}
CASES = {
    "unknown key": ({"trials": 2, "space": GOOD, "trails": 3}, "unknown key(s) trails; known: "),
    "unknown config key": ({"space": {"train.lrr": {"uniform": [0.1, 0.2]}}}, "train.lrr: not a config key"),
    "a key that places the run": (
        {"space": {"cv.storage_path": {"choice": ["a", "b"]}}},
        "cv.storage_path cannot vary in a search (it places the run or changes its data)",
    ),
    "a key of the data": ({"space": {"data.path": {"choice": ["x.csv"]}}}, "data.path cannot vary in a search"),
    "an empty range": ({"space": {"model.hidden_dropout": {"uniform": [0.3, 0.1]}}}, "an empty range [0.3, 0.1]"),
    "a float range for an integer key": (
        {"space": {"train.batch_size": {"uniform": [8, 32]}}},
        "train.batch_size is an integer key: give {integer: [low, high]} or a choice, not uniform",
    ),
    "an unknown distribution": ({"space": {"train.lr": {"normal": [0.1, 0.2]}}}, "train.lr: give one distribution"),
    "a choice the config refuses": (
        {"space": {"train.batch_size": {"choice": [16, 0]}}},
        "train.batch_size: choice 0: train.batch_size must be >= 1, got 0",
    ),
    "log_uniform from zero": ({"space": {"train.lr": {"log_uniform": [0, 0.1]}}}, "log_uniform needs low > 0"),
    "no trials": ({"trials": 0, "space": GOOD}, "trials must be an integer >= 1, got 0"),
    "no space": ({"trials": 2}, "`space` must map config keys to distributions"),
    "a float range whose upper part the config refuses": (
        {"space": {"model.hidden_dropout": {"uniform": [0.0, 1.5]}}},
        "model.hidden_dropout: [0.0, 1.5]: model.hidden_dropout must be in [0, 1), got 1.4999999999999998",
    ),
    "integer for a float key": (
        {"space": {"train.lr": {"integer": [1, 2]}}},
        "train.lr is a float key: give {uniform: [low, high]}, log_uniform or a choice, not integer",
    ),
    "too many trials": ({"trials": 10**9, "space": GOOD}, "trials must be at most 1000 (each is a whole k-fold run)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_search_file_is_one_line_before_anything(case, tmp_path, capsys):
    spec, expected = CASES[case]
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(spec))
    storage = tmp_path / "runs"
    args = ["tune", "--search", str(tmp_path / "search.yaml"), "--model.name", "tiny-bert-random"]
    assert main([*args, "--cv.storage_path", str(storage), "--quiet"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert out == "" and line.startswith(f"reuters-ray: error: search {tmp_path / 'search.yaml'}: ")
    assert expected in line, line
    assert not storage.exists()


def test_the_trials_are_drawn_from_the_seed_alone(tmp_path):
    spec = {"trials": 5, "seed": 3, "space": {**GOOD, "train.batch_size": {"choice": [8, 16]},
            "data.max_length": {"integer": [24, 64]}, "model.hidden_dropout": {"uniform": [0.0, 0.3]}}}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    first, again = (draw_trials(read_search(tmp_path / "s.yaml", RunConfig())) for _ in range(2))
    assert first == again and len(first) == 5 and len({t["train.lr"] for t in first}) == 5
    for t in first:
        assert 1e-4 <= t["train.lr"] < 1e-3 and t["train.batch_size"] in (8, 16) and 24 <= t["data.max_length"] <= 64
        assert isinstance(t["data.max_length"], int) and 0.0 <= t["model.hidden_dropout"] < 0.3
    spec["seed"] = 4
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert draw_trials(read_search(tmp_path / "s.yaml", RunConfig())) != first


def test_a_search_name_holding_another_search_is_refused_untouched(tmp_path, capsys):
    from conftest import make_csv

    from reuters_ray.config import from_dict
    from reuters_ray.run.trials import check_search, write_search

    make_csv(tmp_path / "news.csv", n_per_class=40)
    flags = {"data": {"source": "table", "path": str(tmp_path / "news.csv"), "text_column": "headline",
                      "label_column": "section", "min_samples": 5},
             "model": {"name": "tiny-bert-random"}, "cv": {"folds": 2, "storage_path": str(tmp_path / "runs")}}  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(flags))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"trials": 2, "seed": 0, "space": GOOD}))
    base = from_dict(RunConfig, flags)
    search = read_search(tmp_path / "s.yaml", base)
    place, trials, _ = check_search(base, search, "s")
    write_search(place, search, base, trials)  # the search as a first run left it
    kept = (tmp_path / "runs" / "s" / "search.json").read_bytes()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"trials": 2, "seed": 1, "space": GOOD}))  # another seed
    args = ["tune", "--config", str(tmp_path / "base.yaml"), "--search", str(tmp_path / "s.yaml"), "--quiet"]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"reuters-ray: error: search 's' in {tmp_path / 'runs'} was made with another search file or base config; "
        "use the same ones to continue it, or another search name (--search-name)"
    )
    assert (tmp_path / "runs" / "s" / "search.json").read_bytes() == kept
    assert sorted(p.name for p in (tmp_path / "runs" / "s").iterdir()) == ["search.json"]


def test_a_search_file_yaml_cannot_read_is_one_line_naming_its_line(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("trials: 2\nspace:\n  train.lr: {log_uniform: [1.0e-4, 1.0e-3]\n")
    assert main(["tune", "--search", str(tmp_path / "s.yaml"), "--cv.storage_path", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"reuters-ray: error: search: {tmp_path / 's.yaml'} is not valid YAML: expected ',' or '}}', but got "
        "'<stream end>' at line 4, column 1"
    )
    assert main(["tune", "--search", str(tmp_path / "nope.yaml")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"reuters-ray: error: search: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    )
    assert not (tmp_path / "runs").exists()


def test_yaml_exponents_without_a_dot_are_numbers_in_ranges(tmp_path):
    """YAML 1.1 reads 1e-5 as a string; a range takes it as the config does, as a float."""
    (tmp_path / "s.yaml").write_text("space:\n  train.lr: {log_uniform: [1e-5, 1e-3]}\n")
    search = read_search(tmp_path / "s.yaml", RunConfig())
    assert search.space["train.lr"].args == (1e-5, 1e-3)
    assert all(1e-5 <= t["train.lr"] < 1e-3 for t in draw_trials(search))


@pytest.fixture
def table_flags(tmp_path):
    from conftest import make_csv

    make_csv(tmp_path / "news.csv", n_per_class=40)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"trials": 2, "space": GOOD}))
    return ["tune", "--search", str(tmp_path / "s.yaml"), "--data.source", "table", "--data.path",
            str(tmp_path / "news.csv"), "--data.text_column", "headline", "--data.label_column", "section",
            "--data.min_samples", "5", "--model.name", "tiny-bert-random", "--cv.folds", "2",
            "--cv.storage_path", str(tmp_path / "runs"), "--quiet"]  # fmt: skip


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--cv.name", "mine"],
            "cv.name: a search names its trials' run folders (trial_<i>); name the search with --search-name",
        ),
        (
            ["--search-name", ""],
            "search name '': a folder name without / \\ ? # %, control characters or spaces at its ends",
        ),
        (["--search-name", "a/b"], "search name 'a/b': a folder name"),
    ],
)
def test_flags_a_search_cannot_take_are_one_line(table_flags, flags, expected, tmp_path, capsys):
    assert main([*table_flags, *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"reuters-ray: error: {expected}"), line
    assert not (tmp_path / "runs").exists()


def test_a_max_length_range_beyond_the_model_is_refused_naming_the_search_key(table_flags, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump({"trials": 2, "space": {"data.max_length": {"integer": [24, 600]}}})
    )
    assert main(table_flags) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"reuters-ray: error: search {tmp_path / 's.yaml'}: data.max_length: [24, 600] reaches 600, but model "
        "'tiny-bert-random' reads at most 512 tokens (max_position_embeddings); keep it at 512 or less"
    )
    assert not (tmp_path / "runs").exists()  # nothing written: a corrected file is taken under this name
