"""The lesson notebooks: committed clean, one heading and one `session.step()` per step of the model, in
order; executed top to bottom in a fresh kernel (once per session, see play.py); stopped in every way.

The notebooks in lessons/ are their own source: edit them in JupyterLab (then clear the outputs).
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from nbclient.util import run_sync

from pcbook.paths import ROOT
from pcbook.service import certs
from pcbook.stack.ports import find_listener
from pcbook.stage.model import TUTORIAL_PORTS
from pcbook.workbook import manifest

from .play import LESSONS_DIR, Kernel, check_steps, eventually, kernel, outputs_text, play, read


@pytest.fixture(scope="module", autouse=True)
def _certificates() -> None:
    certs.ensure_certs()


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


def test_every_notebook_belongs_to_a_lesson() -> None:
    assert sorted(p.relative_to(ROOT).as_posix() for p in LESSONS_DIR.glob("*.ipynb")) == sorted(
        x.notebook for x in manifest.LESSONS)


@pytest.mark.parametrize("lesson", manifest.LESSONS, ids=lambda lesson: lesson.target)
def test_notebook_runs_each_step_once_under_its_title_in_order(lesson: manifest.Lesson) -> None:
    check_steps(lesson, read(lesson))


def test_notebook_header_is_generated_from_the_declaration() -> None:
    from pcbook.workbook.notebook import header

    for lesson in manifest.LESSONS:
        first = read(lesson).cells[0].source
        assert first == header(lesson), f"{lesson.notebook}: its first cell is not header(lesson): paste it again"
        assert f"Ports used: {', '.join(map(str, lesson.ports))}." in first


# --- executing every notebook ----------------------------------------------------------------------------

@pytest.mark.timeout(180)
@pytest.mark.parametrize("lesson", manifest.LESSONS, ids=lambda lesson: lesson.target)
def test_notebook_runs_top_to_bottom(lesson: manifest.Lesson) -> None:
    played = play(lesson.number)  # the checkpoint tests may have played it already in this session
    assert played.left_running == {}, f"the notebook left processes running: {played.left_running}"
    assert played.held_ports == {}, f"the notebook left ports listening: {played.held_ports}"
    assert [o.title for o in played.result.steps] == [s.title for s in lesson.steps]
    code = [c for c in played.nb.cells if c.cell_type == "code"]
    checkpoint = outputs_text(code[-2]).strip().splitlines()
    assert checkpoint and checkpoint[-1] == f"checkpoint {lesson.target}: passed", outputs_text(code[-2])
    stopped = outputs_text(code[-1]).strip().splitlines()[-1]
    assert stopped.startswith(("stopped ", "nothing is running")), stopped


# --- the stop paths (lesson 2: two servers and nginx) -----------------------------------------------------

def _start_lesson_2(k: Kernel) -> None:
    k.run("from pcbook.workbook.notebook import Session\nsession = Session(2)")
    k.run("step1 = session.step()")
    names = " ".join(k.processes().values())
    assert "pcbook.server" in names and "nginx" in names, "the stack should be up between cells"


@pytest.mark.timeout(120)
def test_a_failing_cell_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        with pytest.raises(CellExecutionError, match="a learner's mistake"):
            k.run("raise ValueError(\"a learner's mistake\")")
        k.assert_nothing_left(TUTORIAL_PORTS)


@pytest.mark.timeout(120)
def test_a_step_failing_midway_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        # A new session starts the servers for its step; nginx then refuses to start.
        broken = ("import pcbook.stack.nginx\n"
                  "def broken(*args, **kwargs):\n"
                  "    raise pcbook.stack.nginx.NginxConfigError('nginx rejected its config')\n"
                  "pcbook.stack.nginx.start_nginx = broken\n"
                  "session = Session(2)\n"
                  "session.step()")
        with pytest.raises(CellExecutionError, match="nginx rejected its config"):
            k.run(broken)
        k.assert_nothing_left(TUTORIAL_PORTS)


@pytest.mark.timeout(120)
def test_interrupting_a_step_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        k.run("from pcbook.workbook.notebook import Session\nsession = Session(2)")
        kc = k.client.kc
        msg_id = kc.execute("step1 = session.step()")
        # Interrupt once the step is in full swing: both servers and nginx are up.
        assert eventually(lambda: sum("pcbook.server" in c or "nginx: master" in c
                                      for c in k.processes().values()) >= 3)
        run_sync(k.client.km.interrupt_kernel)()
        reply = run_sync(kc.get_shell_msg)(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = run_sync(kc.get_shell_msg)(timeout=60)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        k.assert_nothing_left(TUTORIAL_PORTS)


@pytest.mark.timeout(120)
def test_rerunning_from_the_top_replaces_the_stack() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        first = set(k.processes())
        _start_lesson_2(k)  # Session(2) again: no "port in use"
        assert first.isdisjoint(k.processes())
        k.run("session.close()")
        k.assert_nothing_left(TUTORIAL_PORTS)


@pytest.mark.timeout(120)
def test_restarting_the_kernel_stops_everything() -> None:
    with kernel(nbformat.v4.new_notebook()) as k:
        _start_lesson_2(k)
        run_sync(k.client.km.restart_kernel)(now=False)  # as JupyterLab's Kernel > Restart does
        k.pid = k.client.km.provisioner.process.pid  # type: ignore[union-attr]  # the new kernel
        # The old kernel's children are orphans now: the marker and the sessions still name them.
        assert eventually(lambda: k.processes() == {}), k.processes()
        assert not any(find_listener(port) for port in TUTORIAL_PORTS)
