"""The lesson notebooks: committed clean, executed top to bottom in a fresh kernel, and stopped in every way.

Each kernel gets a marker in its environment; every process a notebook starts inherits it, so
"nothing left running" is checked on exactly this kernel's processes (other people's lessons may be
running on the same machine) while the kernel is still alive, i.e. without help from PDEATHSIG.
Lessons 1-6 use the tutorial's fixed ports 8080/50051/50052.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbclient.util import run_sync

from pcbook.paths import ROOT
from pcbook.service import certs
from pcbook.stack.ports import find_listener
from pcbook.workbook import manifest, notebook_build

LESSONS_DIR = ROOT / "lessons"
MARK = "PCBOOK_NOTEBOOK_TEST"
CELL_TIMEOUT = 90  # seconds; the longest cell (lesson 10's story) takes about 20
# The ports each lesson listens on (lessons 7-10: see pcbook/lessons/ and pcbook/measure/bench.py).
TUTORIAL = (8080, 50051, 50052)
PORTS = {
    **{n: TUTORIAL for n in range(1, 7)},
    7: (8071, 50071, 50072),
    8: (8081, 50081, 50082),
    9: (8091, 8092, 50091, 50092),
    10: (8101, 8102, 8103, 8104, 8105, 50101, 50102, 50103, 50104),
}


@pytest.fixture(scope="module", autouse=True)
def _certificates() -> None:
    certs.ensure_certs()


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
def kernel(nb: nbformat.NotebookNode) -> Iterator[Kernel]:
    marker = uuid.uuid4().hex
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(LESSONS_DIR)}})
    with client.setup_kernel(env={**os.environ, MARK: marker}):
        k = Kernel(client, marker)
        try:
            # The kernelspec's "python" must resolve to this environment's interpreter (the venv's).
            assert Path(f"/proc/{k.pid}/exe").resolve() == Path(sys.executable).resolve()
            assert Path(f"/proc/{k.pid}/cwd").resolve() == LESSONS_DIR.resolve()
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


# --- the committed files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lesson", manifest.LESSONS, ids=lambda lesson: lesson.target)
def test_committed_notebook_is_clean_and_links_its_lesson(lesson: manifest.Lesson) -> None:
    nb = read(lesson)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebooks without outputs"
    first = nb.cells[0].source
    assert lesson.doc_url in first and f"../docs/{lesson.doc_page}" in first and f"make {lesson.target}" in first
    assert nb.cells[-1].source == "session.close()"


def test_committed_notebooks_are_what_the_generator_writes() -> None:
    assert sorted(p.name for p in LESSONS_DIR.glob("*.ipynb")) == sorted(Path(x.notebook).name
                                                                         for x in manifest.LESSONS)
    assert notebook_build.stale() == [], "run: .venv/bin/python -m pcbook.workbook.notebook_build"


# --- executing every notebook ----------------------------------------------------------------------------

@pytest.mark.timeout(180)
@pytest.mark.parametrize("lesson", manifest.LESSONS, ids=lambda lesson: lesson.target)
def test_notebook_runs_top_to_bottom(lesson: manifest.Lesson) -> None:
    nb = read(lesson)
    with kernel(nb) as k:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                k.client.execute_cell(cell, index)  # raises CellExecutionError on any error
        k.assert_nothing_left(PORTS[lesson.number])
    code = [c for c in nb.cells if c.cell_type == "code"]
    checkpoint = outputs_text(code[-2]).strip().splitlines()
    assert checkpoint and checkpoint[-1] == f"checkpoint {lesson.target}: passed", outputs_text(code[-2])
    stopped = outputs_text(code[-1]).strip().splitlines()[-1]
    assert stopped.startswith(("stopped ", "nothing is running")), stopped


# --- the stop paths (lesson 2: two servers and nginx) -----------------------------------------------------

def _start_lesson_2(k: Kernel) -> None:
    k.run("from pcbook.workbook.notebook import Session\nsession = Session(2)")
    k.run("step1 = session.step(1)")
    names = " ".join(k.processes().values())
    assert "pcbook.server" in names and "nginx" in names, "the stack should be up between cells"


@pytest.mark.timeout(120)
def test_a_failing_cell_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        with pytest.raises(CellExecutionError, match="a learner's mistake"):
            k.run("raise ValueError(\"a learner's mistake\")")
        k.assert_nothing_left(TUTORIAL)


@pytest.mark.timeout(120)
def test_a_step_failing_midway_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        # The servers are up again (restarted by the step); nginx then refuses to start.
        broken = ("import pcbook.stack.nginx\n"
                  "def broken(*args, **kwargs):\n"
                  "    raise pcbook.stack.nginx.NginxConfigError('nginx rejected its config')\n"
                  "pcbook.stack.nginx.start_nginx = broken\n"
                  "session.step(1)")
        with pytest.raises(CellExecutionError, match="nginx rejected its config"):
            k.run(broken)
        k.assert_nothing_left(TUTORIAL)


@pytest.mark.timeout(120)
def test_interrupting_a_step_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        k.run("from pcbook.workbook.notebook import Session\nsession = Session(2)")
        kc = k.client.kc
        msg_id = kc.execute("step1 = session.step(1)")
        # Interrupt once the step is in full swing: both servers and nginx are up.
        assert eventually(lambda: sum("pcbook.server" in c or "nginx: master" in c
                                      for c in k.processes().values()) >= 3)
        run_sync(k.client.km.interrupt_kernel)()
        reply = run_sync(kc.get_shell_msg)(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = run_sync(kc.get_shell_msg)(timeout=60)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        k.assert_nothing_left(TUTORIAL)


@pytest.mark.timeout(120)
def test_rerunning_from_the_top_replaces_the_stack() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        first = set(k.processes())
        _start_lesson_2(k)  # Session(2) again: no "port in use"
        assert first.isdisjoint(k.processes())
        k.run("session.close()")
        k.assert_nothing_left(TUTORIAL)


@pytest.mark.timeout(120)
def test_restarting_the_kernel_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        run_sync(k.client.km.restart_kernel)(now=False)  # as JupyterLab's Kernel > Restart does
        k.pid = k.client.km.provisioner.process.pid  # type: ignore[union-attr]  # the new kernel
        # The old kernel's children are orphans now: the marker and the sessions still name them.
        assert eventually(lambda: k.processes() == {}), k.processes()
        assert not any(find_listener(port) for port in TUTORIAL)
