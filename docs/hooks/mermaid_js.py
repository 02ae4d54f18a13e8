"""The site's diagrams without a CDN: a pinned mermaid.min.js, fetched once by `make setup`.

Material for MkDocs loads mermaid from unpkg.com when the page has no `mermaid` of its own, so offline
every diagram would stay raw text. `make setup` runs this module: it fetches the npm package `mermaid`
at the pinned version with npm (`npm pack`), checks the tarball against the pinned integrity, and puts
`dist/mermaid.min.js` into the virtual environment (`<venv>/share/pcbook/mermaid.min.js`). The docs
hook (generate.py) ships that file with the site and loads it before Material's own code.

    python docs/hooks/mermaid_js.py          # fetch it if missing (what `make setup` runs)
    python docs/hooks/mermaid_js.py --check  # exit 1 if it is missing
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "11.12.0"
# `npm view mermaid@11.12.0 dist.integrity`: the registry's sha512 of the tarball.
INTEGRITY = "sha512-ZudVx73BwrMJfCFmSSJT84y6u5brEoV8DOItdHomNLz32uBjNrelm7mg95X7g+C6UoQH/W6mBLGDEDv73JdxBg=="
MEMBER = "package/dist/mermaid.min.js"
ENV = "MERMAID_JS"  # a mermaid.min.js of your own instead


def installed_path() -> Path:
    """Where `make setup` puts it: inside the virtual environment that runs mkdocs."""
    return Path(sys.prefix) / "share" / "pcbook" / "mermaid.min.js"


def find() -> Path | None:
    """The mermaid.min.js the site ships: $MERMAID_JS, else the installed one, else None."""
    own = os.environ.get(ENV)
    if own:
        return Path(own)
    path = installed_path()
    return path if path.is_file() else None


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(target: Path | None = None) -> Path:
    """npm pack mermaid@VERSION, verify it, extract mermaid.min.js to `target`. Raises RuntimeError."""
    target = target or installed_path()
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([npm, "pack", f"mermaid@{VERSION}", "--silent", "--pack-destination", tmp],
                             capture_output=True, text=True, timeout=300)
        tarball = Path(tmp) / f"mermaid-{VERSION}.tgz"
        if res.returncode != 0 or not tarball.is_file():
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"npm pack mermaid@{VERSION} failed: {last}")
        data = tarball.read_bytes()
        if _integrity(data) != INTEGRITY:
            raise RuntimeError(f"mermaid-{VERSION}.tgz does not match the pinned integrity")
        with tarfile.open(tarball) as tar:
            member = tar.extractfile(MEMBER)
            if member is None:
                raise RuntimeError(f"mermaid-{VERSION}.tgz has no {MEMBER}")
            script = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(script)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the pinned mermaid.min.js for offline diagrams.")
    parser.add_argument("--check", action="store_true", help="only report whether it is there")
    args = parser.parse_args(argv)
    path = installed_path()
    if path.is_file():
        return 0
    if args.check:
        print(f"{path} is missing: run `make setup` (needs npm) for diagrams that render offline")
        return 1
    try:
        fetch(path)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        # Not fatal: the site still builds, and its diagrams render when the browser is online.
        print(f"mermaid {VERSION} not fetched ({err}): the site's diagrams will need the network "
              "(install npm and run `make setup` again)")
        return 0
    print(f"fetched mermaid {VERSION} for the site's diagrams (offline): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
