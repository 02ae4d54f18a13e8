"""The commands the workbook prints for a learner to type are the ones its steps run (issue 26, items 1-2):
`make nginx-N` lists every step that runs with the config it started, each with its own commands, and
a client command, typed into a shell, gets the argv the runner gives that client."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pcbook.paths import NGINX_DIR, ROOT
from pcbook.service import certs
from pcbook.stage.model import Client, Lesson
from pcbook.workbook import manifest, runner

VENV_BIN = str(Path(sys.executable).parent)


def _shell_argv(command: str) -> list[str]:
    """What bash hands the client when a learner types `command` (its `$(...)` computed, as in a terminal
    where the workbook's venv is active): the client module replaced by printf, one argument a line."""
    typed = command.replace(f"{sys.executable} -m pcbook.client", "printf '%s\\n'")
    typed = re.sub(r"^python -m pcbook\.client", "printf '%s\\n'", typed)
    assert typed.startswith("printf"), command
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-c", typed], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _typed(client: Client) -> str:
    """The command a learner types for the step's client: the printed one, or, for a `make` target, the
    recipe make runs for it."""
    shown = runner_client_line(client)
    if not shown.startswith("make "):
        return shown
    target = shown.removeprefix("make ").split(" (x")[0]
    done = subprocess.run(["make", "-s", "-n", *shlex.split(target)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    recipe = done.stdout.replace("\\\n", " ")
    lines = [line for line in recipe.splitlines() if "-m pcbook.client" in line]
    assert len(lines) == 1, done.stdout
    return lines[0].replace(".venv/bin/python", sys.executable).strip()


def runner_client_line(client: Client) -> str:
    step_lines = [line for line in runner.describe(_step_with(client), None) if line.startswith("client:")]
    return step_lines[0].removeprefix("client:").strip()


def _step_with(client: Client):  # type: ignore[no-untyped-def]
    return next(s for lesson in manifest.LESSONS for s in lesson.steps if s.client is client)


FOREIGN = [(lesson.number, step.key) for lesson in manifest.LESSONS for step in lesson.steps
           if isinstance(step.client, Client) and step.client.cert != "ours"]


def test_the_tutorials_refusals_and_lesson_9s_are_all_covered() -> None:
    assert (9, "foreign-client-cert") in FOREIGN and (3, "foreign-client-cert") in FOREIGN


@pytest.mark.parametrize(("number", "key"), FOREIGN, ids=[f"{n}-{k}" for n, k in FOREIGN])
def test_a_printed_client_command_typed_in_a_shell_runs_what_the_runner_runs(number: int, key: str) -> None:
    client = manifest.get(number).step(key).client
    assert isinstance(client, Client)
    foreign = certs.foreign_client_dir() if client.cert == "foreign" else None
    assert _shell_argv(_typed(client)) == client.args(foreign), runner_client_line(client)


def _nginx_listing(*args: str) -> list[str]:
    """`python -m pcbook.workbook nginx ...`'s lines up to "Ctrl-C stops nginx.", then Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pcbook.workbook", "nginx", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:  # bounded: it prints the line waited for, or ends
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops nginx."):
                break
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and lines[-1:] == ["Ctrl-C stops nginx."], "\n".join(lines)
    return lines


def _expected(lesson: Lesson, conf: Path) -> list[str]:
    out = []
    for number, step in enumerate(lesson.steps, 1):
        if step.nginx is None or step.nginx.path.resolve() != conf.resolve():
            continue
        out.append(f"  step {number}/{len(lesson.steps)} ({step.key}): {step.title}")
        out += [f"      {server.command()}" for server in step.servers]
        out += [f"      {step.client.command()}"] if step.client is not None else []
        out.append(f"      expect: {'; '.join(step.must_show())}")
    return out


@pytest.mark.parametrize(("number", "conf", "steps_of"), [
    (3, None, "lesson-3.conf"),
    (4, "lesson-4-tls12.conf", "lesson-4-tls12.conf"),
    (5, "mine", "lesson-5.conf"),  # a learner's file stands in for the checkpoint's config
])
def test_make_nginx_lists_each_step_of_the_config_it_started(number: int, conf: str | None, steps_of: str,
                                                            tmp_path: Path) -> None:
    lesson = manifest.get(number)
    args = [str(number)]
    if conf == "mine":
        mine = tmp_path / "mine.conf"
        shutil.copyfile(NGINX_DIR / steps_of, mine)
        args += ["--conf", str(mine)]
    elif conf is not None:
        args += ["--conf", str(NGINX_DIR / conf)]
    lines = _nginx_listing(*args)
    expected = _expected(lesson, NGINX_DIR / steps_of)
    assert len([e for e in expected if e.startswith("  step ")]) >= 1
    listed = lines[lines.index(next(x for x in lines if x.startswith("The lesson's steps"))) + 1:-1]
    assert listed == expected, "\n".join(lines)
    if steps_of == "lesson-4-tls12.conf":
        # The aside needs backends that require a client certificate again.
        assert not any("CLIENT_AUTH=none" in line for line in listed), "\n".join(lines)
