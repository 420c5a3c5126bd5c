#!/usr/bin/env python
"""Drive tools/web_demo.py in headless Chromium: start it on a free port, upload an image, type the
classes, press "Segment", and save a screenshot of the page (the README's docs/images/web_demo.png).

  python tools/web_demo_screenshot.py --image output/demo/toy_world/images/val/000000.jpg \
      --classes "green cross, yellow square, orange triangle" --output docs/images/web_demo.png \
      -- --runs output/demo

Arguments after `--` go to tools/web_demo.py. The browser is Debian's Chromium (`apt-get install
chromium`, done by tools/install_env.sh as root) driven by Playwright; Playwright's own browser
download is not used. tests/tools/test_web_demo.py drives the page with the same functions.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from playwright.sync_api import Browser, Page, Playwright, sync_playwright

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# Headless on a closed network: without the background-networking flags Chromium keeps trying to
# reach Google's services (refused connections at every start).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STARTUP_TIMEOUT_S = 180.0
SEGMENT_TIMEOUT_MS = 120_000


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    return shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).is_file() else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_web_demo(args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Runs `tools/web_demo.py --port <free> ARGS` (output to `log`) until the page answers; yields its
    URL and stops the server on exit. RuntimeError with the log's tail if it exits or never answers."""
    port = free_port()
    # --port first: config overrides at the end of ARGS take every argument after them.
    command = [sys.executable, str(REPO / "tools" / "web_demo.py"), "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"web demo not answering at {url} after {STARTUP_TIMEOUT_S:.0f} s:\n"
                                   f"{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def launch_chromium(playwright: Playwright) -> Browser:
    path = chromium_path()
    if path is None:
        raise FileNotFoundError("no Chromium: apt-get install chromium (tools/install_env.sh does, as root)")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)


def segment_in_page(
    page: Page, url: str, image: Path | None, classes: str, model: str | None = None, min_score: float | None = None
) -> None:
    """Opens the page, uploads `image` (if given), types `classes`, picks `model` (a choice's label)
    and `min_score`, and presses "Segment"; returns once the request has been sent (the caller waits
    for its result)."""
    page.goto(url)
    page.wait_for_selector("#segment")
    if image is not None:
        page.set_input_files("#image input[type=file]", str(image))
        page.wait_for_selector("#image img")  # the upload finished
    if model is not None:
        page.click("#model input")
        page.get_by_role("option", name=model, exact=True).click()
    if min_score is not None:
        page.fill("#min-score input[type=number]", str(min_score))
        page.press("#min-score input[type=number]", "Enter")
    page.fill("#classes textarea", classes)
    page.click("#segment")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    demo_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--classes", required=True, help='e.g. "green cross, yellow square"')
    parser.add_argument("--model", default=None, help="the label of a model choice (default: the first)")
    parser.add_argument("--min-score", type=float, default=None, help="the page's min score (default: off)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "web_demo.png")
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    log = args.output.with_suffix(".server.log")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with serve_web_demo(demo_args, log, env) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        segment_in_page(page, url, args.image, args.classes, args.model, args.min_score)
        page.wait_for_selector("#overlay img", timeout=SEGMENT_TIMEOUT_MS)
        page.wait_for_timeout(500)  # let the table render
        page.screenshot(path=str(args.output))
        browser.close()
    log.unlink()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
