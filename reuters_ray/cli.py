"""The `reuters-ray` command.

reuters-ray data summary [--data.KEY V ...]          class table and provenance of any source
reuters-ray cv [--config YAML] [--SECTION.KEY V ...]  k-fold CV + ensemble as a Ray job (= python jobs/cv.py)
reuters-ray tune --search S [--config YAML] [...]     a hyperparameter search, every trial a k-fold run (= jobs/tune.py)
reuters-ray distill --run RUN [--student NAME] [...]  one student model learnt from a run's predictor, a run of its own
reuters-ray report RUN_DIR                            rebuild report.md / report.html of a run folder
reuters-ray predict --run RUN_DIR [TEXT ... | --file F | -]   labels and top-k probabilities for new texts
reuters-ray export --run RUN_DIR --out DIR [--int8]           the run's predictor as ONNX (+ INT8), tokenizer, manifest
reuters-ray serve --run RUN_DIR [--backend B] [--port 8000]    the run's predictor as an HTTP service (Ray Serve)
reuters-ray baseline [--config YAML] [--data.KEY V ...]       the TF-IDF + linear SVM baseline alone
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import re
import sys
import typing
from pathlib import Path

import yaml

from reuters_ray.config import field_docs, load_config, load_yaml
from reuters_ray.errors import ConfigError, DataError, ReutersRayError
from reuters_ray.predictor.export import BACKENDS


def _cmd_data_summary(args: argparse.Namespace) -> int:
    from reuters_ray.data import load_dataset
    from reuters_ray.data.features import class_weights
    from reuters_ray.data.overlap import overlap_notes
    from reuters_ray.data.preprocess import prepare

    cfg = run_config_from_args(args).data
    # what a run trains and tests on (data.train_sample and test_sample included), or with --raw the data as loaded
    ds = load_dataset(cfg) if args.raw else prepare(cfg)
    notes = ds.notes() + overlap_notes(ds, scored_by="`reuters-ray baseline` or `cv`")
    train, test = ds.counts("train"), ds.counts("test")
    weights = class_weights(ds.train_labels, ds.num_classes) if (train > 0).all() else [float("nan")] * ds.num_classes
    rows = [
        {"label": k, "name": n, "train": int(train[k]), "test": int(test[k]), "weight": round(float(weights[k]), 4)}
        for k, n in enumerate(ds.label_names)
    ]
    steps = {s["step"]: s["params"] for s in ds.provenance.get("steps", [])}
    rare = steps.get("filter_rare_classes", {})
    dropped = [{**d, "dropped_by": f"data.min_samples={rare['min_samples']}"} for d in rare.get("dropped_classes", [])]
    if args.json:
        out = {
            "config": dataclasses.asdict(cfg),
            "classes": rows,
            "dropped_classes": dropped,
            "notes": notes,
            "provenance": ds.provenance,
        }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    for line in notes:
        print(line)
    width = max(len(r["name"]) for r in rows + dropped + [{"name": "name"}])
    print(f"{'label':>5}  {'name':<{width}}  {'train':>6}  {'test':>6}  {'weight':>7}")
    for r in rows:
        print(f"{r['label']:>5}  {r['name']:<{width}}  {r['train']:>6}  {r['test']:>6}  {r['weight']:>7.2f}")
    print(f"{'':>5}  {'total':<{width}}  {int(train.sum()):>6}  {int(test.sum()):>6}")
    for d in dropped:  # below the table: what the run will not see, and the setting that dropped it
        print(f"{'-':>5}  {d['name']:<{width}}  {d['train']:>6}  {d['test']:>6}  dropped ({d['dropped_by']})")
    print("\nprovenance:")
    print(json.dumps(ds.provenance, indent=2))
    return 0


def _add_run_flags(
    p: argparse.ArgumentParser, sections: tuple[str, ...] = ("data", "model", "train", "cv", "track")
) -> None:
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
            group.add_argument(
                f"--{section.name}.{f.name}", dest=f"{section.name}__{f.name}", default=None, metavar="V", help=text
            )


def run_config_from_args(args: argparse.Namespace):
    """RunConfig from --config, then the --section.key flags given (flags win)."""
    return load_config(args.config, **_flag_values(args))


def _flag_values(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The --section.key flags given, as {section: {key: value}}."""
    values: dict[str, dict[str, str]] = {}
    for key, v in vars(args).items():
        if "__" in key and v is not None:
            section, name = key.split("__", 1)
            values.setdefault(section, {})[name] = v
    return values


