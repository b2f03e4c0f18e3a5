"""Where runs live: a local folder or any URI pyarrow's filesystems take (s3://..., gs://...). No Ray here.

Every file goes in through a temporary name and a move, so a reader never sees half a file; this is the one
place that writes run files, local or remote.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

from reuters_ray.errors import DataError

LOCAL = pafs.LocalFileSystem()


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def storage_location(storage_path: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, base path on it, URI Ray accepts) for a local folder or a pyarrow/fsspec URI."""
    if "://" in storage_path:
        fs, base = pafs.FileSystem.from_uri(storage_path)
        return fs, base.rstrip("/"), storage_path.rstrip("/")
    base = os.path.abspath(os.path.expanduser(storage_path))
    return LOCAL, base, base


def unreachable_endpoint(uri: str, timeout: float = 3.0) -> str | None:
    """Why the S3-compatible endpoint named in `uri` (?endpoint_override=host:port) takes no connection, or None
    when it does (or `uri` names none: AWS's own endpoints are left to the SDK). Asked with one TCP connection of at
    most `timeout` seconds, because the AWS SDK retries a dead endpoint for about 20 s before it says so."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    endpoint = query.get("endpoint_override", [""])[0]
    if parts.scheme != "s3" or not endpoint:
        return None
    scheme = query.get("scheme", ["https"])[0]
    where = urlsplit(endpoint if "://" in endpoint else f"{scheme}://{endpoint}")
    try:
        port = where.port or (80 if where.scheme == "http" else 443)
    except ValueError:
        return f"endpoint {endpoint!r}: not host:port"
    try:
        socket.create_connection((where.hostname or "", port), timeout=timeout).close()
    except OSError as e:
        return f"endpoint {where.hostname}:{port} takes no connection ({e.strerror or e})"
    return None


def uri_join(uri: str, *parts: str) -> str:
    """`uri` with path parts added before its query (s3://b/runs?endpoint_override=h:p + run -> s3://b/runs/run?...)."""
    base, sep, query = uri.partition("?")
    return base.rstrip("/") + "".join(f"/{p}" for p in parts) + sep + query


POINTER_MAX = 256  # bytes: a pointer file holds one folder name


def follow_pointer(uri: str) -> str:
    """`uri`, or the sibling folder it names when it is a pointer file in a bucket: one line holding a folder name (a
    search's `best`, which is a symbolic link on a local disk). Local paths are returned as they are."""
    if "://" not in uri:
        return uri
    fs, path, _ = storage_location(uri)
    try:
        info = fs.get_file_info(path)
    except (OSError, ValueError):
        return uri
    if info.type != pafs.FileType.File or info.size > POINTER_MAX:
        return uri
    name = (read_bytes(fs, path) or b"").decode("utf-8", "replace").strip()
    if not name or "/" in name or name in (".", ".."):
        return uri
    base, sep, query = uri.partition("?")
    return base.rstrip("/").rsplit("/", 1)[0] + "/" + name + sep + query


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    """The file's bytes, or None when it is not there (or cannot be read)."""
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError):
        return None


def read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """The file's text, or None when it is not there (or cannot be read)."""
    data = read_bytes(fs, path)
    return None if data is None else data.decode()


def write_atomic(path: str | os.PathLike, data: str | bytes, fs: pafs.FileSystem = LOCAL) -> None:
    """Writes `data` to `path` on `fs` (local by default) through a temporary sibling and a move."""
    path = str(path)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    fs.move(tmp, path)


def copy_dir(src: str, dst: str, src_fs: pafs.FileSystem = LOCAL, dst_fs: pafs.FileSystem = LOCAL) -> None:
    """Copies folder `src` (on src_fs) to `dst` (on dst_fs)."""
    dst_fs.create_dir(dst, recursive=True)  # copy_files makes the folders below dst, not dst itself
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)


CACHE_ENV = "REUTERS_RAY_CACHE"  # where fetched run folders are kept (default ~/.cache/reuters-ray)


