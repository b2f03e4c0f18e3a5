"""A run's predictor as an HTTP service on Ray Serve, with a FastAPI ingress (Ray Serve's convention).

    reuters-ray serve --run RUN [--backend torch|onnx|onnx-int8] [--host 127.0.0.1] [--port 8000] [--replicas N]

POST /predict       {"texts": ["...", ...], "top_k": 3}  ->  {"predictions": [{"label": ..., "top": [{"label", "p"}]}]}
                    (a multi-label run: {"labels": [{"label", "p"}, ...], "top": [...]}, the label set first)
GET  /labels        {"labels": [...]}
GET  /healthz       {"status": "ok", "run": ..., "backend": ...}
GET  /docs, /openapi.json   the API, from the pydantic models below (/docs: Swagger UI, its files served by the
                            app from an installed package, nothing from another host; /redoc leads there)

Each replica holds the run's predictor (reuters_ray.predictor.ensemble.Ensemble: the fold models, or their ONNX export, and
a blended run's linear model). A request is validated whole (PredictRequest) before any of its texts joins a batch;
texts of concurrent requests are then scored together (@serve.batch), and a text that fails there fails only its
own request. A blank text gets the "no text" answer (label null), as in `predict` and Python. A bad request gets HTTP
400 and {"error": one line naming the field}: FastAPI's validation errors (its default is 422) are mapped to it, so
that every client mistake, the oversized body included, has the one status this service has always answered.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (PredictRequest) at run
# time, and Ray Serve's class-based view rebuilds them where a string annotation no longer resolves.
import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from reuters_ray import stopping
from reuters_ray.data.text import unreadable_texts
from reuters_ray.predictor.ensemble import NO_TEXT, Ensemble, answer_of

MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_TEXTS = 256  # per request
MAX_BATCH = 64  # texts scored at once by a replica, across requests
APP_NAME = "reuters-ray"  # the Serve application's name
EXAMPLE = '{"texts": ["..."], "top_k": 3}'


def _unicode(text: str) -> str:
    """A text holding a lone surrogate (JSON "\\ud800") is not Unicode a tokenizer can read: refused by index."""

    if unreadable_texts([text]):
        raise ValueError("not valid Unicode (it holds a lone surrogate); send UTF-8 text")
    return text


class PredictRequest(BaseModel):
    """The body of POST /predict."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[StrictStr, AfterValidator(_unicode)]] = Field(
        min_length=1,
        max_length=MAX_TEXTS,
        description=f"the texts to label, 1 to {MAX_TEXTS}; a blank one gets no label",
    )
    top_k: StrictInt = Field(3, ge=1, description="how many of the most probable labels to list, at most all of them")


class LabelP(BaseModel):
    label: str
    p: float = Field(description="its probability under the run's predictor (blend or ensemble)")


class Answer(BaseModel):
    """One text's answer: its label and the top_k most probable; for a blank text, label null and note "no text".
    A multi-label run answers "labels" (the text's label set, most probable first) instead of "label"."""

    label: str | None = Field(None, description="the most probable label (single-label runs)")
    labels: list[LabelP] | None = Field(
        None, description="multi-label runs: every label above its threshold (chosen out of fold), most probable first"
    )
    top: list[LabelP]
    note: str | None = Field(None, description='"no text" for a text with nothing left after cleaning')


class PredictResponse(BaseModel):
    predictions: list[Answer] = Field(description="one answer per text, in order")


class LabelsResponse(BaseModel):
    labels: list[str]


class Health(BaseModel):
    status: str
    run: str
    backend: str


class ErrorResponse(BaseModel):
    error: str = Field(description="one line naming the field at fault")


class BadRequest(ValueError):
    """What is wrong with a request, in one line for its 400 answer."""


def error_line(errors: list[dict[str, Any]], num_labels: int) -> str:
    """One line for the first of pydantic's (or FastAPI's) validation errors of a /predict body."""
    e = errors[0]
    loc = [x for x in e.get("loc", ()) if x != "body"]
    kind, given = e.get("type", ""), e.get("input")
    if kind == "json_invalid":
        return f"body is not JSON; send {EXAMPLE}"
    if kind == "extra_forbidden":
        extra = sorted({str(x["loc"][-1]) for x in errors if x.get("type") == "extra_forbidden"})
        return f"unknown field(s) {', '.join(map(json.dumps, extra))}; send texts and top_k"
    if not loc or kind in ("model_attributes_type", "dict_type", "model_type"):
        return f"body must be a JSON object: {EXAMPLE} (with Content-Type: application/json)"
    if loc[0] == "top_k":
        return f'"top_k" must be an integer from 1 to {num_labels}, got {json.dumps(given, default=str)}'
    if kind == "missing":
        return f'no "{loc[0]}": send {EXAMPLE}'
    if loc == ["texts"]:
        if kind == "too_short":
            return '"texts" is empty'
        if kind == "too_long":
            return f'"texts" has {len(given)} texts; at most {MAX_TEXTS} per request'
        return '"texts" must be a list of strings'
    if loc[0] == "texts" and len(loc) == 2:
        if kind == "string_type":
            return f'"texts"[{loc[1]}] is not a string ({type(given).__name__})'
        return f'"texts"[{loc[1]}] is {str(e.get("ctx", {}).get("error", e.get("msg", "")))}'
    return f"{'.'.join(map(str, loc))}: {e.get('msg', 'invalid')}"