def _cmd_cv(args: argparse.Namespace) -> int:
    from reuters_ray.config import RunConfig
    from reuters_ray.console import Console
    from reuters_ray.recipes.cv import run_cv

    if args.no_baseline:
        args.cv__baseline = "false"
    cfg = run_config_from_args(args)
    console = Console("quiet" if args.quiet else args.log_format)
    # People see what differs from the defaults (the whole config is saved in the run folder); JSON gets it all.
    default = RunConfig().to_dict()
    changed = {s: {k: v for k, v in sec.items() if v != default[s][k]} for s, sec in cfg.to_dict().items()}
    shown = yaml.safe_dump({s: sec for s, sec in changed.items() if sec}, sort_keys=True) or "{}\n"
    console.info(
        "config (what differs from the defaults; all of it is saved as config.yaml in the run folder):\n"
        + "\n".join("  " + line for line in shown.splitlines()),
        config=cfg.to_dict(),
    )
    # stdout is the console's alone (JSON lines stay parseable); Ray prints its own notices to sys.stdout, so
    # those go to stderr for the run.
    with contextlib.redirect_stdout(sys.stderr):
        run_cv(cfg, console)
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from reuters_ray.console import Console
    from reuters_ray.recipes.distill import run_distill, student_config

    if args.transfer is not None:
        args.distill__transfer = args.transfer
    if args.student_layers is not None and args.student_layers < 1:
        raise ConfigError(f"--student-layers must be >= 1, got {args.student_layers}")
    overrides = ([load_yaml(args.config)] if args.config else []) + [_flag_values(args)]
    cfg = student_config(args.run, overrides, args.student, args.student_layers, args.out)
    console = Console("quiet" if args.quiet else args.log_format)
    shown = yaml.safe_dump({"model": dataclasses.asdict(cfg.model), "distill": dataclasses.asdict(cfg.distill)})
    console.info(
        "config (the teacher's, with the student's settings; all of it is saved as config.yaml in the run folder):\n"
        + "\n".join("  " + line for line in shown.splitlines()),
        config=cfg.to_dict(),
    )
    with contextlib.redirect_stdout(sys.stderr):  # Ray's notices; the console keeps stdout
        run_distill(cfg, console)
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from reuters_ray.console import Console
    from reuters_ray.recipes.search import run_search

    cfg = run_config_from_args(args)
    console = Console("quiet" if args.quiet else args.log_format)
    name = Path(args.search).stem if args.search_name is None else args.search_name
    with contextlib.redirect_stdout(sys.stderr):  # Ray's and Tune's notices; the console keeps stdout
        run_search(cfg, args.search, name, console)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from reuters_ray.run.report import write_report

    if "://" not in args.run_dir:
        for path in write_report(args.run_dir):
            print(path)
        return 0
    # A run in a bucket: its outputs fetched into the local cache, the report built there and written back.
    from reuters_ray.storage import fetch_run, follow_pointer, storage_location, uri_join, write_atomic

    args.run_dir = follow_pointer(args.run_dir)  # a search's `best`: the report goes to the trial's folder
    try:
        local = fetch_run(args.run_dir)
    except (OSError, ValueError) as e:
        raise DataError(f"{args.run_dir}: cannot read it as a finished reuters-ray run folder ({e})") from None
    fs, path, _ = storage_location(args.run_dir)
    for written in write_report(local):  # report.md last, as in a run
        write_atomic(f"{path}/{written.name}", written.read_bytes(), fs)
        print(uri_join(args.run_dir, written.name))
    return 0


