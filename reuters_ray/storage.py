"""Where runs live: a local folder or any URI pyarrow's filesystems take (s3://..., gs://...). No Ray here.

Every file goes in through a temporary name and a move, so a reader never sees half a file; this is the one
place that writes run files, local or remote.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs

LOCAL = pafs.LocalFileSystem()


def storage_location(storage_path: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, base path on it, URI Ray accepts) for a local folder or a pyarrow/fsspec URI."""
    if "://" in storage_path:
        fs, base = pafs.FileSystem.from_uri(storage_path)
        return fs, base.rstrip("/"), storage_path.rstrip("/")
    base = os.path.abspath(os.path.expanduser(storage_path))
    return LOCAL, base, base


def uri_join(uri: str, *parts: str) -> str:
    """`uri` with path parts added before its query (s3://b/runs?endpoint_override=h:p + run -> s3://b/runs/run?...)."""
    base, sep, query = uri.partition("?")
    return base.rstrip("/") + "".join(f"/{p}" for p in parts) + sep + query


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
