"""Inputs from the field, part 3 (issue 41): a starting model whose classification head is for other labels (a
fine-tuned checkpoint), in every way a model folder enters a run: `cv`/`tune` (model.name), `distill` (--student),
and the fold loop itself. Each model trained from it gets a new head for the run's labels and the run's first lines
say so, before Ray starts (was: Ray started, the fold failed with transformers' "ignore_mismatched_sizes" traceback
after its retries, and the half-written run failed the same way on resume)."""

import json

import pytest
import torch

from reuters_ray.fold.models import build_model, head_labels, head_note, load_tokenizer


@pytest.fixture(scope="module")
def two_label_checkpoint(tmp_path_factory):
    """A fine-tuned checkpoint as a user has one: a tiny BERT classifier for labels neg/pos, saved with its
    tokenizer (config.json names BertForSequenceClassification)."""
    folder = tmp_path_factory.mktemp("checkpoint") / "sentiment-model"
    torch.manual_seed(0)
    build_model("tiny-bert-random", ["neg", "pos"]).save_pretrained(folder)
    load_tokenizer("tiny-bert-random").save_pretrained(folder)
    return folder


def _head(model) -> torch.Tensor:
    return model.classifier.weight.detach().clone()


def _encoder(model) -> torch.Tensor:
    return model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()


def test_a_head_for_other_labels_is_drawn_again_and_the_encoder_kept(two_label_checkpoint):
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(two_label_checkpoint)
    name = str(two_label_checkpoint)
    assert head_labels(name) == ["neg", "pos"]
    assert head_labels("tiny-bert-random") is None and head_labels("minilm-offline") is None  # encoders, no head

    three = build_model(name, ["earn", "acq", "grain"])  # another size: transformers alone refuses it
    assert three.classifier.weight.shape == (3, 64) and three.config.id2label == {0: "earn", 1: "acq", 2: "grain"}
    assert torch.equal(_encoder(three), _encoder(saved))
    same_size = build_model(name, ["up", "down"])  # the same size, other classes: transformers alone keeps it
    assert torch.equal(_encoder(same_size), _encoder(saved)) and not torch.equal(_head(same_size), _head(saved))
    assert same_size.classifier.bias.abs().sum() == 0
    kept = build_model(name, ["neg", "pos"])  # its own labels, in order: the head continues
    assert torch.equal(_head(kept), _head(saved))
    swapped = build_model(name, ["pos", "neg"])  # its own labels in another order: each output moved to its label
    assert torch.equal(_head(swapped), _head(saved)[[1, 0]])
    assert torch.equal(swapped.classifier.bias, saved.classifier.bias[[1, 0]])
    ids = torch.tensor([[101, 2000, 3000, 102]])
    with torch.no_grad():
        saved.eval(), swapped.eval()
        assert torch.allclose(swapped(input_ids=ids).logits, saved(input_ids=ids).logits[:, [1, 0]], atol=1e-6)
    assert head_note(name, ["pos", "neg"]) == (
        f"model.name {name}: its classification head is for the run's 2 labels in another order; its outputs are put "
        "in the run's order"
    )
    for model in (three, same_size, kept, swapped):
        assert model.config.problem_type == "single_label_classification"

    assert head_note(name, ["neg", "pos"]) is None and head_note("tiny-bert-random", ["a", "b"]) is None
    assert head_note(name, ["earn", "acq", "grain"]) == (
        f"model.name {name}: its classification head is for 2 other label(s) (neg, pos); a new head for the run's "
        "3 labels is initialised (the encoder's weights are kept)"
    )


def test_the_fold_loop_trains_from_it(two_label_checkpoint, reuters, minilm_tokenizer, tmp_path):
    """What each fold's Ray worker runs: train_fold from the checkpoint, for the run's six topics."""
    from test_train import fold_data

    from reuters_ray.config import ModelConfig, RunConfig, TrainConfig
    from reuters_ray.fold.train import train_fold

    data = fold_data(reuters, minilm_tokenizer, 48, max_length=32)
    cfg = RunConfig(
        model=ModelConfig(name=str(two_label_checkpoint)), train=TrainConfig(max_epochs=1, batch_size=16, lr=1e-3)
    )
    result = train_fold(cfg, data, tmp_path, log=lambda s: None)
    assert result.model.classifier.weight.shape == (6, 64) and len(result.history) == 1
    assert result.model.config.id2label[1] == "earn"


def test_cv_tune_and_distill_say_it_in_their_first_lines_before_ray(two_label_checkpoint, finished_run, tmp_path):
    """check_input is what cv (and a search, for its base config) and distill run before anything is written or
    Ray is imported; its notes are the run's first lines (announce)."""
    import sys

    import yaml

    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.recipes import distill
    from reuters_ray.run.inputs import check_input

    name = str(two_label_checkpoint)
    cfg_dict = yaml.safe_load((finished_run / "config.yaml").read_text())
    cfg_dict["model"]["name"] = name
    cfg = from_dict(RunConfig, cfg_dict)
    ray_before = "ray" in sys.modules
    prep = check_input(cfg, tokenize_now=False)
    k = len(prep.ds.label_names)
    said = f"its classification head is for 2 other label(s) (neg, pos); a new head for the run's {k} labels"
    assert len(prep.notes) == 1 and prep.notes[0].startswith(f"model.name {name}: {said}")

    student = distill.check_student(distill.student_config(str(finished_run), [], name, None, "pupil"))
    assert len(student.notes) == 1 and student.notes[0].startswith(f"student {name}: {said}")
    assert student.teacher_metrics["run"] == json.loads((finished_run / "metrics.json").read_text())["run"]
    assert ("ray" in sys.modules) == ray_before  # nothing of Ray for this