def _read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from the arguments (one each), --file or standard input ('-'): one per line, lines split only at \\n
    (a \\r before it dropped), never at the other characters Python counts as line breaks. Blank lines are texts too
    (each gets the "no text" answer), so answers line up with lines. Bytes that are not UTF-8 are replaced by U+FFFD
    and named in one warning line on stderr."""
    if args.file and args.texts:
        raise ConfigError("give texts as arguments or --file, not both")
    if "-" in args.texts and args.texts != ["-"]:
        raise ConfigError("- reads the texts from standard input and stands alone; give it without other texts")
    if args.file or args.texts == ["-"]:
        from reuters_ray.data.table import wide_encoding

        where_from = f"--file {args.file}" if args.file else "standard input"
        try:
            data = Path(args.file).read_bytes() if args.file else _stdin_bytes()
        except OSError as e:
            raise ConfigError(f"{where_from}: cannot read it ({e.strerror or e})") from None
        if wide := wide_encoding(data):
            raise ConfigError(f"{where_from}: {wide}; give UTF-8 text (e.g. iconv -f UTF-16 -t UTF-8)")
        data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is not text
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the newline that ends the last line starts no new one
        lines = [line.removesuffix(b"\r") for line in lines]
        where = "line"
    else:  # arguments the shell could not decode reach Python as surrogates: back to their bytes
        lines = [os.fsencode(t) for t in args.texts]
        where = "argument"
    texts, bad = [], []
    for n, line in enumerate(lines, 1):
        try:
            texts.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(line.decode("utf-8", "replace"))
            bad.append(n)
    if bad:
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        where += "s" if len(bad) > 1 else ""
        print(f"reuters-ray: warning: {where} {shown}: bytes that are not UTF-8 replaced by U+FFFD", file=sys.stderr)
    if lone_cr := [n for n, t in enumerate(texts, 1) if "\r" in t]:
        shown = ", ".join(map(str, lone_cr[:20])) + (" ..." if len(lone_cr) > 20 else "")
        print(
            f"reuters-ray: warning: {where}{'s' if len(lone_cr) > 1 else ''} {shown}: a carriage return inside the "
            f"text (lines end only at \\n; for a file with old Mac line ends: tr '\\r' '\\n')",
            file=sys.stderr,
        )
    if not texts:
        raise ConfigError("no texts to predict: give TEXT arguments, --file F or - for standard input")
    return texts


_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """`text` with every character some reader takes for a line break, a column break (tab) or a control written as
    a \\u escape: one answer stays one line of three columns for `wc -l`, `cut`, Python's splitlines and a terminal
    alike (in JSON, the same escapes decode to the same text)."""
    return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _stdin_bytes() -> bytes:
    """Standard input as bytes (a text stream without a byte buffer, as tests give, is encoded back)."""
    buffer = getattr(sys.stdin, "buffer", None)
    return buffer.read() if buffer is not None else sys.stdin.read().encode("utf-8", "surrogateescape")


def _cmd_predict(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from reuters_ray.fold.inference import check_device
    from reuters_ray.predictor.ensemble import Ensemble

    for flag, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    table_flags = {"--out": args.out, "--text-column": args.text_column, "--engine": args.engine}
    if args.table is None and (given := [f for f, v in table_flags.items() if v is not None]):
        raise ConfigError(f"{given[0]} is for --table IN: give the table to label")
    if args.table is not None:
        if args.texts or args.file:
            raise ConfigError("give --table or texts (arguments, --file or -), not both")
        if args.out is None:
            raise ConfigError("--table needs --out OUT: where the labelled table goes (a new file or folder)")
        if args.json:
            raise ConfigError("--json is for texts; a table's answers are columns of --out")
    texts = _read_texts(args) if args.table is None else []
    if args.device is not None:
        if args.backend != "torch":
            raise ConfigError(f"--device is for --backend torch; the {args.backend} export runs on onnxruntime's CPU")
        if args.engine != "ray-data":
            check_device(args.device)
        elif args.device != "cpu" and not args.device.startswith("cuda"):  # the cluster's devices, not this machine's
            raise ConfigError(f"--device {args.device!r}: with --engine ray-data, cpu or cuda (the cluster's GPUs)")
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per fold model is noise here
    if args.table is not None:  # the local engine, or Ray Data's (reuters_ray.predictor.batch)
        where = dict(run=args.run, table=args.table, out=args.out, text_column=args.text_column or "text")
        how = dict(top_k=args.top_k, batch_size=args.batch_size, backend=args.backend, device=args.device)
        if args.engine == "ray-data":
            from reuters_ray.predictor.batch import predict_dataset

            with contextlib.redirect_stdout(sys.stderr):  # Ray's notices; stdout holds the result line alone
                line = predict_dataset(**where, **how)
        else:
            from reuters_ray.predictor.tables import predict_table

            line = predict_table(**where, **how)
        print(line)
        return 0
    ens = Ensemble.load(args.run, backend=args.backend, device=args.device)
    k = min(args.top_k or 3, len(ens.label_names))
    for start in range(0, len(texts), args.batch_size):
        batch = texts[start : start + args.batch_size]
        for text, answer in zip(batch, ens.answers(batch, k)):
            if args.json:
                print(_one_line(json.dumps({"text": text, **answer}, ensure_ascii=False)))
            elif "note" in answer:
                print(f"-\t({answer['note']})\t{_one_line(text[:60])}")
            elif ens.multi_label:  # the label set, then the top k
                chosen = "|".join(x["label"] for x in answer["labels"]) or "(none)"  # --cv.at_least_one false
                shown = "  ".join(f"{t['label']} {t['p']:.3f}" for t in answer["top"])
                print(f"{chosen}\t{shown}\t{_one_line(text[:60])}")
            else:
                shown = "  ".join(f"{t['label']} {t['p']:.3f}" for t in answer["top"])
                print(f"{answer['label']}\t{shown}\t{_one_line(text[:60])}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from reuters_ray.predictor.ensemble import Ensemble
    from reuters_ray.predictor.export import GRAPHS

    hf_logging.disable_progress_bar()
    out = Ensemble.from_run(args.run, device="cpu").export(args.out, int8=args.int8)
    manifest = json.loads((out / "manifest.json").read_text())
    for name in GRAPHS.values():
        if name in manifest["graphs"]:
            print(f"{out / name}: {(out / name).stat().st_size / 2**20:.1f} MiB")
    if manifest["predictor"] == "student":
        print(
            f"exported student run {manifest['run']} (one model; {len(manifest['label_names'])} labels, max_length "
            f"{manifest['max_length']}) to {out}"
        )
        return 0
    print(
        f"exported run {manifest['run']} ({manifest['folds']} fold models averaged in one graph"
        + (
            f", blended with its linear model at weight {manifest['blend_weight']:.2f}"
            if manifest["blend_weight"]
            else ""
        )
        + f"; {len(manifest['label_names'])} labels, max_length {manifest['max_length']}) to {out}"
    )
    return 0


def _cannot_listen(host: str, port: int) -> str | None:
    """Why nothing can listen on host:port here (an address not of this machine, a port in use), or None."""
    import socket

    try:
        with socket.create_server((host, port)):
            return None
    except OSError as e:
        return e.strerror or str(e)


def _cmd_serve(args: argparse.Namespace) -> int:
    from reuters_ray.storage import finished_run

    if args.replicas < 1:
        raise ConfigError(f"--replicas must be >= 1, got {args.replicas}")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, got {args.port}")
    if why := _cannot_listen(args.host, args.port):  # before Ray starts, which would fail only after its start-up
        raise ConfigError(f"--host {args.host} --port {args.port}: cannot listen there ({why}); choose another")
    export_dir = None
    if args.backend == "torch":  # checked here, before Ray starts: the replicas load the models themselves
        finished_run(args.run)
    else:
        from transformers.utils import logging as hf_logging

        from reuters_ray.predictor.ensemble import cached_export

        hf_logging.disable_progress_bar()
        export_dir = str(cached_export(args.run, args.backend))  # made once; every replica reads the same folder

    from reuters_ray.predictor.serve import run_service

    run_service(str(args.run), args.backend, export_dir, host=args.host, port=args.port, replicas=args.replicas)
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from reuters_ray.data.overlap import shared_test_note
    from reuters_ray.data.preprocess import prepare
    from reuters_ray.scoring.baseline import run_baseline
    from reuters_ray.scoring.evaluate import unseen_line

    ds = prepare(run_config_from_args(args).data)
    # what loading and preprocessing did, and test texts that are training texts, as a run's first lines say it
    notes = ds.notes() + [n for n in [shared_test_note(ds, "the baseline")] if n]
    m = run_baseline(ds)
    if args.json:
        print(json.dumps({**m, "notes": notes}, indent=2))
        return 0
    for line in notes:
        print(line)
    print(f"{m['name']}: fitted on {len(ds.train_texts)} training texts in {m['fit_s']:.1f} s")
    if ds.multi_label:
        print(
            f"test ({m['n_test']} texts, {ds.num_classes} topics): micro-F1 {m['f1_micro']:.4f}, macro-F1 "
            f"{m['f1_macro']:.4f}, samples-F1 {m['f1_samples']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, Hamming "
            f"loss {m['hamming_loss']:.4f}" + unseen_line({**m, "task": "multi"})
        )
        return 0
    print(
        f"test ({m['n_test']} texts): accuracy {m['accuracy']:.4f}, weighted F1 {m['f1_weighted']:.4f}, macro F1 {m['f1_macro']:.4f}"
        + unseen_line(m)
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `reuters-ray` command: one sub-parser per verb."""
    parser = argparse.ArgumentParser(
        prog="reuters-ray", description="Fine-tune small BERT encoders for news-topic classification with Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_data,
        _add_cv,
        _add_tune,
        _add_distill,
        _add_report,
        _add_predict,
        _add_export,
        _add_serve,
        _add_baseline,
    ):
        add(sub)
    return parser


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="inspect a data set").add_subparsers(dest="data_command", required=True)
    summary = data.add_parser("summary", help="class table (name, train, test, weight) and provenance of any source")
    _add_run_flags(summary, sections=("data",))
    summary.add_argument(
        "--raw", action="store_true", help="show the data as loaded, before the preprocessing steps and samples"
    )
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=_cmd_data_summary)


