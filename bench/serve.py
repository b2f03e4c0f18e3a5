"""`reuters-ray serve` under load: N concurrent clients on loopback, one text per request, per backend.

    .venv/bin/python bench/serve.py --run runs/quick [--clients 8] [--requests 400] [--seconds 60]
                                    [--backends torch,onnx,onnx-int8]

For each backend the script starts `reuters-ray serve --run RUN --backend B` on a free loopback port (it joins
RAY_ADDRESS, else starts a local Ray), waits for /healthz, sends the run's test texts round-robin from --clients
threads until --requests answers or --seconds have passed (after 20 warm-up requests), stops the service (SIGINT),
and prints requests/s, p50 and p99 latency and errors; then INT8's requests/s over torch's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from common import machine

BIN = Path(sys.executable).parent


def post(url: str, texts: list[str]) -> int:
    body = json.dumps({"texts": texts, "top_k": 1}).encode()
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(run: str, backend: str):
    port = free_port()
    cmd = [str(BIN / "reuters-ray"), "serve", "--run", run, "--backend", backend, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:  # not listening yet, or the replica not ready (URLError, ConnectionError, TimeoutError)
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"reuters-ray serve --backend {backend} did not come up")


def load(url: str, texts: list[str], clients: int, requests: int, seconds: float) -> dict:
    for i in range(20):  # warm-up
        post(url, [texts[i % len(texts)]])
    latencies, errors, lock, counter = [], [0], threading.Lock(), iter(range(requests))
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            status = post(url, [texts[i % len(texts)]])
            with lock:
                latencies.append(time.perf_counter() - t)
                errors[0] += status != 200

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "n": len(ms),
        "rps": len(ms) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=400, help="at most this many timed requests per backend")
    p.add_argument("--seconds", type=float, default=60, help="at most this long per backend")
    p.add_argument("--backends", default="torch,onnx,onnx-int8")
    a = p.parse_args()
    import yaml

    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.preprocess import prepare

    cfg = from_dict(RunConfig, yaml.safe_load(open(f"{a.run}/config.yaml")))
    texts = prepare(cfg.data).test_texts
    print(f"machine: {machine()}; run {a.run} ({cfg.model.name}), {a.clients} clients, one test text per request")
    results = {}
    for backend in a.backends.split(","):
        proc, url = serve(a.run, backend)
        try:
            r = results[backend] = load(url, texts, a.clients, a.requests, a.seconds)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
        print(
            f"  {backend:9}: {r['rps']:6.1f} requests/s, p50 {r['p50']:6.1f} ms, p99 {r['p99']:6.1f} ms "
            f"({r['n']} requests, {r['errors']} errors)"
        )
    if "torch" in results and "onnx-int8" in results:
        print(f"onnx-int8 / torch requests/s: {results['onnx-int8']['rps'] / results['torch']['rps']:.2f}x")


if __name__ == "__main__":
    main()
