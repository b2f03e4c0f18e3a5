"""`reuters-ray predict --table IN --out OUT --engine ray-data`: a table scored across a Ray cluster by Ray Data, never
collected into the driver. Ray Data reads IN (read_parquet, read_csv, read_json, with the local engine's pyarrow
options: tables.reader_options) in blocks (at least 4 per actor), scores them --batch-size rows at a time with
map_batches over a pool of actors (TableScorer: each loads the run's predictor once; one actor per CPU of the cluster,
or per GPU where the run scores on GPUs: actor_pool), adds the columns the local engine adds (tables.with_answers), and
writes Parquet files into the folder OUT, part-00000.parquet, part-00001.parquet, ... in the input's order (Ray Data's
preserve_order). The files are written under a hidden sibling folder and moved into OUT at the end (a local folder in
one rename).

On a cluster of several machines, IN, OUT and the run are best URIs every node reads (s3://..., gs://...): a local
path names a different disk on each. The only module besides recipes/cluster.py, recipes/search.py and
predictor/serve.py that imports Ray, and only when it runs."""

from __future__ import annotations

import os
import uuid
from pathlib import PurePosixPath

import pyarrow.fs as pafs

from reuters_ray import stopping
from reuters_ray.data.table import FORMATS
from reuters_ray.errors import ConfigError, DataError
from reuters_ray.predictor.ensemble import Ensemble
from reuters_ray.predictor.tables import (
    check_added_columns,
    check_new,
    check_table,
    locate,
    reader_options,
    with_answers,
)
from reuters_ray.storage import CACHE_ENV


class TableScorer:
    """map_batches' callable class: an actor of the pool loads the run's predictor once, then answers batches (pyarrow
    tables) by adding the answer columns."""

    def __init__(self, run: str, backend: str, device: str | None, text_column: str, top_k: int | None):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per fold model is noise in the logs
        self.ens = Ensemble.load(run, backend=backend, device=device)
        self.text_column, self.top_k = text_column, top_k

    def __call__(self, batch):
        return with_answers(batch, self.ens, self.text_column, self.top_k)


def out_folder(out: str) -> None:
    """Raises DataError unless `out` names a new folder for Parquet files: a name that ends as a CSV, TSV or JSON
    Lines file does not."""
    suffix = PurePosixPath(out.partition("?")[0].rstrip("/")).suffix.lower()
    if FORMATS.get(suffix, "parquet") != "parquet":
        raise DataError(
            f"--out {out}: --engine ray-data writes Parquet files into a folder; name one (such as scored/ or "
            "scored.parquet), or use --engine local for a single .csv, .tsv or .jsonl file"
        )
    check_new(out)


def actor_pool(backend: str, device: str | None, resources: dict) -> dict:
    """The actor pool for a cluster of `resources` (ray.cluster_resources()): {"size", "num_gpus", "device"}. A torch
    run on a cluster with GPUs (or --device cuda) gets an actor per GPU, else one actor per CPU (each scoring with one
    thread: Ray's OMP_NUM_THREADS); the ONNX backends run on onnxruntime's CPU. Each actor claims one CPU (and its
    GPU), so that Ray places them by the nodes' room; Ray Data's reading and writing tasks claim none (IO_CPUS)."""
    gpus = int(resources.get("GPU", 0))
    on_gpu = backend == "torch" and (device.startswith("cuda") if device else gpus > 0)
    if on_gpu:
        if gpus < 1:
            raise ConfigError(f"--device {device}: the Ray cluster has no GPU")
        return {"size": gpus, "num_gpus": 1, "device": "cuda"}  # each actor sees its own GPU as cuda:0
    size = max(1, int(resources.get("CPU", 1)))
    return {"size": size, "num_gpus": 0, "device": "cpu" if backend == "torch" else None}


# Ray Data's reading and writing tasks wait on storage more than they compute: they claim no CPU, so that a pool of
# an actor per CPU leaves them room (a task that waits for a CPU the actors hold would wait for ever).
IO_CPUS = 0
BLOCK_BYTES = 16 << 20  # of IN per block at most; and at least 4 blocks per actor, so that every actor gets some