def _add_cv(sub) -> None:
    cv = sub.add_parser(
        "cv",
        help="k-fold cross-validation and the ensemble as a Ray job (same as python jobs/cv.py)",
        description="Train one model per fold with Ray (concurrently), ensemble them on the test split, "
        "write the run folder. The same command with the same run name resumes.",
    )
    _add_run_flags(cv)
    out = cv.add_argument_group("output")
    out.add_argument(
        "--no-baseline", action="store_true", help="skip the TF-IDF + linear SVM baseline (same as --cv.baseline false)"
    )
    out.add_argument("--quiet", action="store_true", help="print only the result line (errors still go to stderr)")
    out.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: a table row per fold epoch and a progress line; json: one JSON object per line (default: text)",
    )
    cv.set_defaults(func=_cmd_cv)


def _add_tune(sub) -> None:
    tune = sub.add_parser(
        "tune",
        help="hyperparameter search on Ray Tune: every trial a whole k-fold cross-validation (same as python jobs/tune.py)",
        description="Draws the trials of a search file from its seed, runs each as a k-fold cross-validation in "
        "<cv.storage_path>/<search name>/trial_<i> (folds at once, trials as many at once as the cluster has room "
        "for), ends bad trials early (ASHA on the folds' mean best validation figure of train.monitor; unset: "
        "weighted F1, micro-F1 for multi-label data), and writes trials.csv, search.json, "
        "report.html and `best`. The same command again continues the search.",
    )
    tune.add_argument("--search", required=True, metavar="YAML", help="the search file: which keys vary and how")
    tune.add_argument("--search-name", metavar="NAME", help="the search's folder (default: the search file's name)")
    _add_run_flags(tune)
    _add_output_flags(tune)
    tune.set_defaults(func=_cmd_tune)


