"""Run a lesson's notebook in a fresh kernel, the way a learner does, and keep what its steps showed.

Each lesson's story is played once per test session, by its notebook: the notebook tests check the
notebook ran cleanly and stopped everything, the checkpoint tests assert on the steps' outcomes (pickled
out of the kernel). One replay serves both.

Each kernel gets a marker in its environment; every process a notebook starts inherits it, so
"nothing left running" is checked on exactly this kernel's processes (other people's lessons may be
running on the same machine) while the kernel is still alive, i.e. without help from PDEATHSIG.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from pcbook.paths import ROOT
from pcbook.stack.ports import find_listener
from pcbook.stage.model import Lesson
from pcbook.workbook import manifest
from pcbook.workbook.runner import LessonResult

LESSONS_DIR = ROOT / "lessons"
MARK = "PCBOOK_NOTEBOOK_TEST"
CELL_TIMEOUT = 90  # seconds; the longest cell (a step of lesson 10) takes about 10


# --- this kernel's processes ---------------------------------------------------------------------------

def _table() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (ppid, session id, environment) of every live (not zombie) process we can read."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):  # a zombie waiting for its reaper runs nothing
            out[int(entry.name)] = (int(fields[1]), int(fields[3]), environ)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def eventually(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Kernel:
    """A fresh python3 kernel with the working directory JupyterLab gives it, and a watch on every
    process it starts.

    A process is the kernel's if it carries the kernel's marker in its environment, descends from the
    kernel, or lives in a session one of those ever had (every Stack child leads its own session).
    The session record catches nginx: its master rewrites its environment area with its title, and
    its workers would be orphans if the master died first.
    """

    def __init__(self, client: NotebookClient, marker: str) -> None:
        self.client = client
        self.needle = f"{MARK}={marker}".encode()
        self.pid: int = client.km.provisioner.process.pid  # type: ignore[union-attr]
        self.sessions: set[int] = set()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self.processes()

    def close(self) -> None:
        self._stop.set()
        self._watcher.join()

    def run(self, source: str) -> nbformat.NotebookNode:
        """Append a code cell to the notebook and execute it (raises CellExecutionError on an error)."""
        cells = self.client.nb.cells
        cells.append(nbformat.v4.new_code_cell(source))
        return self.client.execute_cell(cells[-1], len(cells) - 1)

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process of this kernel but the kernel itself."""
        table = _table()
        own = {self.pid}
        grew = True
        while grew:
            more = {pid for pid, (ppid, _, env) in table.items() if pid not in own
                    and (ppid in own or self.needle in env.split(b"\0"))}
            own |= more
            grew = bool(more)
        kernel_session = table.get(self.pid, (0, -1, b""))[1]
        self.sessions |= {table[pid][1] for pid in own if pid in table} - {kernel_session, os.getsid(0)}
        own |= {pid for pid, (_, sid, _) in table.items() if sid in self.sessions}
        return {pid: _cmdline(pid) for pid in sorted(own - {self.pid})}

    def assert_nothing_left(self, ports: tuple[int, ...]) -> None:
        left = self.processes()
        assert left == {}, f"the notebook left processes running: {left}"
        held = {port: owner for port in ports if (owner := find_listener(port)) and owner[0] in left}
        assert held == {}, f"the notebook left ports listening: {held}"


@contextmanager
def kernel(nb: nbformat.NotebookNode, cwd: Path = LESSONS_DIR) -> Iterator[Kernel]:
    marker = uuid.uuid4().hex
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel(env={**os.environ, MARK: marker}):
        k = Kernel(client, marker)
        try:
            # The kernelspec's "python" must resolve to this environment's interpreter (the venv's).
            assert Path(f"/proc/{k.pid}/exe").resolve() == Path(sys.executable).resolve()
            assert Path(f"/proc/{k.pid}/cwd").resolve() == cwd.resolve()
            yield k
        finally:
            k.close()


def outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/markdown") or out["data"].get("text/plain", ""))
    return "".join(parts)


def read(lesson: manifest.Lesson) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / lesson.notebook, as_version=4)


@dataclass
class Played:
    """A notebook run top to bottom: its executed cells, and the lesson's outcomes in it."""

    nb: nbformat.NotebookNode
    result: LessonResult
    left_running: dict[int, str]  # processes of the kernel still up before the kernel ended
    held_ports: dict[int, tuple[int, str]]


STEP_CALL = re.compile(r'^(?:\w+ = )?session\.step\("([a-z0-9-]+)"\)$', re.M)


def steps_in(nb: nbformat.NotebookNode) -> list[tuple[str, int]]:
    """(heading, the keys of the `session.step("key")` calls up to the next heading) for every ### heading."""
    found: list[tuple[str, list[str]]] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("### "):
                    found.append((line[4:].strip(), []))
        elif found:
            found[-1][1].extend(STEP_CALL.findall(cell.source))
        else:
            assert not STEP_CALL.search(cell.source), "a step runs before its heading"
    return [(title, len(keys)) for title, keys in found if not keys] + [(title, keys) for title, keys in found if keys]


def check_steps(lesson: Lesson, nb: nbformat.NotebookNode) -> None:
    """One `### <step title>` heading per step, in the model's order, each followed by one `session.step()`;
    headings without a step (a chart, a table) never use a step's title."""
    found = steps_in(nb)
    shown = [(title, keys) for title, keys in found if keys]
    assert shown == [(step.title, [step.key]) for step in lesson.steps], (
        "one `### <step title>` heading from the lesson's declaration per step, each followed by one "
        f'`session.step("<its key>")`; found {shown}')
    titles = {step.title for step in lesson.steps}
    assert all(keys or title not in titles for title, keys in found)


@functools.cache
def play(number: int) -> Played:
    """Execute lesson `number`'s notebook and return what its steps showed (once per test session)."""
    lesson = manifest.get(number)
    return play_notebook(lesson, read(lesson))


def play_notebook(lesson: Lesson, nb: nbformat.NotebookNode, cwd: Path = LESSONS_DIR) -> Played:
    """Execute every cell of `nb` in order (CellExecutionError on an error), collect the session's
    outcomes and whatever the kernel still runs before the kernel ends."""
    with tempfile.TemporaryDirectory() as tmp, kernel(nb, cwd) as k:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                k.client.execute_cell(cell, index)
        left = k.processes()
        held = {port: owner for port in lesson.ports if (owner := find_listener(port)) and owner[0] in left}
        dump = Path(tmp) / "outcomes.pickle"
        k.run(f"import pickle\nwith open({str(dump)!r}, 'wb') as f:\n    pickle.dump(session.outcomes, f)")
        k.client.nb.cells.pop()  # the extra cell is not the learner's
        outcomes = pickle.loads(dump.read_bytes())
    return Played(nb, LessonResult(lesson, outcomes), left, held)
