"""The built site in headless Chromium, with no network: every request off loopback refused.

The site is served on 127.0.0.1 (a copy: the test adds a probe to each page). Chromium gets a dead
proxy and a resolver that resolves nothing, so a CDN fetch fails the way it does offline.

* Diagrams: the probe opens Material's closed shadow roots and counts the SVGs mermaid drew (not
  mermaid's error diagram); a harness page loads every page with a diagram in an iframe and reports the
  counts. Then the same site without the shipped mermaid.min.js must render nothing.
* Search: through chromedriver (webdriver.py), the test types into the search box as a learner does and
  reads the results Material's search worker lists; without the search index it must list none.
* The chart: lesson 10's bench chart is an image the browser decodes (a broken path shows nothing).
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import webdriver

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "hooks"))
import mermaid_js  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

PROBE = """<script>
(function () {
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    return attach.call(this, Object.assign({}, init, {mode: "open"}));
  };
  setInterval(function () {
    const drawn = [...document.querySelectorAll("div.mermaid")].filter(function (d) {
      const svg = d.shadowRoot && d.shadowRoot.querySelector("svg");
      return svg && svg.getAttribute("aria-roledescription") !== "error";
    });
    document.documentElement.setAttribute("data-mermaid-svgs", String(drawn.length));
  }, 100);
})();
</script>"""

HARNESS = """<!DOCTYPE html><html><body><script>
const pages = %s;
for (const p of pages) { const f = document.createElement("iframe"); f.src = p; f.width = 1200; f.height = 800;
  document.body.appendChild(f); }
setInterval(function () {
  const seen = {};
  document.querySelectorAll("iframe").forEach(function (f, i) {
    const root = f.contentDocument && f.contentDocument.documentElement;
    seen[pages[i]] = root ? Number(root.getAttribute("data-mermaid-svgs") || 0) : 0;
  });
  document.documentElement.setAttribute("data-seen", JSON.stringify(seen));
}, 200);
</script></body></html>"""


def _fences() -> dict[str, int]:
    """Site path of each page with diagrams -> how many it has."""
    out = {}
    for page in sorted(DOCS.rglob("*.md")):
        n = len(re.findall(r"^```mermaid\s*$", page.read_text(), flags=re.M))
        if n:
            rel = page.relative_to(DOCS).with_suffix("")
            url = "/" if rel.name == "index" and rel.parent == Path(".") else f"/{rel}/".replace("/index/", "/")
            out[url] = n
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CHROMIUM is None:
        pytest.skip("no Chromium to load the site in (Debian: apt-get install chromium)")
    if mermaid_js.find() is None:
        pytest.fail(f"no local mermaid.min.js: run `make setup` (it fetches mermaid {mermaid_js.VERSION} with npm)")
    out = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    for page in out.rglob("*.html"):
        page.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    return out


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(folder: Path) -> str:
        handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _rendered(folder: Path, base: str, tmp_path: Path, pages: list[str]) -> dict[str, int]:
    (folder / "harness.html").write_text(HARNESS % json.dumps(pages))
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'chromium'}", *OFFLINE, "--virtual-time-budget=30000", "--dump-dom",
         f"{base}/harness.html"],
        capture_output=True, text=True, timeout=180)
    m = re.search(r'data-seen="([^"]*)"', res.stdout)
    assert m, f"Chromium printed no page: {res.stderr[-800:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


def test_every_diagram_renders_offline(site: Path, serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expected = _fences()
    assert len(expected) >= 5  # the lessons' topologies
    assert _rendered(site, serve(site), tmp_path, list(expected)) == expected


def test_without_the_shipped_mermaid_nothing_renders_offline(site: Path, serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bare = tmp_path / "bare"
    shutil.copytree(site, bare)
    (bare / "assets" / "javascripts" / "mermaid.min.js").unlink()  # Material falls back to its CDN
    page = "/lessons/04-tls-to-backends/"
    assert _rendered(bare, serve(bare), tmp_path, [page]) == {page: 0}


SEARCH_BOX = "input.md-search__input"
RESULTS = "[...document.querySelectorAll('.md-search-result__item > a')].map(a => a.getAttribute('href'))"
META = "((document.querySelector('.md-search-result__meta') || {}).textContent || '')"


def _browser(tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    if webdriver.CHROMEDRIVER is None:
        pytest.skip("no chromedriver to drive the site (Debian: apt-get install chromium-driver)")
    return webdriver.browser(str(CHROMIUM), OFFLINE, tmp_path / name)


def _search(b: webdriver.Browser, base: str, words: str) -> tuple[list[str], str]:
    """Type `words` into the search box of the home page; the result links and the line above them."""
    b.go(f"{base}/")
    b.type_into(SEARCH_BOX, words)
    # The worker answers once it has read the index: wait for results, or for its "No matching" line.
    b.wait_for(f"return {RESULTS}.length > 0 || /matching/i.test({META})")
    return b.run(f"return {RESULTS}"), b.run(f"return {META}")


def test_the_search_box_finds_the_page_that_teaches_a_directive(site: Path, serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = serve(site)
    with _browser(tmp_path, "chromium-search") as b:
        links, meta = _search(b, base, "max_fails")
        nothing, none_meta = _search(b, base, "zqxjkvw")
    pages = {urllib.parse.urlsplit(link).path.rstrip("/").rsplit("/", 1)[-1] for link in links}
    assert "08-when-a-backend-fails" in pages, (meta, links)
    assert nothing == [] and "No matching" in none_meta, (none_meta, nothing)


def test_without_the_search_index_the_search_box_finds_nothing(site: Path, serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bare = tmp_path / "bare"
    shutil.copytree(site, bare)
    (bare / "search" / "search_index.json").unlink()
    with _browser(tmp_path, "chromium-search") as b:
        links, meta = _search(b, serve(bare), "max_fails")
    assert links == [], (meta, links)


def test_lesson_10s_chart_is_an_image_the_browser_draws(site: Path, serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    size = ("return [...document.querySelectorAll('article img')].filter(i => i.complete)"
            ".map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])")
    with _browser(tmp_path, "chromium-chart") as b:
        b.go(f"{serve(site)}/lessons/10-cost-of-the-hop/")
        images = b.wait_for(size)
    charts = [(src, w, h) for src, w, h in images if src.endswith("bench-sample.png")]
    assert charts and all(w >= 600 and h >= 300 for _, w, h in charts), images