def _add_output_flags(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--quiet and --log-format text|json: what a Ray job's driver prints (tune, distill; cv adds its own)."""
    out = p.add_argument_group("output")
    out.add_argument("--quiet", action="store_true", help="print only the result line (errors still go to stderr)")
    out.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="text or JSON lines (default: text)"
    )
    return out


def _add_distill(sub) -> None:
    distill = sub.add_parser(
        "distill",
        help="distil a finished run's predictor into one student model: a run folder of its own",
        description="Trains one student model as a Ray Train run on the training split's true labels and on the "
        "teacher run's out-of-fold predictor probabilities (soft targets no model saw the text for), a slice of the "
        "training split held out for early stopping; scores the test split and writes a run folder (report, "
        "metrics.json with the teacher beside the student, models/student) that predict, export and serve take. "
        "Settings: the teacher's config.yaml, then --config, then the flags. The same command again resumes.",
    )
    distill.add_argument("--run", required=True, metavar="RUN", help="the teacher: a finished run folder or URI")
    distill.add_argument(
        "--student", metavar="NAME", help="the student's model (hub id, folder or alias; default: the teacher's)"
    )
    distill.add_argument(
        "--student-layers", type=int, metavar="N", help="keep the student encoder's first N layers (model.layers)"
    )
    distill.add_argument(
        "--transfer",
        choices=("none", "unlabeled"),
        help="the same as --distill.transfer: unlabeled also learns the "
        "teacher's answers on the Reuters-21578 wires the run's data left out",
    )
    distill.add_argument(
        "--out",
        metavar="NAME",
        help="the student run's name in cv.storage_path (default: derived; cv.storage_path "
        "defaults to the folder holding the teacher)",
    )
    _add_run_flags(distill, sections=("data", "model", "train", "cv", "distill", "track"))
    _add_output_flags(distill)
    distill.set_defaults(func=_cmd_distill)


