"""The pages the product shows a person load nothing from another host (the service often runs where there is no
internet): the service's HTML pages (make_app, the app `reuters-ray serve` deploys, served here by uvicorn on
loopback without Ray) reference only the service's own URLs, each of which answers with the installed package's
file and the right content type; a run's report.html is self-contained. That Swagger UI really draws the API in a
browser from those files alone: tests/test_serve.py's `browser` test."""

import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from reuters_ray.predictor.serve import make_app

REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^"')]*)|\burl:\s*["']([^"']*)["']""")


def references(html: str) -> list[str]:
    """Every URL an HTML page names for the browser to load or open: src=, href=, CSS url(...), and Swagger UI's
    `url: '...'` (the spec it fetches)."""
    return ["".join(groups) for groups in REFERENCE.findall(html)]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is answered as it is, for the test to read


def get(url: str) -> tuple[int, str, bytes, dict]:
    """(status, content type, body, headers) of GET url, redirects not followed."""
    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=30) as r:
            return r.status, r.headers.get("content-type", ""), r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read(), dict(e.headers)


@pytest.fixture(scope="module")
def pages():
    """make_app's app under uvicorn on a free loopback port, in a thread: (URL, the app)."""
    import uvicorn

    app = make_app("tiny", "torch")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}", app
    server.should_exit = True
    thread.join(timeout=10)


def test_every_page_of_the_service_loads_only_its_own_files(pages):
    import fastapi_offline
    from starlette.routing import Route

    url, app = pages
    package = Path(fastapi_offline.__file__).parent / "static"
    answers = {r.path: get(url + r.path) for r in app.routes if isinstance(r, Route) and "GET" in (r.methods or ())}
    html = {path: body.decode() for path, (_, kind, body, _) in answers.items() if kind.startswith("text/html")}
    assert sorted(html) == ["/docs", "/docs/oauth2-redirect"]  # every HTML page the app serves
    status, _, _, headers = answers["/redoc"]
    assert (status, headers["location"]) == (307, "/docs")
    assert [p for p, page in html.items() if "http://" in page or "https://" in page] == []
    refs = {ref for page in html.values() for ref in references(page)}
    assert refs == {
        "/openapi.json",
        "/docs/static/swagger-ui-bundle.js",
        "/docs/static/swagger-ui.css",
        "/docs/static/favicon.png",
    }
    kinds = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",), ".png": ("image/png",)}
    for ref in sorted(refs - {"/openapi.json"}):
        status, kind, body, _ = get(url + ref)
        assert status == 200 and kind.split(";")[0] in kinds[Path(ref).suffix], (ref, status, kind)
        assert body == (package / Path(ref).name).read_bytes(), ref  # the installed package's file, whole
    status, kind, body, _ = get(url + "/openapi.json")
    assert (status, kind) == (200, "application/json") and body.startswith(b'{"openapi":"3.1')
    status, kind, body, _ = get(url + "/docs/static/nothing.js")
    assert (status, kind) == (404, "application/json")
    assert body == b'{"error":"no such path /docs/static/nothing.js; use /predict, /labels, /healthz (the API: /docs)"}'


def test_the_run_report_loads_nothing_from_outside(finished_run):
    """report.html: its style inline, its figures data: URLs, its links anchors within the page."""
    page = (finished_run / "report.html").read_text()
    refs = references(page)
    figures = [r for r in refs if r.startswith("data:image/png;base64,")]
    anchors = [r for r in refs if re.fullmatch(r"#[a-z0-9-]+", r)]
    assert figures and anchors and len(figures) + len(anchors) == len(refs), [r[:80] for r in refs]
    assert "@import" not in page and "<script" not in page and "<link" not in page
