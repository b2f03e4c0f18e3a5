"""Multi-label decisions, metrics, loss, folds and the linear model, checked against numbers worked out by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reuters_ray.data.features import class_weights, stratified_folds
from reuters_ray.fold.loss import focal_loss
from reuters_ray.scoring.baseline import LinearModel, fit_cv
from reuters_ray.scoring.multilabel import choose_thresholds, decide, evaluate_multilabel, multilabel_metrics, sigmoid

NAMES = ["grain", "wheat", "corn"]
# 4 texts, 3 topics. true sets: {grain, wheat}, {grain}, {corn}, {wheat, corn}
Y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1]], dtype=np.uint8)
# predicted: {grain, wheat} (right), {grain, corn} (one false), {} (corn missed), {wheat} (corn missed)
P = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool)


def test_metrics_of_a_hand_made_three_topic_table():
    m = multilabel_metrics(Y, P)
    # pooled: tp 4 (grain x2, wheat x2), fp 1 (corn on text 1), fn 2 (corn on texts 2 and 3)
    assert m["precision_micro"] == pytest.approx(4 / 5)
    assert m["recall_micro"] == pytest.approx(4 / 6)
    assert m["f1_micro"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    # per topic: grain 1.0, wheat 1.0, corn: tp 0, fp 1, fn 2 -> 0
    assert m["f1_macro"] == pytest.approx((1 + 1 + 0) / 3)
    # supports 2, 2, 2: weighted equals macro here
    assert m["f1_weighted"] == pytest.approx(2 / 3)
    # per text F1: 1, 2*1/(2+1)=2/3, 0 (nothing predicted), 2*1/(1+2)=2/3
    assert m["f1_samples"] == pytest.approx((1 + 2 / 3 + 0 + 2 / 3) / 4)
    assert m["subset_accuracy"] == pytest.approx(1 / 4)  # only text 0 is right as a whole
    assert "accuracy" not in m  # the validation figures (history.csv, epoch rows) carry the true name alone
    assert m["hamming_loss"] == pytest.approx(3 / 12)  # 3 wrong decisions of 12


def test_evaluate_counts_missed_false_topics_and_confused_pairs():
    probs = np.where(P, 0.9, 0.1)
    probs[2] = [0.2, 0.3, 0.4]  # nothing above 0.5: at_least_one gives it corn, its most probable topic
    m = evaluate_multilabel(Y, probs, NAMES, 0.5, at_least_one=False)
    corn = m["per_class"][2]
    assert (corn["support"], corn["missed"], corn["false"], corn["f1"]) == (2, 2, 1, 0.0)
    # text 1: nothing missed; text 3: corn missed, nothing false: no pair. None at all
    assert m["confused_pairs"] == []
    m1 = evaluate_multilabel(Y, probs, NAMES, 0.5, at_least_one=True)
    assert m1["per_class"][2]["missed"] == 1 and m1["f1_micro"] == pytest.approx(2 * 5 / (2 * 5 + 1 + 1))
    swapped = np.array([[0.1, 0.1, 0.9]] * 4)  # corn for every text: grain and wheat missed, corn given instead
    pairs = evaluate_multilabel(Y, swapped, NAMES, 0.5)["confused_pairs"]
    assert pairs == [
        {"true": "grain", "predicted": "corn", "texts": 2},
        {"true": "wheat", "predicted": "corn", "texts": 1},
    ]


def test_decide_gives_an_empty_row_its_most_probable_topic_only_when_asked():
    probs = np.array([[0.2, 0.45, 0.1], [0.7, 0.6, 0.1]])
    assert decide(probs, 0.5, False).tolist() == [[False, False, False], [True, True, False]]
    assert decide(probs, 0.5, True).tolist() == [[False, True, False], [True, True, False]]
    assert decide(probs, np.array([0.8, 0.5, 0.5]), False).tolist() == [[False, False, False], [False, True, False]]


def test_thresholds_own_for_frequent_topics_global_for_rare_ones():
    # topics 0 and 1 (6 positives each) separate at different places; topic 2 (2 positives) keeps the global one
    y = np.zeros((14, 3), dtype=np.uint8)
    y[:6, 0], y[6:12, 1], y[12:, 2] = 1, 1, 1
    probs = np.stack([np.where(y[:, 0], 0.3, 0.2), np.where(y[:, 1], 0.8, 0.6), np.where(y[:, 2], 0.9, 0.1)], axis=1)
    chosen = choose_thresholds(y, probs, min_positives=5, at_least_one=False)
    # global: any t in (0.2, 0.3] gives micro-F1 2*14/(28+8) = 0.778 (topic 1's 8 negatives at 0.6 are false),
    # better than (0.6, 0.8]'s 0.727; of the ties, the one nearest 0.5
    assert chosen["global"] == pytest.approx(0.30)
    assert chosen["own"] == [True, True, False]
    # topic 1's best range is (0.6, 0.8]: its value nearest the global one
    assert chosen["thresholds"] == pytest.approx([0.30, 0.61, 0.30])
    assert chosen["out_of_fold"]["chosen"]["f1_micro"] == 1.0
    assert chosen["out_of_fold"]["at_0.5"]["f1_micro"] == pytest.approx(2 * 8 / (16 + 8 + 6))


def test_focal_loss_on_sigmoids_is_binary_cross_entropy_at_gamma_0_and_focuses_otherwise():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 3) * 3, (torch.rand(6, 3) > 0.5).to(torch.uint8)
    bce = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").sum(-1)
    assert torch.allclose(focal_loss(logits, targets, None, 0.0, 0.0, "none"), bce)
    w = torch.tensor([2.0, 1.0, 0.5])
    weighted = F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=w, reduction="none").sum(-1)
    assert torch.allclose(focal_loss(logits, targets, w, 0.0, 0.0, "none"), weighted)
    # smoothing 0.1 over 3 topics moves each target to 0.9 + 0.1/3 or 0.1/3, as the single-label loss spreads it
    smoothed = F.binary_cross_entropy_with_logits(logits, targets.float() * 0.9 + 0.1 / 3, reduction="none").sum(-1)
    assert torch.allclose(focal_loss(logits, targets, None, 0.0, 0.1, "none"), smoothed)
    # one easy positive (p = 0.9): gamma 2 scales its loss by (1 - 0.9)^2
    z, t = torch.tensor([[np.log(9.0)]]), torch.tensor([[1]])
    assert focal_loss(z, t, None, 2.0, 0.0).item() == pytest.approx(-np.log(0.9) * 0.01, rel=1e-5)


def test_folds_spread_each_topics_positives_within_one_and_weights_count_positives():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < [0.5, 0.3, 0.1, 0.05, 0.02, 0.01]).astype(np.uint8)
    folds = stratified_folds(y, 3, seed=42)
    per_fold = np.array([y[val].sum(axis=0) for _, val in folds])
    assert (per_fold.max(axis=0) - per_fold.min(axis=0) <= 1).all()
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(300))
    assert [v.tolist() for _, v in folds] == [v.tolist() for _, v in stratified_folds(y, 3, seed=42)]  # seeded
    w = class_weights(np.array([[1, 0, 0]] * 30 + [[1, 1, 0]] * 10 + [[1, 0, 1]], dtype=np.uint8), 3)
    assert w.tolist() == pytest.approx([1.0, 41 / 10, 10.0])  # positives 41, 10, 1: 41/41, 41/10, 41 clipped to 10


def test_linear_model_one_svm_per_topic_platt_scaled_and_saved_without_pickle(tmp_path):
    texts = ["wheat grain harvest", "corn grain exports", "wheat prices rise", "corn crop grain", "oil prices fall"] * 4
    y = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]] * 4, dtype=np.uint8)
    folds = stratified_folds(y, 2, seed=0)
    model, oof = fit_cv(texts, y, folds, 3)
    assert model.multi_label and oof.shape == (20, 3) and np.isfinite(oof).all()
    scores = model.scores(["wheat grain", "oil"])
    assert (scores[0, :2] > 0).all() and (scores[1] < 0).all()
    p = model.proba_of_scores(scores)
    assert np.allclose(p, sigmoid(scores / model.temperature + model.bias))
    model.save(tmp_path / "linear")
    back = LinearModel.load(tmp_path / "linear")
    assert back.multi_label and back.bias == model.bias and np.allclose(back.predict_proba(["wheat grain"]), p[:1])
