"""How long `reuters-ray serve` takes to stop: Serve's own shutdown against the command's (issue 27).

    .venv/bin/python bench/serve_stop.py --run runs/tiny

In this process, twice: start a local Ray (this process owns it, as `reuters-ray serve` does on a machine without
one), deploy the run's predictor, answer one request, then stop it and time the stop up to Ray being gone: first as
the command stopped before issue 27 (serve.shutdown(), then ray.shutdown()), then with reuters_ray.predictor.serve.stop_serve.
Prints both times and their ratio. Ray's own lines, the "graceful_shutdown failed" notice among them, go to stderr.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

from common import machine


def one_round(run: str, port: int, old: bool) -> float:
    import ray
    from ray import serve

    from reuters_ray.predictor.serve import APP_NAME, build_app, stop_serve

    ray.init(log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(run, "torch", None, 1), name=APP_NAME, route_prefix="/")
    body = json.dumps({"texts": ["oil prices rose"]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", body, {"Content-Type": "application/json"})
    assert urllib.request.urlopen(request, timeout=60).status == 200
    t = time.perf_counter()
    if old:
        serve.shutdown()
        ray.shutdown()
    else:
        stop_serve(owns_ray=True, started_serve=True)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished run folder")
    p.add_argument("--port", type=int, default=8131)
    args = p.parse_args()
    old = one_round(args.run, args.port, old=True)
    new = one_round(args.run, args.port, old=False)
    print(f"machine: {machine()}")
    print(f"stop, serve.shutdown() + ray.shutdown(): {old:.2f} s")
    print(f"stop, reuters_ray.predictor.serve.stop_serve:      {new:.2f} s")
    print(f"ratio: {old / new:.1f}x")


if __name__ == "__main__":
    main()
