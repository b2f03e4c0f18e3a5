"""The run's predictor as an MLflow model: a pyfunc that answers as `reuters-ray predict` does (the blend included).

    mlflow.pyfunc.load_model("runs:/<run id>/model").predict(pd.DataFrame({"text": [...]}))
      -> DataFrame: label (multi-label: labels, a list) and p_<label> per class: predict --table's added columns
    (the model's signature asks for a string column `text`; MLflow drops other columns before predict sees them)

Logged as MLflow's "models from code" (MODEL_CODE, a script MLflow keeps in the model and runs when it is loaded):
nothing is pickled. The model's one artifact, `predictor`, is the run's predictor files: metrics.json, models/
(each fold model with the tokenizer) and linear/ (a blended run's linear model): reuters_ray.predictor's
Ensemble.from_run loads it. Loading it needs reuters-ray installed (the model's requirements name it).
"""

from __future__ import annotations

import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from reuters_ray.errors import DataError
from reuters_ray.predictor.ensemble import Ensemble
from reuters_ray.predictor.tables import answer_table
from reuters_ray.storage import LOCAL, copy_dir, read_bytes

MODEL_PATH = "model"  # the MLflow model's artifact path in its run
TEXT = "text"  # the input column (a frame of one column may name it otherwise)
PREDICTOR_FILES = ("metrics.json",)
PREDICTOR_DIRS = ("models", "linear")

MODEL_CODE = """\
# The MLflow model of a reuters-ray run (reuters_ray.track.pyfunc): MLflow runs this file to load it.
import mlflow

from reuters_ray.track.pyfunc import predictor_model

mlflow.models.set_model(predictor_model())
"""


def texts_of(model_input: Any) -> list[str | None]:
    """The texts of a pyfunc's input: a DataFrame's `text` column (or its only column), a Series, or a list of
    strings. Raises DataError naming what is missing."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT in model_input.columns:
            column = model_input[TEXT]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise DataError(
                f"the model's input: no {TEXT!r} column (columns: {', '.join(map(str, model_input.columns))})"
            )
        return [None if pd.isna(t) else str(t) for t in column]
    if isinstance(model_input, pd.Series):
        return [None if pd.isna(t) else str(t) for t in model_input]
    return [None if t is None else str(t) for t in model_input]


def predictor_model():
    """The pyfunc's PythonModel (a function: MLflow is imported only when a model is logged or loaded)."""
    import mlflow

    with warnings.catch_warnings():  # MLflow asks for type hints: the input is a frame, a Series or a list
        warnings.simplefilter("ignore", UserWarning)

        class RunPredictor(mlflow.pyfunc.PythonModel):
            def load_context(self, context) -> None:
                self.ensemble = Ensemble.from_run(context.artifacts["predictor"])

            def predict(self, context, model_input, params=None) -> pd.DataFrame:
                return answer_table(self.ensemble, texts_of(model_input)).to_pandas()

        return RunPredictor()


def _signature(label_names: list[str], multi_label: bool):
    from mlflow.models import infer_signature

    answer = {"labels": [[label_names[0]]]} if multi_label else {"label": [label_names[0]]}
    answer.update({f"p_{name}": [0.5] for name in label_names})
    return infer_signature(pd.DataFrame({TEXT: ["a text"]}), pd.DataFrame(answer))


def log_predictor(client, run_id: str, fs, run_path: str, metrics: dict, register: str | None = None) -> None:
    """Logs the predictor of the run folder at `run_path` (on `fs`) as run `run_id`'s MLflow model (MODEL_PATH) and,
    with `register`, as a new version of that registered model."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        predictor = Path(tmp) / "predictor"
        for name in PREDICTOR_FILES:
            predictor.mkdir(parents=True, exist_ok=True)
            (predictor / name).write_bytes(read_bytes(fs, f"{run_path}/{name}"))
        for name in PREDICTOR_DIRS:
            if _is_dir(fs, f"{run_path}/{name}"):
                copy_dir(f"{run_path}/{name}", str(predictor / name), fs, LOCAL)
        code = Path(tmp) / "reuters_ray_model.py"
        code.write_text(MODEL_CODE)
        model = Path(tmp) / MODEL_PATH
        with warnings.catch_warnings():  # no input example (it would load the model once more, to check it)
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                str(model),
                python_model=str(code),
                artifacts={"predictor": str(predictor)},
                signature=_signature(metrics["label_names"], metrics.get("task") == "multi"),
                pip_requirements=[f"reuters-ray=={version('reuters-ray')}", f"mlflow=={mlflow.__version__}"],
            )
        client.log_artifacts(run_id, str(model), MODEL_PATH)
    if register:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(register)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_PATH}"
        client.create_model_version(register, source, run_id=run_id)


def _is_dir(fs, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type == pafs.FileType.Directory