def parse_request(body: bytes, num_labels: int) -> PredictRequest:
    """A /predict body read as the service reads it (JSON, then PredictRequest, then top_k against the labels),
    or BadRequest with the service's one line. Plain Python, for tests and scripts; the service itself gets the
    same model and the same lines through FastAPI."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(f"body is not JSON; send {EXAMPLE}") from None
    try:
        request = PredictRequest.model_validate(data)
    except ValidationError as e:
        raise BadRequest(error_line(e.errors(), num_labels)) from None
    check_top_k(request, num_labels)
    return request


def check_top_k(request: PredictRequest, num_labels: int) -> None:
    """top_k against the run's labels (the model cannot know how many a run has)."""
    if request.top_k > num_labels:
        raise BadRequest(f'"top_k" must be an integer from 1 to {num_labels}, got {request.top_k}')


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets the service's 400 and one line, before the endpoint
    reads it (by Content-Length, or by counting as it arrives)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, send, int(declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, send, size, more=message.get("more_body", False))
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, send, size: int, more: bool = False) -> None:
        from starlette.responses import JSONResponse

        line = f"request body is {'over ' + str(self.limit) if more else size} bytes; at most {self.limit}"
        await JSONResponse({"error": line}, status_code=400)(scope, None, send)


def _answer_errors_in_one_line(app) -> None:
    """The service's error answers, {"error": one line} on `app`: FastAPI's validation errors as 400 naming the
    field, BadRequest as 400, an unknown path 404 and a wrong method 405 in the same shape."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": error_line(list(exc.errors()), app.state.num_labels)}, status_code=400)

    @app.exception_handler(BadRequest)
    async def bad(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        path, routes = request.url.path, {"/predict": "POST", "/labels": "GET", "/healthz": "GET"}
        if exc.status_code == 404:
            line, status = f"no such path {path}; use {', '.join(routes)} (the API: /docs)", 404
        elif exc.status_code == 405 and path in routes:
            line, status = f"{path} takes {routes[path]}, not {request.method}", 405
        elif exc.status_code == 400 and "parsing the body" in str(exc.detail):  # FastAPI's words for bad bytes
            line, status = f"body is not UTF-8 JSON; send {EXAMPLE} as UTF-8", 400
        else:
            line, status = str(exc.detail), exc.status_code
        return JSONResponse({"error": line}, status_code=status, headers=getattr(exc, "headers", None))


def make_app(run: str, backend: str):
    """The service's FastAPI app before its API routes (build_app adds them): the body limit, the one-line errors,
    and the pages a person opens, which load nothing from another host, since the service often runs where there is
    no internet: /docs is Swagger UI with its script, style and icon served by the app itself from an installed
    package (fastapi-offline) under /docs/static/, not from FastAPI's default CDNs (a blank page offline), and
    /docs/oauth2-redirect is inline. /redoc redirects to /docs: ReDoc's bundle always draws Redocly's logo from
    its CDN (no option turns that off). A fastapi.FastAPI; ImportError without the `serve` extra."""
    from fastapi import Request
    from fastapi.responses import RedirectResponse
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(
        redoc_url=None,
        static_url="/docs/static",
        title="reuters-ray",
        summary=f"The predictor of run {run} ({backend})",
        version="1",
    )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "") + "/docs")

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    _answer_errors_in_one_line(app)
    return app


def build_app(run: str, backend: str = "torch", export_dir: str | None = None, replicas: int = 1):
    """The Serve application: `replicas` copies of the predictor deployment, its FastAPI ingress at / (make_app)."""
    import asyncio

    from fastapi import Request
    from fastapi.responses import JSONResponse
    from ray import serve

    app = make_app(run, backend)
    errors = {400: {"model": ErrorResponse, "description": "a bad request, one line naming the field"}}

    @serve.deployment(name="reuters-ray-predictor", num_replicas=replicas, ray_actor_options={"num_cpus": 1})
    @serve.ingress(app)
    class Predictor:
        def __init__(self):

            # an export the driver made (onnx backends), else the run's own models: one loader for both
            self.ens = Ensemble.load(export_dir or run, backend, device="cpu")
            self.health = Health(status="ok", run=run, backend=backend)
            app.state.num_labels = len(self.ens.label_names)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.005)
        async def _probs(self, texts: list[str]) -> list:
            try:
                return list(self.ens.predict_proba(texts))
            except Exception:  # keep a failure inside its own request: each text scored alone
                out = []
                for text in texts:
                    try:
                        out.append(self.ens.predict_proba([text])[0])
                    except Exception as e:
                        out.append(e)
                return out

        @app.post("/predict", response_model=PredictResponse, response_model_exclude_unset=True, responses=errors)
        async def predict(self, body: PredictRequest, request: Request):
            """Each text's label and top_k most probable labels, in order."""
            if request.query_params:  # e.g. ?top_k=1: never read, so never silently ignored
                raise BadRequest(f"query parameters are not read ({request.url.query}); send top_k in the JSON body")
            check_top_k(body, len(self.ens.label_names))
            blank = set(self.ens.blank_texts(body.texts))  # never scored: the "no text" answer
            probs = await asyncio.gather(*(self._probs(t) for i, t in enumerate(body.texts) if i not in blank))
            failed = next((p for p in probs if isinstance(p, Exception)), None)
            if failed is not None:  # a 500 for this request alone
                return JSONResponse({"error": f"scoring failed: {type(failed).__name__}: {failed}"}, status_code=500)
            scored = iter(probs)
            answers = [
                Answer(**{"labels" if self.ens.multi_label else "label": None}, top=[], note=NO_TEXT)
                if i in blank
                else Answer(**answer_of(next(scored), self.ens.label_names, body.top_k, self.ens.decision))
                for i in range(len(body.texts))
            ]
            return PredictResponse(predictions=answers)

        @app.get("/labels", response_model=LabelsResponse)
        async def labels(self) -> LabelsResponse:
            """The run's labels, in the order of its models' outputs."""
            return LabelsResponse(labels=self.ens.label_names)

        @app.get("/healthz", response_model=Health)
        async def healthz(self) -> Health:
            """ok once this replica holds the predictor."""
            return self.health

    return Predictor.bind()


