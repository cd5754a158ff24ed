"""A page in headless Chromium for the browser tests of the reports (``tests/experiments/report``,
``tests/experiments/suppression``): where Chromium is, the skip without it (a failure under CI), and the page
opened offline with its console errors and any remote request recorded."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("UNDERTOW_CHROMIUM", "/usr/bin/chromium"))
INSTALL = "apt-get update && apt-get install -y chromium"


def require_chromium(allow_module_level: bool = False) -> None:
    """Skip the test (the module, with ``allow_module_level``) without Chromium; under CI that is an error."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"CI needs Chromium at {CHROMIUM} for the browser tests: {INSTALL}")
        pytest.skip(f"no Chromium at {CHROMIUM}; install it with: {INSTALL}", allow_module_level=allow_module_level)


@dataclass
class OpenPage:
    """``page`` (playwright's); ``errors``: console errors and uncaught page errors; ``remote``: every URL
    requested beyond ``file:``, ``data:`` and ``blob:``; ``started``: ``time.perf_counter()`` just before
    the page was asked for."""

    page: Any
    errors: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    started: float = 0.0


@contextmanager
def open_page(path: Path, width: int = 1200, height: int = 1000) -> Iterator[OpenPage]:
    """``path`` loaded (``wait_until="load"``) in headless Chromium at a ``width`` x ``height`` viewport; the
    browser closes on leaving the block."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            opened = OpenPage(browser.new_page(viewport={"width": width, "height": height}))
            opened.page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
            opened.page.on("pageerror", lambda e: opened.errors.append(str(e)))
            opened.page.on("request", lambda q: None if q.url.startswith(("file:", "data:", "blob:"))
                           else opened.remote.append(q.url))
            opened.started = time.perf_counter()
            opened.page.goto(path.as_uri(), wait_until="load")
            yield opened
        finally:
            browser.close()
