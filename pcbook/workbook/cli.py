"""The workbook's command line: `python -m pcbook.workbook lesson|check|nginx|list|progress|hint|watch|stop`.

The Makefile's `lesson-N`, `check-N`, `nginx-N`, `hint-N`, `watch-N`, `list`, `progress` and `stop` targets
call this.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from pcbook.paths import shown
from pcbook.stack import nginx, owners, procs
from pcbook.stack.ports import find_listener, holder
from pcbook.workbook import manifest, practice
from pcbook.workbook.runner import run_lesson, write_line


def _lesson(number: int) -> manifest.Lesson:
    try:
        return manifest.get(number)
    except KeyError as err:
        raise SystemExit(str(err.args[0])) from None


def _config(path: str | None) -> Path | None:
    if path is None:
        return None
    conf = Path(path)
    if not conf.is_file():
        raise SystemExit(f"no config at {conf}: pass CONF=path/to/your/config (for example nginx/exercises/ or "
                         "envoy/exercises/)")
    return conf


def cmd_lesson(args: argparse.Namespace) -> int:
    lesson = _lesson(args.number)
    result = run_lesson(lesson, keep=args.keep)
    print()
    for outcome in result.steps:
        if not outcome.passed and not outcome.checkpoint:
            print(f"step {outcome.key} ('{outcome.title}') did not show what the tutorial shows: "
                  f"{'; '.join(outcome.diffs)}")
    print(result.checkpoint_line())
    return 0 if result.story_passed and result.checkpoint_passed else 1


def cmd_check(args: argparse.Namespace) -> int:
    lesson = _lesson(args.number)
    conf = _config(args.conf)
    if conf is not None and lesson.checkpoint_config is None:
        raise SystemExit(f"lesson {lesson.number}'s checkpoint runs no config file of yours, so it takes no CONF")
    result = run_lesson(lesson, conf=conf, checkpoint_only=True, echo=None if args.quiet else write_line)
    print(result.checkpoint_line())
    return 0 if result.checkpoint_passed else 1


def cmd_nginx(args: argparse.Namespace) -> int:
    """nginx with a config of the lesson (or the learner's, in place of the checkpoint's), and, for each step
    that runs with that config, the servers and the client to start next to it: the steps' own specs."""
    lesson = _lesson(args.number)
    learner = _config(args.conf)
    lesson_conf = learner.resolve() if learner else None
    own = {s.nginx.path.resolve() for s in lesson.steps if s.nginx}
    if lesson_conf is not None and lesson_conf not in own:
        # A learner's file stands in for the checkpoint's config: the steps it replaces are those.
        lesson_conf = lesson.checkpoint_nginx_config.resolve() if lesson.checkpoint_nginx_config else None
    step = lesson.nginx_step
    if step is None or step.nginx is None:
        raise SystemExit(f"lesson {lesson.number} uses no nginx: run `make {lesson.target}` to see it")
    target = lesson_conf or step.nginx.path.resolve()
    steps = [(n, s) for n, s in enumerate(lesson.steps, 1) if s.nginx and s.nginx.path.resolve() == target]
    spec = steps[-1][1].nginx if steps else step.nginx
    assert spec is not None
    if any(s.sync for _, s in steps):  # its upstream is rendered from etcd: nginx alone has none
        raise SystemExit(f"lesson {lesson.number}'s nginx gets its upstream from the registry (nginx_sync): "
                         f"`make {lesson.target} KEEP=1` leaves its whole stack up to explore")
    conf = learner or spec.path
    with procs.Stack() as stack:
        try:
            for port in spec.more_ports:
                procs.check_port_free(port)
            nginx.start_nginx(stack, conf, port=spec.port)
        except (procs.PortBusyError, procs.NotReadyError, nginx.NginxError) as err:
            print(err, file=sys.stderr)
            return 1
        print(f"nginx is up on {' and '.join(map(str, spec.ports))} with {shown(conf)}.")
        print("The lesson's steps that run with this config; for one of them, start in other terminals:")
        for number, s in steps:
            print(f"  step {number}/{len(lesson.steps)} ({s.key}): {s.title}")
            for server in s.servers:
                print(f"      {server.command()}")
            if s.client is not None:
                print(f"      {s.client.command()}")
            print(f"      expect: {'; '.join(s.must_show())}")
        try:  # the line inside: a Ctrl-C right after it stops nginx the same way
            print("Ctrl-C stops nginx.", flush=True)
            stack.wait_forever()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_list(_args: argparse.Namespace) -> int:
    for lesson in manifest.LESSONS:
        configs = ", ".join(p.name for p in lesson.nginx_configs) or "no nginx"
        beyond = "" if lesson.tutorial else "  [beyond the tutorial]"
        print(f"  make {lesson.target:<10} {lesson.title}  ({configs}){beyond}")
    return 0


