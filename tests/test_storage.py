"""Run storage on a real S3 API: moto's server on 127.0.0.1 (the `test` extra), its bucket made here. No Ray: the
storage layer the driver, the ensemble actor and the outputs use, and bad storage refused before anything runs."""

import numpy as np
import pyarrow.fs as pafs
import pytest
from conftest import moto_bucket, tiny_config

from reuters_ray.run.outputs import publish_outputs
from reuters_ray.run.place import check_writable
from reuters_ray.storage import LOCAL, copy_dir, read_bytes, read_text, storage_location, uri_join, write_atomic


@pytest.fixture(scope="module")
def s3():
    """(bucket URI maker, the server's S3FileSystem): s3://<bucket>/<path>?endpoint_override=127.0.0.1:<port>..."""
    with moto_bucket() as bucket:
        yield bucket


def test_uri_join_keeps_the_query_last():
    assert uri_join("s3://b/runs?endpoint_override=h:1&scheme=http", "run", "a.html") == (
        "s3://b/runs/run/a.html?endpoint_override=h:1&scheme=http"
    )
    assert uri_join("/tmp/runs/", "run") == "/tmp/runs/run" and uri_join("gs://b", "r") == "gs://b/r"


def test_a_run_folder_goes_into_a_bucket_and_back(s3, tmp_path):
    uri, server_fs = s3
    fs, base, base_uri = storage_location(uri("bkt/runs"))
    assert base == "bkt/runs" and base_uri == uri("bkt/runs")
    run = f"{base}/some-run"
    check_writable(fs, run, base_uri)
    write_atomic(f"{run}/config.yaml", "a: 1\n", fs)
    assert read_text(fs, f"{run}/config.yaml") == "a: 1\n" and read_bytes(fs, f"{run}/nothing") is None
    local = tmp_path / "out"
    (local / "models" / "fold_0").mkdir(parents=True)
    (local / "models" / "fold_0" / "model.safetensors").write_bytes(b"\0" * 100_000)
    (local / "linear").mkdir()
    (local / "linear" / "vocabulary.json").write_text("[]")
    for name in ("report.md", "metrics.json", "report.html"):
        (local / name).write_text(name)
    publish_outputs(local, fs, run)
    listed = sorted(
        i.path for i in server_fs.get_file_info(pafs.FileSelector(run, recursive=True)) if i.type == pafs.FileType.File
    )
    assert listed == [
        f"{run}/{p}"
        for p in ("config.yaml", "linear/vocabulary.json", "metrics.json", "models/fold_0/model.safetensors",
                  "report.html", "report.md")
    ]  # fmt: skip
    back = tmp_path / "back"
    copy_dir(f"{run}/models", str(back), fs, LOCAL)  # as the ensemble actor and resume fetch folders
    assert (back / "fold_0" / "model.safetensors").read_bytes() == b"\0" * 100_000


def test_a_bucket_that_does_not_exist_is_refused_before_anything_runs(s3, reuters_dir, tmp_path, capsys):
    import yaml

    from reuters_ray.cli import main

    uri, server_fs = s3
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(reuters_dir)))
    storage = uri("no-such-bucket/runs")
    assert main(["cv", "--config", str(cfg), "--cv.storage_path", storage]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"reuters-ray: error: cv.storage_path {storage!r} cannot be written: Bucket 'no-such-bucket' not found. "
        "To create buckets, enable the allow_bucket_creation option."
    ]
    assert server_fs.get_file_info("no-such-bucket").type == pafs.FileType.NotFound  # nothing made, nothing written


