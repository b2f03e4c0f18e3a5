"""What the driver prints, from epoch rows as train_fold makes them (no Ray needed)."""

import io
import json

from reuters_ray.console import Console, duration


def row(fold, epoch, f1, best_f1=None, finished=False, restarts=0, epoch_s=30.0, max_epochs=3):
    return {
        "fold": fold,
        "seed": 42 + fold,
        "epoch": epoch,
        "train/loss": 0.8,
        "val/loss": 0.7,
        "val/accuracy": 0.5,
        "val/precision_weighted": 0.5,
        "val/recall_weighted": 0.5,
        "val/f1_weighted": f1,
        "val/f1_macro": 0.4,
        "time/epoch_s": epoch_s,
        "best/f1_weighted": best_f1 or f1,
        "best/epoch": epoch,
        "finished": finished,
        "max_epochs": max_epochs,
        "restarts": restarts,
        "worker/pid": 123,
    }


def test_text_mode_prints_rows_and_progress_with_time_left():
    out = io.StringIO()
    c = Console("text", out)
    c.info("run x: /runs/x")
    c.epoch(row(0, 1, 0.4, epoch_s=40))
    c.epoch(row(1, 1, 0.5, epoch_s=30))
    c.epoch(row(0, 3, 0.6, finished=True))
    lines = out.getvalue().splitlines()
    assert lines[0] == "run x: /runs/x" and lines[1].startswith("fold | epoch | train loss")
    assert lines[2].split("|")[:2] == ["   0 ", "     1 "] and lines[2].endswith(" *")
    # rows without "monitor" (as checkpoints before it wrote them) follow weighted F1, under best/f1_weighted
    assert lines[3] == "progress, best val weighted F1: fold 0 1/3 0.4000 | at most 1 min 20 s left"  # 2 epochs x 40 s
    assert lines[5] == "progress, best val weighted F1: fold 0 1/3 0.4000 | fold 1 1/3 0.5000 | at most 1 min 20 s left"
    assert (
        lines[7]
        == "progress, best val weighted F1: fold 0 3/3 done 0.6000 | fold 1 1/3 0.5000 | at most 1 min 0 s left"
    )
    c.epoch(row(1, 3, 0.55, finished=True))
    assert out.getvalue().splitlines()[-1].endswith("| all folds done")


def test_progress_names_the_folds_still_waiting_for_room():
    """5 folds on room for 2: the folds Ray has queued have no row yet; the line says so and never "all folds done"
    before they are."""
    out = io.StringIO()
    c = Console("text", out)
    c.expected = {0, 1, 2, 3, 4}
    c.epoch(row(0, 1, 0.4, epoch_s=40))
    assert (
        c.progress_line()
        == "progress, best val weighted F1: fold 0 1/3 0.4000 | folds 1, 2, 3, 4 waiting | at most 1 min 20 s left for "
        "the running folds"
    )
    c.epoch(row(2, 3, 0.5, finished=True))
    c.epoch(row(0, 3, 0.6, finished=True))
    assert c.progress_line().endswith("| folds 1, 3, 4 waiting | waiting for the other folds")
    for k in (1, 3):
        c.epoch(row(k, 3, 0.5, finished=True))
    assert c.progress_line().endswith("| fold 4 waiting | waiting for the other folds")
    c.epoch(row(4, 3, 0.5, finished=True))
    assert c.progress_line().endswith("| fold 4 3/3 done 0.5000 | all folds done")


def test_json_mode_is_one_object_per_line_and_notes_restarts():
    out = io.StringIO()
    c = Console("json", out)
    c.epoch(row(2, 1, 0.4))
    c.epoch(row(2, 2, 0.5, restarts=1))  # the row after a worker restart
    c.done("run x: accuracy 0.5", f1_weighted=0.5)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["epoch", "restart", "epoch", "done"]
    assert events[1]["fold"] == 2 and events[1]["after_epoch"] == 1
    assert events[0]["val/f1_weighted"] == 0.4 and "worker/pid" not in events[0]
    assert events[3]["f1_weighted"] == 0.5


def test_quiet_mode_prints_the_result_only():
    out = io.StringIO()
    c = Console("quiet", out)
    c.info("run x")
    c.epoch(row(0, 1, 0.4))
    c.done("run x: accuracy 0.5")
    assert out.getvalue() == "run x: accuracy 0.5\n"


def test_durations():
    assert [duration(s) for s in (0.4, 59.6, 61, 3600 * 2 + 65)] == ["0 s", "1 min 0 s", "1 min 1 s", "2 h 1 min"]