def cmd_progress(_args: argparse.Namespace) -> int:
    """Each lesson's exercise, checked once per content: the learner's own work (pcbook.workbook.practice)."""
    return practice.progress(manifest.LESSONS)


def cmd_hint(args: argparse.Namespace) -> int:
    return practice.hint(_lesson(args.number), show_all=args.all)


def cmd_watch(args: argparse.Namespace) -> int:
    lesson = _lesson(args.number)
    if lesson.exercise is None:
        raise SystemExit(f"lesson {lesson.number} has no exercise to watch: make {lesson.target} replays it")
    conf = _config(args.conf) or lesson.exercise.path
    return practice.watch(lesson, conf)


def cmd_stop(_args: argparse.Namespace) -> int:
    """Stop the servers, clients and nginx this checkout started and a crashed run left behind."""
    stopped: list[int] = []
    for found in owners.pcbook_processes():
        if found.ours is None:
            print(f"left alone: pid {found.pid} ({found.command[:80]}) belongs to another user")
        if not found.ours:
            continue
        try:
            os.kill(found.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        except PermissionError:
            print(f"cannot stop pid {found.pid} ({found.command[:80]}): it belongs to another user")
            continue
        stopped.append(found.pid)
        print(f"stopped {found.pid}: {found.command[:100]}")
    _wait_gone(stopped, STOP_WAIT)
    print("nothing of this checkout was running" if not stopped else f"stopped {len(stopped)} process(es)")
    for port in owners.lesson_ports():
        owner = find_listener(port)
        if owner is not None and not owners.is_ours(owner[0]):
            print(f"port {port} is still in use by {holder(*owner)}")
    return 0


STOP_WAIT = 5.0  # seconds stopped processes get to exit before `make stop` looks at the ports


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the process table, bounded by the deadline


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent can reap it


def leftovers() -> list[tuple[int, str]]:
    """(pid, command) of what this checkout started and still runs (see pcbook.stack.owners)."""
    return owners.leftovers()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pcbook.workbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lesson", help="replay lesson N's story on a real stack and check it")
    p.add_argument("number", type=int)
    p.add_argument("--keep", action="store_true", help="leave the final stack up until Ctrl-C")
    p.set_defaults(func=cmd_lesson)
    p = sub.add_parser("check", help="run lesson N's checkpoint, optionally against your nginx (or Envoy) config")
    p.add_argument("number", type=int)
    p.add_argument("--conf", help="your config instead of the lesson's (nginx's; Envoy's in lesson 13)")
    p.add_argument("--quiet", action="store_true", help="print only the checkpoint line")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("nginx", help="start only nginx with lesson N's checkpoint config, until Ctrl-C")
    p.add_argument("number", type=int)
    p.add_argument("--conf", help="your nginx.conf instead of the lesson's")
    p.set_defaults(func=cmd_nginx)
    sub.add_parser("list", help="list the lessons (those beyond the tutorial are marked)").set_defaults(func=cmd_list)
    p = sub.add_parser("progress", help="check your exercises (nginx/, envoy/ and lessons/exercises/)")
    p.set_defaults(func=cmd_progress)
    p = sub.add_parser("hint", help="the next hint for lesson N's exercise")
    p.add_argument("number", type=int)
    p.add_argument("--all", action="store_true", help="every hint at once")
    p.set_defaults(func=cmd_hint)
    p = sub.add_parser("watch", help="check lesson N's exercise on every save, until Ctrl-C")
    p.add_argument("number", type=int)
    p.add_argument("--conf", help="the file to watch instead of the lesson's exercise file")
    p.set_defaults(func=cmd_watch)
    sub.add_parser("stop", help="stop what a crashed run left behind").set_defaults(func=cmd_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C stops a lesson even when a script started it in the background: the shell then leaves
    # SIGINT ignored, and Python installs no KeyboardInterrupt handler for an ignored signal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # A second Ctrl-C (while the stack is stopping) must not cut the stopping short, and the
        # message comes only once everything has really stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.close_all()
        print("interrupted; everything was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