def predict_dataset(
    run: str,
    table: str,
    out: str,
    text_column: str = "text",
    top_k: int | None = None,
    batch_size: int = 64,
    backend: str = "torch",
    device: str | None = None,
) -> str:
    """--engine ray-data (module docstring). Every check comes before Ray starts: `out` a new folder, `table`
    readable with a text column (its head read here), the run's predictor loadable here (which also makes an ONNX
    backend's export once), no answer column in the table already. Joins RAY_ADDRESS's cluster, else starts a local
    Ray and stops it at the end. Returns the result line."""
    fmt, columns = check_table(table, text_column, folders=True)
    out_folder(out)
    ens = Ensemble.load(run, backend=backend, device="cpu" if backend == "torch" else None)
    check_added_columns(table, columns, ens, top_k)

    import ray  # only now: bad input is refused without starting (or even importing) Ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init(log_to_driver=False)
        stopping.reinstall()  # ray.init's SIGTERM handler exits with status 15 and says nothing
    ctx = ray.data.DataContext.get_current()  # this process's: set for this dataset, then back as it was
    saved = ctx.execution_options.preserve_order, ctx.use_datasource_v2
    ctx.execution_options.preserve_order = True  # the output rows in the input's order
    ctx.use_datasource_v2 = False  # Parquet read by one operator, as the others: its file listing would claim a CPU
    try:
        actors = actor_pool(backend, device, ray.cluster_resources())
        ds = _read_dataset(table, fmt, columns, 4 * actors["size"])
        ds = ds.map_batches(
            TableScorer,
            fn_constructor_args=(run, backend, actors["device"], text_column, top_k),
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors["size"]),
            num_cpus=1,
            num_gpus=actors["num_gpus"],
            # the driver's cache of runs fetched from a bucket (and of exports), when it names one, is the actors' too
            **({"runtime_env": {"env_vars": {CACHE_ENV: os.environ[CACHE_ENV]}}} if os.environ.get(CACHE_ENV) else {}),
        )
        rows, files = _write_dataset(ds, out)
    finally:
        ctx.execution_options.preserve_order, ctx.use_datasource_v2 = saved
        if started:
            ray.shutdown()
    return f"wrote {rows} rows to {out} ({files} Parquet file{'s' if files != 1 else ''}, {actors['size']} actors)"


def _read_dataset(table: str, fmt: str, columns: list[str], min_blocks: int):
    """IN as a Ray Data dataset (a file, or a folder of files of its format), in blocks of at most BLOCK_BYTES of IN
    and at least `min_blocks` of them."""
    import math

    import ray.data

    fs, inner = locate(table)
    ends = [s.lstrip(".") for s, f in FORMATS.items() if f == fmt]
    info = fs.get_file_info(inner)
    files = [info] if info.type == pafs.FileType.File else fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    size = sum(i.size or 0 for i in files if i.type == pafs.FileType.File and i.base_name.lower().endswith(tuple(ends)))
    options = {
        "filesystem": fs,
        "file_extensions": ends,
        "num_cpus": IO_CPUS,
        "override_num_blocks": max(min_blocks, math.ceil(size / BLOCK_BYTES)),
        **reader_options(fmt, columns),
    }
    if fmt == "parquet":
        return ray.data.read_parquet(inner, **options)
    if fmt == "jsonl":
        return ray.data.read_json(inner, **options)
    return ray.data.read_csv(inner, **options)


def _write_dataset(ds, out: str) -> tuple[int, int]:
    """Writes `ds` as Parquet files into the new folder `out`, named part-<n>.parquet in the dataset's order: Ray
    Data writes them under a hidden sibling folder, then they move into `out` (a local folder in one rename; in a
    bucket file by file, each a copy on the bucket's side). Returns (rows, files)."""
    import pyarrow.parquet as pq

    fs, inner = locate(out)
    parent, _, name = inner.rstrip("/").rpartition("/")
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
    local = isinstance(fs, pafs.LocalFileSystem)
    try:
        ds.write_parquet(tmp, filesystem=fs, ray_remote_args={"num_cpus": IO_CPUS})
        written = sorted(
            i.path
            for i in fs.get_file_info(pafs.FileSelector(tmp, allow_not_found=True))
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
        )  # Ray Data names them <dataset>_<write>_<task index, 6 digits>...: sorted, in the dataset's order
        rows = 0
        for path in written:
            with fs.open_input_file(path) as f:
                rows += pq.read_metadata(f).num_rows
        check_new(out)  # again: the scoring may have taken a while
        fs.create_dir(tmp if local else inner, recursive=True)  # no rows: no file, and no folder from Ray Data
        for n, path in enumerate(written):
            fs.move(path, f"{tmp if local else inner}/part-{n:05d}.parquet")
        if local:
            fs.move(tmp, inner)
    finally:
        try:
            fs.delete_dir(tmp)
        except OSError:  # moved, or never made
            pass
    return rows, len(written)
