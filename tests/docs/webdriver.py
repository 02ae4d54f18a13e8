"""Just enough of the W3C WebDriver protocol to type into a page of the site in headless Chromium.

Debian's chromium-driver speaks it over HTTP on loopback; the tests need six of its endpoints (new
session, go to a URL, find an element, click, send keys, run a script), so this is urllib and JSON
rather than selenium, which would bring six packages into the environment for one test module.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMEDRIVER = shutil.which("chromedriver")
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class WebDriverError(Exception):
    pass


class Browser:
    """One WebDriver session."""

    def __init__(self, base: str, session: str) -> None:
        self._base, self._session = base, session

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return _request(self._base, method, f"/session/{self._session}{path}", body)

    def go(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def type_into(self, css: str, text: str) -> None:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        element = found.get(_ELEMENT) if isinstance(found, dict) else None
        if element is None:
            raise WebDriverError(f"no element {css!r} on the page: {found!r}")
        self._call("POST", f"/element/{element}/click", {})
        self._call("POST", f"/element/{element}/value", {"text": text})

    def run(self, script: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 20) -> Any:
        """Run `script` until it returns something truthy, or return its last value at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)


def _request(base: str, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}").get("value")
    except urllib.error.HTTPError as e:
        raise WebDriverError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def browser(chromium: str, args: Sequence[str], profile: Path) -> Iterator[Browser]:
    """chromedriver on a free loopback port and one headless Chromium session; both gone afterwards."""
    assert CHROMEDRIVER is not None
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if (_request(base, "GET", "/status", timeout=2) or {}).get("ready"):
                    break
            except (OSError, WebDriverError):
                pass
            if driver.poll() is not None or time.monotonic() > deadline:
                raise WebDriverError(f"chromedriver did not answer on {base} (exit code {driver.poll()})")
            time.sleep(0.1)
        options = {"binary": chromium, "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                                 "--window-size=1400,900",  # a desktop: the search box in the header
                                                 f"--user-data-dir={profile}", *args]}
        created = _request(base, "POST", "/session",
                           {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
        session = created["sessionId"]
        yield Browser(base, session)
    finally:
        if session is not None:
            try:
                _request(base, "DELETE", f"/session/{session}", timeout=20)
            except (OSError, WebDriverError):
                pass
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(5)