def _add_report(sub) -> None:
    report = sub.add_parser(
        "report",
        help="rebuild report.md and report.html (with figures) from a run folder",
        description="Rebuild a finished run's report (report.md, report.html, PNG figures) from its files.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder: <cv.storage_path>/<run name>")
    report.set_defaults(func=_cmd_report)


def _add_predict(sub) -> None:
    predict = sub.add_parser(
        "predict",
        help="predict labels for new texts with a finished run's ensemble",
        description="Label new texts with a run's fold ensemble (averaged logits). One text per "
        "argument, or one per line from --file or standard input (-).",
    )
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label; - reads them from standard input")
    predict.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run folder (with models/fold_*)")
    predict.add_argument("--file", metavar="F", help="a UTF-8 text file, one text per line")
    predict.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help="probabilities shown per text (default: 3); with --table, columns top_1_label, top_1_p, ... top_K_p "
        "instead of one p_<label> column per class",
    )
    predict.add_argument("--batch-size", type=int, default=64, metavar="N", help="texts scored at once (default: 64)")
    tables = predict.add_argument_group("tables in, tables out")
    tables.add_argument(
        "--table",
        metavar="IN",
        help="label the texts of a table: .csv, .tsv, .parquet or .jsonl, a local path or a URI (s3://...); every row "
        "and column is kept and the answers added (label or labels, p_<label> ...)",
    )
    tables.add_argument("--text-column", metavar="C", help="the table's text column (default: text)")
    tables.add_argument(
        "--out",
        metavar="OUT",
        help="where the labelled table goes: a new file of any of the formats (--engine local), or a new folder of "
        "Parquet files (--engine ray-data); never overwritten",
    )
    tables.add_argument(
        "--engine",
        choices=("local", "ray-data"),
        help="local: the table in memory, scored here (up to a few hundred thousand rows); ray-data: read, scored "
        "by a pool of actors and written by Ray Data on the Ray cluster in RAY_ADDRESS, else a local Ray "
        "(default: local)",
    )
    predict.add_argument("--device", metavar="D", help="cpu, cuda, cuda:1 (default: cuda when there is one)")
    predict.add_argument("--json", action="store_true", help="one JSON object per text: label and top-k probabilities")
    predict.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch: the fold models; onnx / onnx-int8: the run's ONNX export (fp32 / INT8 weights, CPU), "
        "made once into ~/.cache/reuters-ray/exports (default: torch)",
    )
    predict.set_defaults(func=_cmd_predict)


