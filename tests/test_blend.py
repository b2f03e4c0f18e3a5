"""The linear model as plain arrays, its calibration, and the blend's weight, on real Reuters-18 wires; the last
tests read the tiny real run (conftest.finished_run)."""

import dataclasses
import json

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from reuters_ray.config import DataConfig, from_dict
from reuters_ray.data.features import stratified_folds
from reuters_ray.data.preprocess import prepare
from reuters_ray.errors import DataError
from reuters_ray.scoring.baseline import VOCABULARY_FILE, WEIGHTS_FILE, LinearModel, fit_cv
from reuters_ray.scoring.blend import choose_weight, fit_blend, log_loss
from reuters_ray.scoring.metrics import softmax


@pytest.fixture(scope="module")
def sample(reuters_dir):
    """750 / 300 Reuters-18 wires, cleaned as a run cleans them."""
    return prepare(DataConfig(path=str(reuters_dir), train_sample=750, test_sample=300))


def test_the_arrays_score_exactly_as_the_sklearn_pipeline_and_survive_saving(sample, tmp_path):
    ds = sample
    model = LinearModel.fit(ds.train_texts, ds.train_labels, ds.num_classes)
    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True),
        LinearSVC(C=1.0, class_weight="balanced", random_state=0),
    ).fit(ds.train_texts, ds.train_labels)
    assert model.classes.tolist() == list(range(18))
    np.testing.assert_allclose(model.scores(ds.test_texts), pipe.decision_function(ds.test_texts), rtol=0, atol=1e-12)
    model.temperature = 0.25
    model.save(tmp_path / "linear")
    assert sorted(p.name for p in (tmp_path / "linear").iterdir()) == [WEIGHTS_FILE, VOCABULARY_FILE]
    loaded = LinearModel.load(tmp_path / "linear")
    assert loaded.temperature == 0.25 and loaded.vocabulary == model.vocabulary
    probs = loaded.predict_proba(ds.test_texts)
    np.testing.assert_array_equal(probs, model.predict_proba(ds.test_texts))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == pipe.predict(ds.test_texts)).all()  # a temperature never changes the ranking


def test_a_damaged_or_foreign_linear_model_is_refused(sample, tmp_path):
    ds = sample
    model = LinearModel.fit(ds.train_texts[:300], ds.train_labels[:300], ds.num_classes)
    good = tmp_path / "good"
    model.save(good)
    weights, vocab = good / WEIGHTS_FILE, good / VOCABULARY_FILE

    def refused(folder, *words):
        with pytest.raises(DataError) as e:
            LinearModel.load(folder)
        for w in words:
            assert w in str(e.value), str(e.value)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / WEIGHTS_FILE).write_bytes(weights.read_bytes()[:-100])
    (truncated / VOCABULARY_FILE).write_bytes(vocab.read_bytes())
    refused(truncated, str(truncated / WEIGHTS_FILE), "cannot be read as a reuters-ray linear model")
    foreign = tmp_path / "foreign"  # a safetensors file of something else: a model's weights, no format tag
    foreign.mkdir()
    save_file({"bert.embeddings.weight": np.zeros((4, 2), np.float32)}, str(foreign / WEIGHTS_FILE))
    (foreign / VOCABULARY_FILE).write_bytes(vocab.read_bytes())
    refused(foreign, str(foreign / WEIGHTS_FILE), "not a reuters-ray linear model (format None)")
    short = tmp_path / "short"  # a vocabulary that does not fit the coefficients
    short.mkdir()
    (short / WEIGHTS_FILE).write_bytes(weights.read_bytes())
    (short / VOCABULARY_FILE).write_text(json.dumps(model.vocabulary[:-1]))
    refused(short, str(short), "do not fit together")
    (short / VOCABULARY_FILE).unlink()
    refused(short, str(short / VOCABULARY_FILE), "cannot be read")


def test_the_temperature_is_the_one_with_the_least_out_of_fold_log_loss(sample):
    ds = sample
    folds = stratified_folds(ds.train_labels, 3, 42)
    model, oof = fit_cv(ds.train_texts, ds.train_labels, folds, ds.num_classes)
    assert oof.shape == (750, 18) and np.isfinite(oof).all()  # every row scored once, by a model without it
    t = model.temperature
    loss = {s: log_loss(ds.train_labels, softmax(oof / (t * s))) for s in (0.5, 0.9, 1.0, 1.1, 2.0)}
    assert loss[1.0] == min(loss.values()) and loss[1.0] < log_loss(ds.train_labels, softmax(oof))
    assert 0.01 < t < 1.0  # SVM margins are small: raw softmax would be far too flat


def test_the_weight_follows_the_model_that_is_right_out_of_fold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    right, noise = np.eye(5)[y] * 0.9 + 0.02, softmax(rng.normal(size=(400, 5)))
    assert choose_weight(y, right, noise)["weight"] == 1.0
    assert choose_weight(y, noise, right)["weight"] == 0.0
    mixed = choose_weight(y, (right + noise) / 2, (right + softmax(rng.normal(size=(400, 5)))) / 2)
    assert 0.0 <= mixed["weight"] <= 1.0
    o = mixed["out_of_fold"]
    assert o["blend"]["f1_weighted"] >= max(o["ensemble"]["f1_weighted"], o["linear"]["f1_weighted"])


def run_dataset(run):
    return prepare(from_dict(DataConfig, yaml.safe_load((run / "config.yaml").read_text())["data"]))


def test_the_runs_weight_comes_from_out_of_fold_predictions_never_the_test_labels(finished_run):
    from conftest import FOLDS

    from reuters_ray.run.folds import out_of_fold_logits
    from reuters_ray.storage import LOCAL

    run, m = finished_run, json.loads((finished_run / "metrics.json").read_text())
    assert m["predictor"] == "blend" and 0.0 <= m["blend"]["weight"] <= 1.0
    ds = run_dataset(run)
    folds = stratified_folds(ds.train_labels, FOLDS, 42)  # the run's folds (fold_assignment.json says so)
    assignment = json.loads((run / "fold_assignment.json").read_text())
    for k, (_, val_idx) in enumerate(folds):
        assert {assignment[ds.train_ids[i]] for i in val_idx} == {k}
    best = [f"{run}/fold_{k}/{json.loads((run / f'fold_{k}/fold_result.json').read_text())['checkpoint']}/best"
            for k in range(FOLDS)]  # fmt: skip
    oof = out_of_fold_logits(LOCAL, best, folds, len(ds.train_labels))
    _, blend = fit_blend(ds, folds, oof)
    assert blend == m["blend"]  # the weight, the temperature and the out-of-fold figures that chose them
    shuffled = dataclasses.replace(ds, test_labels=np.random.default_rng(1).permutation(ds.test_labels))
    assert (shuffled.test_labels != ds.test_labels).any()
    assert fit_blend(shuffled, folds, oof)[1] == blend
    # the linear model the run saved is the one fitted on the whole training split, with that temperature
    linear = LinearModel.load(run / "linear")
    assert linear.temperature == blend["temperature"]
    scores = linear.scores(ds.test_texts)
    assert m["baseline"]["accuracy"] == pytest.approx((scores.argmax(axis=1) == ds.test_labels).mean())
