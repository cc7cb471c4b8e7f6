"""Headless Chromium for the browser tests: launch flags, a local static server, console capture, screenshots.

Debian's ``/usr/bin/chromium`` driven by Playwright (its own browser download does not work offline);
software WebGL through SwiftShader. Without Chromium the browser tests skip with the reason, except in CI
(``CI=true``), where they fail: a CI run must never pass by skipping them.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "ARTIFACTS", "require_chromium", "launch_chromium", "serve_directory", "serve_wsgi",
           "ConsoleLog", "save_screenshot"]

CHROMIUM = os.environ.get("ATTNBRAIN_CHROMIUM", "/usr/bin/chromium")
# --use-angle=swiftshader + --enable-unsafe-swiftshader give WebGL without a GPU; the rest keep the browser
# from reaching the network or doing background work that slows the tests and pollutes the console.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def require_chromium() -> None:
    """Skip the calling test (fail under ``CI=true``) when Chromium or Playwright is missing."""
    problems = []
    if not Path(CHROMIUM).is_file():
        problems.append(f"no Chromium at {CHROMIUM} (install Debian's chromium package or set "
                        "ATTNBRAIN_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright Python package is not installed (pip install -e '.[test]')")
    if problems:
        reason = "browser test needs headless Chromium: " + "; ".join(problems)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: browser tests may not be skipped)", pytrace=False)
        pytest.skip(reason)


@contextlib.contextmanager
def launch_chromium(**launch_kwargs):
    """Yield a Playwright ``Browser`` (headless Chromium with :data:`CHROMIUM_ARGS`); closed on exit."""
    require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True,
                                    **launch_kwargs)
        try:
            yield browser
        finally:
            browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test output readable
        pass


@contextlib.contextmanager
def serve_directory(root: str | Path):
    """Serve ``root`` over HTTP on 127.0.0.1 at a free port; yields the base URL (no trailing slash)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_wsgi(wsgi_app, threads: int = 4):
    """Serve a WSGI app (a Dash app's ``.server``) with waitress on 127.0.0.1 at a free port; yields the base URL.

    ``asyncore_use_poll``: waitress's default ``select()`` cannot watch a descriptor numbered 1024 or above,
    and late in a full test run this process holds more than that; its loop thread then dies and the page
    never gets an answer. On exit the connections, the listening socket and the worker threads all close.
    """
    from waitress import create_server, wasyncore
    server = create_server(wsgi_app, host="127.0.0.1", port=0, threads=threads, asyncore_use_poll=True)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server._map)
        thread.join(timeout=5)


class ConsoleLog:
    """Console 'error' messages and uncaught page errors of a page (and its frames), as readable lines."""

    def __init__(self, page):
        self.lines: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.lines.append(f"pageerror: {exc}"))

    def _on_console(self, msg):
        if msg.type == "error":
            loc = msg.location or {}
            self.lines.append(f"console.error: {msg.text} ({loc.get('url', '')}:{loc.get('lineNumber', '')})")

    def errors(self, ignore: tuple[str, ...] = ()) -> list[str]:
        """The collected lines, minus those containing any of ``ignore`` (list known-harmless ones there)."""
        return [line for line in self.lines if not any(s in line for s in ignore)]


def save_screenshot(page_or_locator, name: str) -> Path:
    """Save a PNG screenshot into ``test-artifacts/`` and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page_or_locator.screenshot(path=str(path))
    return path
