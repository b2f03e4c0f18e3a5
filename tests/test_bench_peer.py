"""bench/peer.py's argument handling and its printed lines (issue 45); its timings live in docs/results.md, never
here."""

import importlib.util
import sys

import pytest
from conftest import REPO


def load(name: str):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "bench"))


peer = load("peer")


def test_the_cpu_mode_is_the_quick_config_twice_peer_first():
    args = peer.parse_args([])
    assert (args.mode, args.config, args.repeat, args.first) == ("cpu", "configs/quick-cpu.yaml", 2, "peer")
    assert peer.overrides(args) == ["--config", "configs/quick-cpu.yaml"]
    args = peer.parse_args(["--data.path", "/data/r", "--model.name", "minilm-offline", "--first", "ours"])
    assert peer.overrides(args) == [
        "--config",
        "configs/quick-cpu.yaml",
        "--data.path",
        "/data/r",
        "--model.name",
        "minilm-offline",
    ]
    assert args.first == "ours"


def test_the_gpu_mode_is_the_full_recipe_and_names_its_model():
    args = peer.parse_args(["--mode", "gpu", "--model.name", "minilm-offline", "--repeat", "1"])
    assert args.config is None and peer.overrides(args) == ["--model.name", "minilm-offline"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--repeat", "0"], "--repeat must be >= 1, got 0"),
        (["--config", "configs/nope.yaml"], "--config configs/nope.yaml: no such file"),
        (["--mode", "gpu"], "--mode gpu: name the model"),
        (["--mode", "tpu"], "argument --mode: invalid choice: 'tpu'"),
        (["--first", "both"], "argument --first: invalid choice: 'both'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        peer.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_a_round_is_printed_with_each_sides_figures():
    peer_row = {"side": "peer (Trainer k-fold loop)", "wall_s": 98.76, "ensemble": {"accuracy": 0.7867,
                "f1_weighted": 0.7335, "f1_macro": 0.2457}}  # fmt: skip
    ours = {"side": "reuters-ray (jobs/cv.py)", "wall_s": 190.0, "ensemble": {"accuracy": 0.79, "f1_weighted": 0.7839,
            "f1_macro": 0.7225}, "blend": {"accuracy": 0.9033, "f1_weighted": 0.9017, "f1_macro": 0.77}}  # fmt: skip
    assert peer.line(peer_row) == (
        "peer (Trainer k-fold loop)      98.8 s | fold ensemble: accuracy 0.7867, weighted F1 0.7335, macro F1 0.2457"
    )
    assert peer.line(ours).endswith("| blend: accuracy 0.9033, weighted F1 0.9017, macro F1 0.7700")


def test_the_peer_takes_the_same_config_and_overrides():
    trainer = load("peer_trainer")
    args = trainer.parse_args(["--config", "configs/quick-cpu.yaml", "--data.path", "/d", "--model.name", "m"])
    assert (args.config, args.data_path, args.model_name) == ("configs/quick-cpu.yaml", "/d", "m")
    assert trainer.WARMUP_RATIO == 0.15
    assert not args.bf16_on_cpu and trainer.parse_args(["--bf16-on-cpu"]).bf16_on_cpu  # the peer: fp32 on CPU


cpu_step, cpu_by_process = load("cpu_step"), load("cpu_by_process")


def test_the_cpu_step_bench_times_the_quick_shape_four_ways():
    args = cpu_step.parse_args([])
    assert (args.config, args.steps, args.warmup) == ("configs/quick-cpu.yaml", 20, 3)
    assert cpu_step.WAYS == [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]  # the baseline first
    for argv in (["--threads", "0"], ["--steps", "0"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit) as e:
            cpu_step.parse_args(argv)
        assert e.value.code == 2


def test_cpu_by_process_takes_the_command_after_the_dashes(capsys):
    assert cpu_by_process.parse_args(["--", "python", "-c", "pass"]).command == ["python", "-c", "pass"]
    assert cpu_by_process.parse_args(["--top", "3", "true"]).command == ["true"]
    for argv, message in (([], "name the command after --"), (["--every", "0", "true"], "--every must be > 0")):
        with pytest.raises(SystemExit) as e:
            cpu_by_process.parse_args(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    # a real command: its own CPU is counted under its title, its exit status passed on
    assert cpu_by_process.main(["--every", "0.05", "--", sys.executable, "-c", "sum(range(40_000_000))"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wall ") and "exit status 0" in out and f"{sys.executable} -c sum(range(40_000_000))" in out