def _add_export(sub) -> None:
    export = sub.add_parser(
        "export",
        help="export a finished run's predictor as ONNX (optionally INT8) with its tokenizer and a manifest",
        description="One ONNX graph that averages the fold models' logits (dynamic batch and sequence length, "
        "weights inside), the tokenizer, a blended run's linear model and manifest.json (run, config hash, "
        "test metrics, labels, max_length, SHA-256 of each graph).",
    )
    export.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run folder (or storage URI)")
    export.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder to write")
    export.add_argument("--int8", action="store_true", help="also write model.int8.onnx: dynamic INT8 weights")
    export.set_defaults(func=_cmd_export)


def _add_serve(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve a finished run's predictor over HTTP with Ray Serve (POST /predict, GET /labels, GET /healthz)",
        description="A Ray Serve deployment of the run's predictor, texts of concurrent requests batched together. "
        "Joins the Ray cluster in RAY_ADDRESS, else starts a local one. Runs until Ctrl-C.",
    )
    serve.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run folder (or storage URI)")
    serve.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="what scores the texts: the fold models, or the run's ONNX export (fp32 / INT8) (default: torch)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    serve.add_argument("--replicas", type=int, default=1, metavar="N", help="copies of the predictor (default: 1)")
    serve.set_defaults(func=_cmd_serve)


def _add_baseline(sub) -> None:
    baseline = sub.add_parser(
        "baseline",
        help="fit and score the TF-IDF + linear SVM baseline alone (no Ray, seconds)",
        description="The baseline of every cv run, alone: fitted on the same preprocessed training "
        "split, scored on the same test split.",
    )
    _add_run_flags(baseline, sections=("data",))
    baseline.add_argument("--json", action="store_true", help="print all metrics (per class, confusion matrix) as JSON")
    baseline.set_defaults(func=_cmd_baseline)


# The verbs that run until done or stopped: a stop signal ends them with one line (reuters_ray.stopping)
LONG_VERBS = ("cv", "tune", "distill", "serve")


def main(argv: list[str] | None = None) -> int:
    from reuters_ray import stopping

    args = build_parser().parse_args(argv)
    if args.command in LONG_VERBS:
        stopping.install()
    try:
        return args.func(args)
    except ReutersRayError as e:
        print(f"reuters-ray: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # stopping.Stopped, or Ray's own in its place
        stopping.say()
        return stopping.status()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        return 1  # what the Python docs advise (its exit status is not the pipeline's anyway)
    finally:
        stopping.uninstall()


def command(argv: list[str] | None = None) -> int:
    """main() in a process that ends with it (the reuters-ray command, jobs/*.py). Its objects are frozen out of the
    garbage collector once main returns: the interpreter's last collection at exit would walk every one of them
    (torch, Ray, the data) for nothing, about 1 s of a run's end on 2 cores (docs/results.md, issue 45). Everything
    the command writes is written and closed by then."""
    code = main(argv)
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(command())
