"""A run's predictor as an HTTP service on Ray Serve.

    reuters-ray serve --run RUN [--backend torch|onnx|onnx-int8] [--host 127.0.0.1] [--port 8000] [--replicas N]

POST /predict  {"texts": ["...", ...], "top_k": 3}  ->  {"predictions": [{"label": ..., "top": [{"label", "p"}]}]}
GET  /labels   {"labels": [...]}
GET  /healthz  {"status": "ok", "run": ..., "backend": ...}

Each replica holds the run's predictor (reuters_ray.ensemble.Ensemble: the fold models, or their ONNX export, and
a blended run's linear model). Texts of concurrent requests are scored together (@serve.batch). A bad request gets
HTTP 400 and {"error": one line}; the replica keeps answering. parse_request is plain Python, testable without Ray.
"""

from __future__ import annotations

import json
from typing import Any

MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_TEXTS = 256  # per request
MAX_BATCH = 64  # texts scored at once by a replica, across requests


class BadRequest(ValueError):
    """What is wrong with a request, in one line for its 400 answer."""


def parse_request(body: bytes, num_labels: int) -> tuple[list[str], int]:
    """(texts, top_k) of a /predict body, or BadRequest saying what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest('body is not JSON; send {"texts": ["..."], "top_k": 3}') from None
    if not isinstance(data, dict):
        raise BadRequest('body must be a JSON object: {"texts": ["..."], "top_k": 3}')
    if "texts" not in data:
        raise BadRequest('no "texts": send {"texts": ["..."]}')
    texts = data["texts"]
    if not isinstance(texts, list):
        raise BadRequest('"texts" must be a list of strings')
    if not texts:
        raise BadRequest('"texts" is empty')
    if len(texts) > MAX_TEXTS:
        raise BadRequest(f'"texts" has {len(texts)} texts; at most {MAX_TEXTS} per request')
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadRequest(f'"texts"[{i}] is not a string ({type(t).__name__})')
    top_k = data.get("top_k", 3)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_labels:
        raise BadRequest(f'"top_k" must be an integer from 1 to {num_labels}, got {json.dumps(top_k)}')
    unknown = sorted(set(data) - {"texts", "top_k"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(json.dumps, unknown))}; send texts and top_k")
    return texts, top_k


def top_labels(probs, label_names: list[str], k: int) -> dict[str, Any]:
    """One text's answer: its label and the k most probable labels with their probabilities (as predict --json)."""
    import numpy as np

    top = np.argsort(-probs, kind="stable")[:k]
    return {
        "label": label_names[top[0]],
        "top": [{"label": label_names[i], "p": round(float(probs[i]), 6)} for i in top],
    }


def build_app(run: str, backend: str = "torch", export_dir: str | None = None, replicas: int = 1):
    """The Serve application: `replicas` copies of the predictor deployment, its ingress at /."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(name="reuters-ray-predictor", num_replicas=replicas, ray_actor_options={"num_cpus": 1})
    class Predictor:
        def __init__(self):
            from reuters_ray.ensemble import Ensemble

            # an export made by the driver (onnx backends), else the run's own models
            self.ens = Ensemble.from_export(export_dir, backend) if export_dir else Ensemble.from_run(run, device="cpu")
            self.info = {"status": "ok", "run": run, "backend": backend}

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.005)
        async def _probs(self, texts: list[str]) -> list:
            return list(self.ens.predict_proba(texts))

        async def __call__(self, request: Request) -> JSONResponse:
            import asyncio

            path, method = request.url.path.rstrip("/") or "/", request.method
            routes = {"/predict": "POST", "/labels": "GET", "/healthz": "GET"}
            if path not in routes:
                return JSONResponse({"error": f"no such path {path}; use {', '.join(routes)}"}, status_code=404)
            if method != routes[path]:
                return JSONResponse({"error": f"{path} takes {routes[path]}, not {method}"}, status_code=405)
            if path == "/healthz":
                return JSONResponse(self.info)
            if path == "/labels":
                return JSONResponse({"labels": self.ens.label_names})
            body = await request.body()
            try:
                texts, k = parse_request(body, len(self.ens.label_names))
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            probs = await asyncio.gather(*(self._probs(t) for t in texts))
            return JSONResponse({"predictions": [top_labels(p, self.ens.label_names, k) for p in probs]})

    return Predictor.bind()
