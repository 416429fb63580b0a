"""What the browser tests share: Debian's headless Chromium driven by Playwright, a live server.

Playwright's Python wheel brings its own driver, but never its own browser here: the browser is
Debian's ``chromium`` (installed by ``deploy/install-system-deps.sh``, which ``make test`` runs),
launched by path. Never run ``playwright install``: that downloads a browser build, and nothing
outside the package registries can be fetched on these machines.

    with live_server(app) as base_url, Browser.launch() as browser:
        browser.open(base_url + "/")
        browser.fill("Phone number", "+441234567890")
        browser.click("Call me back")
        browser.wait_for_text("We will call you")

The API is synchronous (Playwright's sync API): use it from plain ``def`` tests, not ``async``
ones, since the sync API refuses to run inside a running event loop.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.types import WSGIApplication

from playwright.sync_api import Dialog, Locator, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from werkzeug.serving import make_server

# Every flag is needed on these machines: without the background-networking ones Chromium opens
# outbound connections of its own (updates, sync, field trials), which are refused here.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # For the WebRTC tests: a fake camera and microphone, permission prompts granted.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)

DEFAULT_TIMEOUT = 10.0
"""Seconds any one browser action or wait may take before the test fails."""

_POLL_INTERVAL_MS = 50


class BrowserUnavailable(RuntimeError):
    """Debian's Chromium is not installed: the browser tests cannot run."""


def find_chromium() -> str:
    """The path of Debian's ``chromium``, or a loud error saying how to install it."""
    path = shutil.which("chromium")
    if path is None:
        raise BrowserUnavailable(
            "the browser tests need Debian's Chromium, and `chromium` is not on PATH: "
            "run `make test` (or `deploy/install-system-deps.sh` as root, "
            "i.e. `apt-get install chromium`). Do not run `playwright install`."
        )
    return path


class Browser:
    """One headless Chromium page, with the few actions the intake tests need.

    Every wait has a deadline (``timeout`` seconds, ``DEFAULT_TIMEOUT`` unless told); none sleeps
    a fixed time. JavaScript dialogs (``alert``, ``confirm``, ``prompt``) are dismissed and their
    messages kept in ``dialogs``; uncaught page errors are kept in ``page_errors``. ``page`` is
    the Playwright page, for anything this API does not cover.
    """

    def __init__(self, page: Page, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.page = page
        self.timeout = timeout
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        page.set_default_timeout(timeout * 1000)
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    @classmethod
    @contextmanager
    def launch(
        cls,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        extra_args: tuple[str, ...] = (),
    ) -> Iterator[Browser]:
        """Start Chromium with a fresh profile in a temporary directory; close it on exit."""
        executable = find_chromium()
        with (
            tempfile.TemporaryDirectory(prefix="cbserver-chromium-") as profile,
            sync_playwright() as playwright,
        ):
            # A persistent context is how Playwright takes a --user-data-dir of our own.
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_ARGS, *extra_args],
                timeout=timeout * 1000,
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                yield cls(page, timeout)
            finally:
                context.close()

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str) -> None:
        """Load ``url`` and wait for its ``load`` event."""
        self.page.goto(url)

    def fill(self, field: str, value: str) -> None:
        """Type ``value`` into the input whose label is ``field``, or else whose name is."""
        self._field(field).fill(value)

    def click(self, text: str) -> None:
        """Click the button (``<button>``, ``<input type=submit>``, …) whose text is ``text``."""
        self.page.get_by_role("button", name=text, exact=True).click()

    def text(self, selector: str = "body") -> str:
        """The text of ``selector`` (CSS) as rendered: what a person sees, hidden parts left out."""
        return self.page.locator(selector).inner_text()

    def wait_for_text(self, text: str, *, timeout: float | None = None) -> str:
        """Poll until ``text`` is visible on the page; return the page's text then.

        Navigations in progress are waited out. Fails with the page's last text when the deadline
        passes.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen = ""
        while True:
            try:
                seen = self.page.locator("body").inner_text(timeout=_POLL_INTERVAL_MS * 4)
            except PlaywrightError:
                pass  # between two documents, or the body is not there yet
            else:
                if text in seen:
                    return seen
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{text!r} did not appear on {self.url} within the deadline; "
                    f"the page shows:\n{seen}"
                )
            # Not a sleep: this runs Playwright's event loop, so dialogs etc. are handled meanwhile.
            self.page.wait_for_timeout(_POLL_INTERVAL_MS)

    @property
    def url(self) -> str:
        """The URL of the current document."""
        return self.page.url

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        """Run JavaScript in the page and return its (JSON-serialisable) result.

        ``expression`` is an expression, or a function that is called with ``arg``.
        """
        return self.page.evaluate(expression, arg)

    def screenshot(self, path: str | Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page to ``path`` (creating its directory); return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=target, full_page=full_page)
        return target

    def _field(self, field: str) -> Locator:
        by_name = self.page.locator(f"[name={_css_string(field)}]")
        return self.page.get_by_label(field, exact=True).or_(by_name)


def _css_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\a ")
    return f'"{escaped}"'


@contextmanager
def live_server(app: WSGIApplication) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port in a background thread; yield its base URL.

    The URL has no trailing slash (``http://127.0.0.1:PORT``). The server is shut down, and its
    thread joined, on exit.
    """
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},  # how soon shutdown() is noticed
        name=f"live-server-{server.server_port}",
        daemon=True,
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=DEFAULT_TIMEOUT)
        server.server_close()
