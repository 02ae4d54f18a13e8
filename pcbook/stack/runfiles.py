"""RUN_DIR's folders and loose files: a fresh run folder per process (nginx, etcd, Envoy, HAProxy), the
newest few kept, and the pruning of the loose files.

- `load-<pid>-<n>.json` and `discovery-load-<pid>-<n>.json` (a load driver's report, read by the run
  that started it): removed once process <pid> is gone, which is what an interrupted run leaves.
- `xds-bootstrap-<port>.json` (written once per control-plane port, read by each xDS client): the
  newest KEEP_BOOTSTRAPS stay, and none younger than MIN_AGE seconds goes.

Called whenever a run folder is made; a file another process removes meanwhile is not an error.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

KEEP_BOOTSTRAPS = 5
MIN_AGE = 60.0  # s: a bootstrap this young may belong to a run that is starting now
_REPORT = re.compile(r"(?:discovery-)?load-(\d+)-\d+\.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a number we cannot ask about): leave its file
    return True


def prune(run_dir: Path) -> list[Path]:
    """Remove the stale files of `run_dir` (see the module docstring); returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(run_dir).iterdir())
    except OSError:
        return removed
    bootstraps = []
    for path in entries:
        match = _REPORT.fullmatch(path.name)
        if match and not _alive(int(match.group(1))):
            removed.append(path)
        elif path.name.startswith("xds-bootstrap-") and path.suffix == ".json":
            try:
                bootstraps.append((path.stat().st_mtime, path))
            except OSError:
                continue
    bootstraps.sort()
    now = time.time()
    removed += [path for mtime, path in bootstraps[:max(0, len(bootstraps) - KEEP_BOOTSTRAPS)]
                if now - mtime > MIN_AGE]
    for path in removed:
        try:
            path.unlink()
        except OSError:
            pass
    return removed


def fresh_folder(run_dir: Path, kind: str, keep: int, *, in_use: Callable[[Path], bool] = lambda _p: False,
                 mode: int = 0o777) -> Path | None:
    """A new RUN_DIR/<kind>-<time>-<pid>-<n> folder; deletes all but the newest `keep` - 1 earlier ones of
    that kind (not those `in_use` says a running process still reads). None: no free name was found."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in run_dir.glob(f"{kind}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for stale in old[:max(0, len(old) - (keep - 1))]:
        if not in_use(stale):
            shutil.rmtree(stale, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = run_dir / f"{kind}-{stamp}-{os.getpid()}-{n}"
        try:
            folder.mkdir(mode=mode)
            return folder
        except FileExistsError:
            continue
    return None