def test_an_endpoint_that_takes_no_connection_is_refused_at_once(reuters_dir, tmp_path, capsys):
    """A dead S3-compatible endpoint: one line naming the storage path, the endpoint and the cause (from one TCP
    connection, not after the AWS SDK's 20 s of retries), and nothing written anywhere."""
    import socket

    import yaml

    from reuters_ray.cli import main

    with socket.socket() as sock:  # a port nobody listens on: bound, then closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(reuters_dir)))
    storage = f"s3://bkt/runs?endpoint_override=127.0.0.1:{port}&scheme=http"
    assert main(["cv", "--config", str(cfg), "--cv.storage_path", storage]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"reuters-ray: error: cv.storage_path {storage!r}: endpoint 127.0.0.1:{port} takes no connection "
        "(Connection refused)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_a_bucket_the_clusters_nodes_cannot_write_is_refused_before_training(s3, ray_head, tiny_yaml, capsys):
    """The driver has the bucket's credentials, the Ray cluster's nodes do not (conftest.ray_head starts without
    AWS_*): one line naming the storage path, the node and the cause, before any fold starts, and the new run's
    folder removed again from the bucket. The driver in this process: it joins the tests' head (RAY_ADDRESS)."""
    from reuters_ray.cli import main

    uri, server_fs = s3
    storage = uri("bkt/no-creds")
    assert main(["cv", "--config", str(tiny_yaml), "--cv.storage_path", storage]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"reuters-ray: error: cv.storage_path {storage!r} cannot be written from Ray node ")
    assert "AWS Error ACCESS_DENIED during PutObject" in line and line.endswith(
        "(every node needs the bucket's credentials: an instance profile, or AWS_* variables where `ray start` ran)"
    )
    left = server_fs.get_file_info(pafs.FileSelector("bkt/no-creds", allow_not_found=True, recursive=True))
    assert [i.path for i in left if i.type == pafs.FileType.File] == []


def test_the_table_source_reads_its_files_from_a_bucket(s3, tmp_path):
    from conftest import make_csv

    from reuters_ray.data.table import load_table
    from reuters_ray.errors import DataError

    uri, server_fs = s3
    make_csv(tmp_path / "train.csv", n_per_class=20, seed=0)
    make_csv(tmp_path / "test.csv", n_per_class=5, seed=1)
    for name in ("train.csv", "test.csv"):
        write_atomic(f"bkt/data/{name}", (tmp_path / name).read_bytes(), server_fs)
    args = {"text_column": "headline", "label_column": "section"}
    remote = load_table(uri("bkt/data/train.csv"), test_path=uri("bkt/data/test.csv"), **args)
    local = load_table(str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"), **args)
    for field in ("train_texts", "test_texts", "label_names", "train_ids", "test_ids"):
        assert getattr(remote, field) == getattr(local, field), field
    assert (remote.train_labels == local.train_labels).all() and len(remote.test_texts) == 15
    prov = remote.provenance
    assert prov["path"] == uri("bkt/data/train.csv") and prov["split"]["test_path"] == uri("bkt/data/test.csv")
    assert prov["sha256"] == local.provenance["sha256"]
    with pytest.raises(
        DataError, match=r"bkt/data/nothing.csv\?endpoint_override=.*: no such file, or it cannot be read"
    ):
        load_table(uri("bkt/data/nothing.csv"), **args)


def test_predict_and_report_on_a_run_in_a_bucket(s3, finished_run, tmp_path, monkeypatch, capsys):
    from reuters_ray.cli import main
    from reuters_ray.predictor.ensemble import Ensemble

    uri, server_fs = s3
    copy_dir(str(finished_run), "bkt/runs/tiny", LOCAL, server_fs)  # the tiny run, as if it had run on S3
    for name in ("report.md", "report.html"):
        server_fs.delete_file(f"bkt/runs/tiny/{name}")
    run = uri("bkt/runs/tiny")
    monkeypatch.setenv("REUTERS_RAY_CACHE", str(tmp_path / "cache"))
    texts = ["Oil prices rose sharply after OPEC cut output", "Quarterly earnings per share rose to 1.20 dlrs"]
    remote = Ensemble.from_run(run, device="cpu")
    (cached,) = (tmp_path / "cache" / "runs").iterdir()  # fetched once: the outputs, not the fold checkpoints
    assert (cached / "models" / "fold_0" / "model.safetensors").is_file() and (cached / "linear").is_dir()
    assert not [p for p in cached.glob("fold_*") if p.is_dir()]
    local = Ensemble.from_run(finished_run, device="cpu")
    np.testing.assert_array_equal(remote.predict_proba(texts), local.predict_proba(texts))
    stamp = (cached / "models" / "fold_0" / "model.safetensors").stat().st_mtime_ns
    Ensemble.from_run(run, device="cpu")
    assert (cached / "models" / "fold_0" / "model.safetensors").stat().st_mtime_ns == stamp  # not fetched again

    capsys.readouterr()
    assert main(["report", run]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == uri("bkt/runs/tiny/report.md") and len(printed) == 5
    md = read_text(server_fs, "bkt/runs/tiny/report.md")
    assert md.startswith("# reuters-ray run ") and "| blend: " in md
    assert main(["predict", "--run", uri("bkt/runs/nothing"), "some text"]) == 2
    assert "is it a finished reuters-ray run folder?" in capsys.readouterr().err
