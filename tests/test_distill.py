"""`reuters-ray distill`'s parts in the default suite, on the shared tiny run (conftest.finished_run, a blended
2-fold run) as the teacher, without training a student: the soft targets equal the teacher's out-of-fold blend
probabilities, rebuilt here independently (the folds' own validation logits, one linear model fitted per fold); the
held-out slice; bad input gets one line before anything is written; the soft-target loss, model.layers, older runs.
A student trained through Ray (a multi-label one, with transfer wires; its folder, predict and export):
test_multilabel_run.py, marker multilabel; `serve` on a student's run folder: test_serve_alone.py, marker slow."""

import json
import math

import numpy as np
import pytest
import torch


def test_soft_targets_are_the_teachers_out_of_fold_blend_probabilities(finished_run):
    """distill.check_student's soft targets against a rebuild without distill's code: each fold's best model's
    validation logits (its checkpoint in storage), one linear model fitted per fold on the fold_assignment.json folds,
    the teacher's calibration and blend weight. And the held-out slice: stratified, seeded, never the test split."""
    from safetensors.numpy import load_file

    from reuters_ray.recipes.distill import check_student, student_config
    from reuters_ray.scoring.baseline import LinearModel
    from reuters_ray.scoring.metrics import softmax

    teacher = finished_run
    cfg = student_config(str(teacher), [], None, None, "pupil")
    prep = check_student(cfg)
    ds = prep.ds
    m = json.loads((teacher / "metrics.json").read_text())
    assignment = json.loads((teacher / "fold_assignment.json").read_text())
    fold = np.array([assignment[i] for i in ds.train_ids])
    p_ensemble = np.full((len(fold), ds.num_classes), np.nan)
    linear_scores = np.full_like(p_ensemble, np.nan)
    for k in range(len(m["folds"])):
        last = json.loads((teacher / f"fold_{k}" / "fold_result.json").read_text())["checkpoint"]
        logits = load_file(str(teacher / f"fold_{k}" / last / "best" / "val_logits.safetensors"))
        (values,) = logits.values()
        val = np.flatnonzero(fold == k)  # the fold's validation rows, in training-split order as the fold saw them
        p_ensemble[val] = softmax(values)
        train = np.flatnonzero(fold != k)
        model = LinearModel.fit([ds.train_texts[i] for i in train], ds.train_labels[train], ds.num_classes)
        linear_scores[val] = model.scores([ds.train_texts[i] for i in val])
    p_linear = LinearModel.load(teacher / "linear").proba_of_scores(linear_scores)
    w = m["blend"]["weight"]
    want = w * p_ensemble + (1 - w) * p_linear
    np.testing.assert_allclose(prep.soft_targets, want, atol=2e-6)
    assert 0 < w < 1 and not np.allclose(prep.soft_targets, p_ensemble, atol=1e-3)  # the linear model's share
    assert prep.fingerprint == json.loads((teacher / "data_fingerprint.json").read_text())  # the teacher's data

    ((train_idx, val_idx),) = prep.folds
    assert len(val_idx) == round(0.1 * len(ds.train_ids)) and len(train_idx) + len(val_idx) == len(ds.train_ids)
    assert not set(train_idx) & set(val_idx)
    share = np.bincount(ds.train_labels[val_idx], minlength=ds.num_classes) / len(val_idx)
    assert np.abs(share - np.bincount(ds.train_labels, minlength=ds.num_classes) / len(ds.train_ids)).max() < 0.03
    assert prep.roles().count("validation") == len(val_idx) and "transfer" not in prep.roles()
    assert cfg.cv.storage_path == str(teacher.parent) and cfg.distill.teacher == str(teacher.resolve())