def publish_dir(tmp: Path, final: Path, usable: Callable[[Path], bool]) -> Path:
    """Moves `tmp`, a folder this process filled privately, to `final` in one rename, for caches that several
    processes may fill at once. When another process put a folder there first, its copy is kept if `usable` says so
    (and `tmp` removed); else it is swapped out for ours. Returns `final`."""
    try:
        os.rename(tmp, final)  # atomic; refused when `final` is a folder with something in it
        return final
    except OSError:
        if usable(final):
            shutil.rmtree(tmp, ignore_errors=True)
            return final
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
    try:
        os.rename(final, old / "dir")
    except FileNotFoundError:  # gone meanwhile
        pass
    try:
        os.rename(tmp, final)
    except OSError:  # another process swapped its copy in meanwhile: use it if it is whole
        if not usable(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return final


def private_dir(final: Path) -> Path:
    """A new folder of this process's own beside `final` (.<name>.<pid>.<random>), to fill and then publish_dir;
    such folders left by processes that died (killed mid-export) are removed first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{final.name}.*"):
        pid = old.name.split(".")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", dir=final.parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def cache_root() -> Path:
    """Where reuters-ray caches what it fetches or makes: $REUTERS_RAY_CACHE, else ~/.cache/reuters-ray."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/reuters-ray").expanduser()


def fetch_run(uri: str, cache_root_dir: str | os.PathLike | None = None) -> Path:
    """A local copy of the outputs of the run folder at `uri` (everything but Ray Train's checkpoint folders),
    fetched into a cache once and again only when the run's metrics.json changed (a pointer file, a search's `best`,
    followed first). A local path is returned as is.
    Several processes may fetch the same run at once: each fills a private folder, one rename publishes it.
    Raises FileNotFoundError when `uri` holds no metrics.json."""
    if "://" not in uri:
        return Path(uri)
    uri = follow_pointer(uri)  # a search's `best` in a bucket
    fs, path, _ = storage_location(uri)
    metrics = read_bytes(fs, f"{path}/metrics.json")
    if metrics is None:
        raise FileNotFoundError(f"{uri}: no metrics.json there")
    root = (Path(cache_root_dir).expanduser() if cache_root_dir else cache_root()) / "runs"
    local = root / hashlib.sha256(uri.encode()).hexdigest()[:16]

    def current(folder: Path) -> bool:  # metrics.json is written last: a copy holding this one is whole
        return (folder / "metrics.json").is_file() and (folder / "metrics.json").read_bytes() == metrics

    if current(local):
        return local
    tmp = private_dir(local)
    try:
        for info in fs.get_file_info(pafs.FileSelector(path)):
            if info.type == pafs.FileType.Directory and not training_folder(info.base_name):
                copy_dir(info.path, str(tmp / info.base_name), fs, LOCAL)
            elif info.type == pafs.FileType.File and info.base_name != "metrics.json":
                (tmp / info.base_name).write_bytes(read_bytes(fs, info.path) or b"")
        (tmp / "metrics.json").write_bytes(metrics)  # last: the copy is complete when it matches
        tmp.chmod(0o755)  # mkdtemp made it private
        return publish_dir(tmp, local, current)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def training_folder(name: str) -> bool:
    """Whether a run folder's entry `name` is one of Ray Train's runs (checkpoints): fold_<k>, or a student run's
    `student`."""
    return name.startswith("fold_") or name == "student"


def model_dirs(run_dir: Path) -> list[Path]:
    """The model folders of a local finished run: models/fold_<k> in fold order, or a student run's models/student."""
    folds = sorted((run_dir / "models").glob("fold_*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else -1)
    return folds or [p for p in [run_dir / "models" / "student"] if p.is_dir()]


def finished_run(run_dir: str) -> Path:
    """A local copy (fetch_run) of the finished run at `run_dir`, a folder or a storage URI. Raises DataError naming
    it when it has no metrics.json or no models (models/fold_* or a student run's models/student)."""
    missing = (
        f"{run_dir}: no metrics.json or models/fold_* (or models/student) folders; is it a finished reuters-ray run "
        "folder?"
    )
    try:
        local = fetch_run(str(run_dir))
    except (OSError, ValueError):  # nothing there, or a URI pyarrow does not take
        raise DataError(missing) from None
    if not (local / "metrics.json").is_file() or not model_dirs(local):
        raise DataError(missing)
    return local