def run_service(run: str, backend: str, export_dir: str | None, host: str, port: int, replicas: int) -> None:
    """`reuters-ray serve`: the application on Ray Serve at http://host:port until a stop signal (Ctrl-C, SIGTERM
    from `kill` or `ray job stop`, SIGHUP; reuters_ray.stopping), then stopped (stop_serve) and KeyboardInterrupt
    raised (the command's "stopped" line and status). Joins RAY_ADDRESS (ray start, ray job submit) or starts a
    local Ray."""
    import time

    import ray
    from ray import serve

    stopping.install()  # also when started in the background by a shell, which ignores SIGINT
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
        stopping.reinstall()  # ray.init's SIGTERM handler exits with status 15
    # A Ray this command started ends with it (Serve with it, in a second); on a cluster it joined, only what it
    # started goes: its application, and Serve itself if Serve was not running before.
    owns_ray = getattr(ray._private.worker._global_node, "head", False)
    started_serve = not serve_running()
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(run, backend, export_dir, replicas), name=APP_NAME, route_prefix="/")
        url = f"http://{host}:{port}"
        print(
            f"serving run {run} ({backend}, {replicas} replica(s)) at {url}: POST {url}/predict "
            '{"texts": [...], "top_k": 3}, GET /labels, GET /healthz, the API at /docs; Ctrl-C stops',
            flush=True,
        )
        while True:
            time.sleep(3600)
    finally:
        with stopping.deferred():  # a second Ctrl-C does not cut the stop short
            stop_serve(owns_ray, started_serve)


def serve_running() -> bool:
    """Whether Ray Serve runs on the connected cluster already (its controller is there)."""
    import ray

    return any(a["name"] == "SERVE_CONTROLLER_ACTOR" for a in ray.util.list_named_actors(all_namespaces=True))


def stop_serve(owns_ray: bool, started_serve: bool, timeout_s: float = 20.0) -> None:
    """Stops what `reuters-ray serve` started, within seconds and without Ray's notices: the whole local Ray when the
    command started it (Serve, its proxy and replicas go with it); else its application, and Serve itself when it
    was not running before. serve.shutdown() waits on a controller call that can only fail (the controller kills
    itself), and Ray prints that failure: the controller is asked to shut down without waiting, then watched."""
    import logging
    import time

    import ray
    from ray import serve

    if owns_ray:
        ray.shutdown()
        return
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its "Deleting app" notice: we say "stopped"
    serve.delete(APP_NAME)
    if not started_serve:
        return
    try:
        from ray.serve.context import _get_global_client

        controller = _get_global_client()._controller
        ray.get(controller.graceful_shutdown.remote(False), timeout=timeout_s)
    except (AttributeError, ImportError, TypeError):  # Serve's internals changed: its own way, notice and all
        serve.shutdown()
        return
    deadline = time.monotonic() + timeout_s
    while serve_running() and time.monotonic() < deadline:
        time.sleep(0.2)