def _refused(args, tmp_path, capsys):
    """The error line of `reuters-ray distill ARGS` (in this process: refused before Ray), after checking that it is
    the only line and that nothing was written."""
    from reuters_ray.cli import main

    storage = tmp_path / "storage"
    capsys.readouterr()
    assert main(["distill", *args, "--cv.storage_path", str(storage)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reuters-ray: error: "), out.err[-2000:]
    assert not storage.exists() or not any(storage.iterdir())  # nothing written
    return lines[0]


def _copy_outputs(teacher, dst, leave_out=()):
    import shutil

    shutil.copytree(teacher, dst, ignore=lambda d, names: [n for n in names if n in leave_out and d == str(teacher)])
    return dst


def test_a_run_made_before_out_of_fold_predictions_is_refused(finished_run, tmp_path, capsys):
    old = _copy_outputs(finished_run, tmp_path / "old", leave_out=("oof_predictions.parquet", "fold_0", "fold_1"))
    line = _refused(["--run", str(old)], tmp_path, capsys)
    assert f"{old}: no oof_predictions.parquet" in line and "train the teacher again" in line


def test_an_unfinished_run_and_a_folder_that_is_no_run_are_refused(finished_run, tmp_path, capsys):
    unfinished = _copy_outputs(finished_run, tmp_path / "unfinished", leave_out=("metrics.json", "models"))
    assert f"{unfinished}: no metrics.json" in _refused(["--run", str(unfinished)], tmp_path, capsys)
    assert "no-such-run: no metrics.json" in _refused(["--run", str(tmp_path / "no-such-run")], tmp_path, capsys)


@pytest.mark.parametrize(
    "args, said",
    [
        (["--student", "no-such-model"], "student: model.name 'no-such-model' cannot be loaded"),
        (["--student-layers", "3"], "student: model.layers=3 but model 'tiny-bert-random' has 2 transformer layers"),
        (["--student-layers", "0"], "--student-layers must be >= 1, got 0"),
        (["--distill.alpha", "1.5"], "config: distill.alpha must be in [0, 1], got 1.5"),
        (["--data.train_sample", "400"], "the student's data is not teacher"),
    ],
    ids=["not a model", "more layers than it has", "no layers", "alpha", "other data"],
)
def test_bad_student_settings_get_one_line_before_anything_is_written(finished_run, tmp_path, capsys, args, said):
    assert said in _refused(["--run", str(finished_run), *args], tmp_path, capsys)


def test_a_student_run_is_not_a_teacher(finished_run, tmp_path, capsys):
    student = _copy_outputs(finished_run, tmp_path / "student", leave_out=("fold_0", "fold_1"))
    metrics = json.loads((student / "metrics.json").read_text())
    (student / "metrics.json").write_text(json.dumps({**metrics, "predictor": "student"}))
    assert "a student run; distil a cross-validated run" in _refused(["--run", str(student)], tmp_path, capsys)


# --- the parts alone ------------------------------------------------------------------------------------------------


def test_the_soft_target_loss_is_hintons_kl_at_the_temperature():
    from reuters_ray.fold.loss import distillation_loss, distillation_loss_multilabel

    torch.manual_seed(0)
    z, teacher_z = torch.randn(5, 4), torch.randn(5, 4)
    p = torch.softmax(teacher_z, -1)
    for t in (1.0, 2.0, 4.0):
        want = (
            torch.nn.functional.kl_div(
                torch.log_softmax(z / t, -1), torch.log_softmax(teacher_z / t, -1), log_target=True, reduction="sum"
            )
            * t**2
        )
        assert torch.allclose(distillation_loss(z, p, t, reduction="sum"), want, atol=1e-5)
        assert distillation_loss(teacher_z, p, t) < 1e-5  # the student saying what the teacher says: nothing to learn
    q = torch.sigmoid(teacher_z)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for t in (1.0, 3.0):
        qt = torch.sigmoid(teacher_z / t)
        entropy = -(qt * qt.log() + (1 - qt) * (1 - qt).log()).sum()
        want = (bce(z / t, qt, reduction="sum") - entropy) * t**2  # KL = cross-entropy - entropy
        assert torch.allclose(distillation_loss_multilabel(z, q, t, reduction="sum"), want, atol=1e-4)
        assert distillation_loss_multilabel(teacher_z, q, t) < 1e-4
    assert math.isfinite(float(distillation_loss(z, torch.tensor([[1.0, 0, 0, 0]] * 5), 2.0)))  # zeros in p


def test_model_layers_keeps_the_encoders_first_layers():
    from reuters_ray.fold.models import build_model

    full, cut = build_model("minilm-offline", ["a", "b"]), build_model("minilm-offline", ["a", "b"], layers=2)
    assert cut.config.num_hidden_layers == 2 and len(cut.bert.encoder.layer) == 2
    for k in range(2):
        for a, b in zip(full.bert.encoder.layer[k].parameters(), cut.bert.encoder.layer[k].parameters()):
            assert torch.equal(a, b)
    assert sum(p.numel() for p in cut.parameters()) < 0.8 * sum(p.numel() for p in full.parameters())


def test_runs_made_before_the_distill_settings_resume_under_their_names():
    from reuters_ray.config import RunConfig
    from reuters_ray.run.place import result_config

    old = RunConfig().to_dict()
    old.pop("distill")
    old["model"].pop("layers")
    assert result_config(old) == result_config(RunConfig().to_dict())
    assert "distill" not in result_config(RunConfig().to_dict())
    student = RunConfig().to_dict()
    student["distill"]["teacher"] = "/runs/quick"
    assert result_config(student)["distill"] == {"teacher": "/runs/quick"}
