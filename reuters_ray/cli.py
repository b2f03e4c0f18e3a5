"""The `reuters-ray` command.

    reuters-ray data summary [--source S] [--path P] [...]   class table and provenance of any source
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

import yaml

from reuters_ray.config import field_docs, from_dict, load_yaml
from reuters_ray.errors import ReutersRayError

def _summary(args: argparse.Namespace) -> int:
    from reuters_ray.data import load_dataset
    from reuters_ray.features import class_weights
    from reuters_ray.preprocess import preprocess

    cfg = run_config_from_args(args).data
    ds = load_dataset(cfg)
    if not args.raw:
        ds = preprocess(ds, cfg.min_samples, cfg.min_tokens)
    train, test = ds.counts("train"), ds.counts("test")
    weights = class_weights(ds.train_labels, ds.num_classes) if (train > 0).all() else [float("nan")] * ds.num_classes
    rows = [{"label": k, "name": n, "train": int(train[k]), "test": int(test[k]), "weight": round(float(weights[k]), 4)} for k, n in enumerate(ds.label_names)]
    if args.json:
        json.dump({"config": dataclasses.asdict(cfg), "classes": rows, "provenance": ds.provenance}, sys.stdout, indent=2)
        print()
        return 0
    width = max(len(r["name"]) for r in rows + [{"name": "name"}])
    print(f"{'label':>5}  {'name':<{width}}  {'train':>6}  {'test':>6}  {'weight':>7}")
    for r in rows:
        print(f"{r['label']:>5}  {r['name']:<{width}}  {r['train']:>6}  {r['test']:>6}  {r['weight']:>7.2f}")
    print(f"{'':>5}  {'total':<{width}}  {int(train.sum()):>6}  {int(test.sum()):>6}")
    print("\nprovenance:")
    print(json.dumps(ds.provenance, indent=2))
    return 0


def _add_run_flags(p: argparse.ArgumentParser, sections: tuple[str, ...] = ("data", "model", "train", "cv")) -> None:
    """--config plus one --section.key flag per field of RunConfig (YAML keys, same names)."""
    from reuters_ray.config import RunConfig

    p.add_argument("--config", metavar="YAML", help=f"YAML file with {'/'.join(sections)} sections; flags override it")
    for section in dataclasses.fields(RunConfig):
        if section.name not in sections:
            continue
        group = p.add_argument_group(section.name)
        cls = typing.get_type_hints(RunConfig)[section.name]
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")
            group.add_argument(f"--{section.name}.{f.name}", dest=f"{section.name}__{f.name}", default=None, metavar="V", help=text)


def run_config_from_args(args: argparse.Namespace):
    """RunConfig from --config, then the --section.key flags given (flags win)."""
    from reuters_ray.config import RunConfig

    values: dict = load_yaml(args.config) if args.config else {}
    for key, v in vars(args).items():
        if "__" in key and v is not None:
            section, name = key.split("__", 1)
            values.setdefault(section, {})
            if not isinstance(values[section], dict):
                values[section] = {}
            values[section][name] = v
    return from_dict(RunConfig, values)


def _cv(args: argparse.Namespace) -> int:
    from reuters_ray.runner import run_cv

    cfg = run_config_from_args(args)
    print("config:\n" + "\n".join("  " + line for line in yaml.safe_dump(cfg.to_dict(), sort_keys=True).splitlines()))
    run_cv(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reuters-ray", description="Fine-tune small BERT encoders for news-topic classification with Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="inspect a data set").add_subparsers(dest="data_command", required=True)
    summary = data.add_parser("summary", help="class table (name, train, test, weight) and provenance of any source")
    _add_run_flags(summary, sections=("data",))
    summary.add_argument("--raw", action="store_true", help="show the data as loaded, before the preprocessing steps")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=_summary)
    cv = sub.add_parser("cv", help="k-fold cross-validation and the ensemble as a Ray job (same as python jobs/cv.py)",
                        description="Train one model per fold with Ray (concurrently), ensemble them on the test split, "
                        "write the run folder. The same command with the same run name resumes.")
    _add_run_flags(cv)
    cv.set_defaults(func=_cv)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ReutersRayError as e:
        print(f"reuters-ray: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
