"""Screenshots of the Ray dashboard's Jobs page and one job's page, taken by headless Chromium logged in through
the dashboard's own token prompt: what a user sees of a reuters-ray job. For docs/cluster.md; not part of the package.

    apt-get install chromium && pip install playwright    # Debian's Chromium; playwright only drives it
    python scripts/dashboard_screenshots.py --job raysubmit_... [--address http://127.0.0.1:8265] [--out docs/img]

The token is the cluster's (what `ray get-auth-token` prints), typed into the dashboard's login
dialog; the dashboard answers with its session cookie, as it does for a person.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="http://127.0.0.1:8265", help="the dashboard (default: %(default)s)")
    p.add_argument("--job", required=True, help="the job's submission id (`ray job list`)")
    p.add_argument(
        "--out", default="docs/img", help="folder for dashboard-jobs.png and dashboard-job.png (default: %(default)s)"
    )
    p.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (default: %(default)s)")
    p.add_argument("--width", type=int, default=1400)
    a = p.parse_args()

    from playwright.sync_api import sync_playwright

    # what `ray get-auth-token` prints: $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    token = os.environ.get("RAY_AUTH_TOKEN") or path.read_text().strip()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": a.width, "height": 900})
        page.goto(f"{a.address}/#/jobs")
        prompt = page.get_by_placeholder("Enter your authentication token")
        prompt.wait_for(timeout=30_000)  # the dashboard asks for the token before it shows any data
        prompt.fill(token)
        page.get_by_role("button", name="Submit").click()
        page.get_by_text(a.job).first.wait_for(timeout=30_000)
        page.wait_for_timeout(3000)  # the tables fill in after their first requests
        page.screenshot(path=str(out / "dashboard-jobs.png"))
        page.goto(f"{a.address}/#/jobs/{a.job}")
        page.wait_for_timeout(6000)
        page.screenshot(path=str(out / "dashboard-job.png"), full_page=True)
        browser.close()
    print(f"wrote {out / 'dashboard-jobs.png'} and {out / 'dashboard-job.png'}")


if __name__ == "__main__":
    main()
