"""A tiny docker-compose for lessons, notebooks, tests and benchmarks.

    with Stack() as stack:
        stack.start("server1", [sys.executable, "-m", "pcbook.server", "--port", "50051"])
        stack.wait_ready("server1", port=50051, health=True)
        result = stack.run("client", [sys.executable, "-m", "pcbook.client"], timeout=30)
        stack.lines("server1")            # what server1 printed, captured in memory

Every child's stdout+stderr is echoed as `server1 | ...` with a fixed-width prefix and captured with
a timestamp. How children are kept from outliving the runner:

- Each child gets its own session/process group, so a terminal's Ctrl-C reaches only the runner,
  which then stops the children in reverse start order (SIGTERM to the group, SIGKILL after a grace
  period). `close()` runs on leaving `with`, at interpreter exit (atexit) and on SIGTERM.
- On Linux each child also gets PR_SET_PDEATHSIG=SIGTERM (set by a small exec wrapper, see
  _PDEATHSIG_WRAPPER), so it dies even when the runner is SIGKILLed. The kernel sends that signal
  when the *thread* that forked the child exits, so every Stack forks from its own spawner thread
  that lives exactly as long as the Stack; `start()` may be called from any thread. Elsewhere
  (macOS) there is no such net: a SIGKILLed runner leaves its children running.
- A registry of live Stacks: creating a Stack closes the earlier ones first (re-running a notebook
  cell must not hit "port in use"); `close_all()` closes every one.

No psutil here: a child's whole tree is reached by its process group, with no tree walk to race with.
"""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import re
import shutil
import signal as _signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pcbook import paths

from .ports import PortBusyError, check_port_free, pick_free_port
from .readiness import NotReadyError, check_alive, describe_exit, wait_grpc_health, wait_port

__all__ = [
    "Line", "NotReadyError", "PortBusyError", "Proc", "Result", "Stack", "check_port_free", "close_all", "live_stacks",
    "pick_free_port", "wait_grpc_health", "wait_port",
]

# pcbook.service.auth.DEV_SECRET_NOTED_ENV (not imported: the stack does not depend on the service).
DEV_SECRET_NOTED_ENV = "PCBOOK_DEV_SECRET_NOTED"
MIN_WIDTH = 7  # prefix width, like docker-compose's; grows with the longest name
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
_DRAIN = 2.0  # how long to wait for a dead process's last output to be read

Pattern = str | re.Pattern[str]


def _print(line: str) -> None:
    print(line, flush=True)


# --- children die with the runner (Linux) ---------------------------------------------------------

# PR_SET_PDEATHSIG is set by a tiny exec wrapper rather than a preexec_fn: a preexec_fn forces
# subprocess to use fork(), which runs the fork handlers grpc registers, and those can block forever
# (seen: a runner stuck in fork() right after a gRPC health check). Without preexec_fn subprocess
# uses vfork(), which runs no handlers. The wrapper sets the signal, checks that the runner has not
# already died, and execs the real command in place (same pid, same process group).
_PDEATHSIG_WRAPPER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None).prctl(1, 15, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGTERM
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[3:])\n"
)
PDEATHSIG = sys.platform.startswith("linux")


def _command(args: list[str], env: Mapping[str, str], cwd: str | os.PathLike[str] | None) -> list[str]:
    """The argv to spawn: on Linux `args` behind the PDEATHSIG wrapper, elsewhere `args` itself."""
    program = args[0]
    if os.sep in program:
        path = os.path.join(cwd, program) if cwd is not None else program  # as Popen resolves it
        found = path if os.access(path, os.X_OK) else None
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(f"{program} not found or not executable")
    if not PDEATHSIG:
        return args
    # -S -E: skip site and PYTHON* variables; the wrapper only needs ctypes (a few tens of ms).
    return [sys.executable, "-S", "-E", "-c", _PDEATHSIG_WRAPPER, str(os.getpid()),
            os.path.abspath(found), *args]


def _affinity() -> set[int] | frozenset[int] | None:
    """The calling thread's CPUs (None where the OS has no affinity call)."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


@contextmanager
def on_cpus(cpus: set[int] | frozenset[int] | None) -> Iterator[None]:
    """Run the body with this thread on `cpus` (None: as it is), then put the thread back. A process forked
    inside inherits them."""
    before = _affinity()
    if cpus is None or before is None or cpus == before:
        yield
        return
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class _Spawner:
    """One long-lived thread that forks every child of a Stack (see PDEATHSIG above)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="pcbook-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed back to the caller
                future.set_exception(exc)

    def call(self, fn: Callable[[], Any]) -> Any:
        future: Future[Any] = Future()
        self._jobs.put((fn, future))
        return future.result()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)


# --- records --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One captured line: when, from which process, and from where (its output, a log file, a note)."""

    t: float  # time.time()
    name: str
    text: str
    source: str = "out"  # "out" (stdout+stderr), a followed file's name, or "note" (the runner's own)
    pid: int = 0


@dataclass
class Result:
    """What a foreground child (a client) did."""

    name: str
    argv: list[str]
    returncode: int | None
    lines: list[str]
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


class Proc:
    """A child process of a Stack."""

    def __init__(self, stack: Stack, name: str, argv: list[str], popen: subprocess.Popen[bytes]):
        self.stack = stack
        self.name = name
        self.argv = argv
        self.popen = popen
        self.pid = popen.pid
        self.started = time.time()
        self._eof = threading.Event()  # its stdout pipe is closed
        self._finished = threading.Event()  # exited and every line of it has been recorded
        self._followers: list[threading.Thread] = []
        self._reader: threading.Thread | None = None

    def poll(self) -> int | None:
        """Exit code (negative: killed by that signal), or None while it runs."""
        return self.popen.poll()

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def done(self) -> bool:
        """It has exited and all of its output has been captured."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def lines(self) -> list[str]:
        """What this run of the process printed (a restarted name has one Proc per run)."""
        return [r.text for r in self.stack.records(self.name) if r.pid == self.pid and r.source != "note"]

    def tail(self, n: int = 20) -> list[str]:
        """Its last n lines; if it has exited, first let the reader catch up with its last output."""
        if self.popen.poll() is not None:
            self._finished.wait(_DRAIN)
        return self.lines()[-n:]

    def __repr__(self) -> str:
        state = "running" if self.running else describe_exit(self.popen.poll() or 0)
        return f"<Proc {self.name} pid={self.pid} {state}>"


# --- the stack ------------------------------------------------------------------------------------

class Stack:
    """Starts, watches, captures and stops a set of named child processes."""

    def __init__(self, echo: Callable[[str], None] | None = _print, run_dir: Path | None = None, *,
                 replace: bool = True):
        """`echo` gets every prefixed line (None: capture only). `run_dir` holds per-run files
        (nginx prefixes); default paths.RUN_DIR. `replace` closes the Stacks created earlier."""
        if replace:
            for old in live_stacks():
                running = [p.name for p in old._procs.values() if p.running]
                if running and echo:
                    echo(f"closing the earlier stack first (still running: {', '.join(running)})")
                old.close()
        self.echo = echo
        self.run_dir = Path(run_dir) if run_dir is not None else paths.RUN_DIR
        self._cond = threading.Condition(threading.RLock())
        self._records: list[Line] = []
        self._procs: dict[str, Proc] = {}  # latest run of each name
        self._all: list[Proc] = []  # every run, in start order
        self._width = MIN_WIDTH
        self._closing = False
        self._closed = False
        self._spawner = _Spawner()
        self._servers_started = 0  # pcbook servers: the first one tells about the dev JWT secret
        _register(self)

    # starting -------------------------------------------------------------------------------------

    def start(self, name: str, argv: Sequence[str | os.PathLike[str]], *,
              env: Mapping[str, str | None] | None = None, cwd: str | os.PathLike[str] | None = None) -> Proc:
        """Start a long-running child. `env` is merged over os.environ (a None value removes that
        variable); stdin is /dev/null."""
        with self._cond:
            if self._closing:
                raise RuntimeError("this Stack is closed; create a new one")
            old = self._procs.get(name)
            if old is not None and old.running:
                raise ValueError(f"{name} is already running (pid {old.pid}); stop it first")
            self._width = max(self._width, len(name))
        args = [os.fspath(a) for a in argv]
        if _is_pcbook_server(args):
            if self._servers_started:  # one notice of the development JWT secret per lesson is enough
                env = {DEV_SECRET_NOTED_ENV: "1", **(env or {})}
            self._servers_started += 1
        full_env = child_env(env)
        try:
            command = _command(args, full_env, cwd)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"cannot start {name}: {exc}") from None

        # A child inherits the CPU affinity of the thread that forks it, and the spawner thread keeps the
        # whole machine's: fork with the caller's, as if the caller had forked (the bench pins a caller
        # thread around start(); its pinning used to be lost here, "placement did not take").
        cpus = _affinity()

        def launch() -> Proc:  # runs on the spawner thread; registers before returning so close() sees it
            with on_cpus(cpus):
                popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True)
            proc = Proc(self, name, args, popen)
            with self._cond:
                self._procs.pop(name, None)
                self._procs[name] = proc
                self._all.append(proc)
            proc._reader = threading.Thread(target=self._read, args=(proc,), name=f"pcbook-{name}",
                                            daemon=True)
            proc._reader.start()
            return proc

        return self._spawner.call(launch)

    def run(self, name: str, argv: Sequence[str | os.PathLike[str]], *, timeout: float,
            env: Mapping[str, str | None] | None = None, cwd: str | os.PathLike[str] | None = None) -> Result:
        """Run a foreground child (a client) to completion; kill it after `timeout` seconds."""
        t0 = time.monotonic()
        proc = self.start(name, argv, env=env, cwd=cwd)
        timed_out = False
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._note(proc, f"[timed out after {timeout:g} s: killing it]")
            self._stop(proc, grace=1.0)
        except BaseException:  # Ctrl-C while the client runs: do not leave it behind
            self._stop(proc, grace=1.0)
            raise
        proc._finished.wait(_DRAIN)
        return Result(name, proc.argv, proc.poll(), proc.lines(), timed_out, time.monotonic() - t0)

    def follow(self, name: str, path: Path, *, source: str | None = None) -> None:
        """Stream a file's lines (a log) under `name`'s prefix until that process ends."""
        proc = self.proc(name)
        thread = threading.Thread(target=self._follow, args=(proc, Path(path), source or Path(path).name),
                                  name=f"pcbook-{name}-{Path(path).name}", daemon=True)
        proc._followers.append(thread)
        thread.start()

    # looking at output ----------------------------------------------------------------------------

    def records(self, name: str | None = None, *, since: int = 0) -> list[Line]:
        with self._cond:
            return [r for r in self._records[since:] if name is None or r.name == name]

    def lines(self, name: str | None = None, *, since: int = 0, prefixed: bool | None = None,
              notes: bool = False) -> list[str]:
        """Captured lines: one process's raw lines, or (name=None) everyone's, prefixed `name | line`.

        The runner's own notes (`[exited with code 1]`, timeouts) are left out unless notes=True.
        """
        if prefixed is None:
            prefixed = name is None
        recs = [r for r in self.records(name, since=since) if notes or r.source != "note"]
        return [self.format(r) if prefixed else r.text for r in recs]

    def mark(self) -> int:
        """A position in the captured lines; pass it to lines_since() to see one step's output."""
        with self._cond:
            return len(self._records)

    def lines_since(self, mark: int, name: str | None = None, **kwargs: Any) -> list[str]:
        return self.lines(name, since=mark, **kwargs)

    def format(self, record: Line) -> str:
        return f"{record.name:<{self._width}} | {record.text}"

    def wait_for_line(self, name: str | None, pattern: Pattern, timeout: float = 10, *,
                      since: int = 0) -> str:
        """Return the first line of `name` (None: anyone) from position `since` on that contains
        `pattern` (a str) or matches it (a compiled regex). Raises NotReadyError when the process
        ends without printing it, or at the deadline."""
        matches: Callable[[str], Any] = (pattern.search if isinstance(pattern, re.Pattern)
                                         else lambda text: pattern in text)
        shown = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        deadline = time.monotonic() + timeout
        pos = since
        ended: Proc | None = None
        with self._cond:
            while True:
                for rec in self._records[pos:]:
                    if (name is None or rec.name == name) and rec.source != "note" and matches(rec.text):
                        return rec.text
                pos = len(self._records)
                proc = self._procs.get(name) if name is not None else None
                if proc is not None and proc.done():
                    ended = proc
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        if ended is not None:  # raise outside the lock: building the message reads the records
            code = ended.poll()
            raise NotReadyError(f"{name} {describe_exit(code or 0)} without printing {shown!r}",
                                name=name, returncode=code, tail=ended.tail(15))
        proc = self._procs.get(name) if name is not None else None
        raise NotReadyError(f"{name or 'no process'} did not print {shown!r} within {timeout:g} s",
                            name=name, tail=proc.tail(15) if proc else ())

    def wait_for_output(self, timeout: float) -> bool:
        """Block until any process prints a new line (True) or `timeout` passes (False)."""
        with self._cond:
            seen = len(self._records)
            return self._cond.wait_for(lambda: len(self._records) > seen, timeout)

    def wait_forever(self) -> None:
        """Block until every child has ended, or until Ctrl-C (KeyboardInterrupt propagates)."""
        with self._cond:
            while any(not p.done() for p in self._all):
                self._cond.wait(0.5)  # a timeout keeps Ctrl-C responsive everywhere

    # readiness ------------------------------------------------------------------------------------

    def wait_ready(self, name: str, *, port: int | None = None, host: str = "127.0.0.1",
                   health: bool | str = False, credentials: grpc.ChannelCredentials | None = None,
                   options: Sequence[tuple[str, Any]] = (), service: str = "", timeout: float = 10) -> None:
        """Wait until `name` accepts connections on `port` and/or answers SERVING to a gRPC health
        check (health=True: at host:port; a string: that target). Fails fast if it exits meanwhile."""
        proc = self.proc(name)
        if port is None and not health:
            raise ValueError("wait_ready needs port= and/or health=")
        deadline = time.monotonic() + timeout
        if port is not None:
            wait_port(host, port, timeout, proc=proc)
        if health:
            address = health if isinstance(health, str) else f"{host}:{port}"
            wait_grpc_health(address, credentials=credentials, options=options, service=service,
                             timeout=max(0.1, deadline - time.monotonic()), proc=proc)
        check_alive(proc, "it was ready")

    # stopping -------------------------------------------------------------------------------------

    def proc(self, name: str) -> Proc:
        try:
            return self._procs[name]
        except KeyError:
            raise KeyError(f"no process named {name!r} in this stack (known: {', '.join(self._procs)})") \
                from None

    __getitem__ = proc

    def __contains__(self, name: object) -> bool:
        return name in self._procs

    @property
    def names(self) -> list[str]:
        return list(self._procs)

    def stop(self, name: str, timeout: float = STOP_GRACE) -> int | None:
        """SIGTERM its process group, SIGKILL after `timeout` s; returns the exit code."""
        return self._stop(self.proc(name), grace=timeout)

    def stop_together(self, names: Sequence[str], timeout: float = STOP_GRACE) -> None:
        """Stop several at once: SIGTERM every one's process group, then wait for each (SIGKILL whoever still
        runs `timeout` s after the SIGTERM). Servers that drain for a second each drain side by side."""
        procs = [self.proc(name) for name in names]
        for proc in procs:
            if proc.running:
                _killpg(proc, _signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:  # whoever was running got its SIGTERM above; a process never runs again
            self._stop(proc, grace=max(0.0, deadline - time.monotonic()), signalled=True)

    def kill(self, name: str) -> int | None:
        """SIGKILL its process group at once (a crash on purpose); returns the exit code."""
        proc = self.proc(name)
        _killpg(proc, _signal.SIGKILL)
        return self._reap(proc, 5.0)

    def signal(self, name: str, sig: int, *, group: bool = False) -> None:
        """Send `sig` to the process (group=True: to its whole process group)."""
        proc = self.proc(name)
        if group:
            _killpg(proc, sig)
        elif proc.running:
            os.kill(proc.pid, sig)

    def note(self, text: str, name: str = "runner") -> None:
        """Echo and record a line of the runner's own (a step title, a verdict)."""
        with self._cond:
            self._width = max(self._width, len(name))
        self._add(Line(time.time(), name, text, "note"))

    def close(self) -> None:
        """Stop every child in reverse start order, join the reader threads. Idempotent."""
        if self._closed:
            return
        with self._cond:
            self._closing = True  # no new starts from here on
        for proc in reversed(list(self._all)):
            self._stop(proc, grace=STOP_GRACE)
        self._spawner.close()  # also lets a start() that raced with close() finish registering
        for proc in reversed(list(self._all)):
            self._stop(proc, grace=STOP_GRACE)
            if proc._reader is not None:
                proc._reader.join(_DRAIN)
        self._closed = True
        _unregister(self)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals ------------------------------------------------------------------------------------

    def _stop(self, proc: Proc, grace: float, *, signalled: bool = False) -> int | None:
        if proc.done():
            return proc.poll()
        if proc.running:
            if not signalled:
                _killpg(proc, _signal.SIGTERM)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._note(proc, f"[still running {grace:g} s after SIGTERM: sending SIGKILL]")
        # SIGKILL the group even when the leader is gone: e.g. nginx workers of a killed master.
        _killpg(proc, _signal.SIGKILL)
        return self._reap(proc, 5.0)

    def _reap(self, proc: Proc, timeout: float) -> int | None:
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        proc._finished.wait(_DRAIN)
        return proc.poll()

    def _add(self, rec: Line) -> None:
        with self._cond:
            self._records.append(rec)
            if self.echo is not None:
                try:
                    self.echo(self.format(rec))
                except Exception:  # a broken echo must not kill the reader (and block the child)
                    pass
            self._cond.notify_all()

    def _note(self, proc: Proc, text: str) -> None:
        self._add(Line(time.time(), proc.name, text, "note", proc.pid))

    def _read(self, proc: Proc) -> None:
        stream = proc.popen.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            self._add(Line(time.time(), proc.name, raw.decode("utf-8", "replace").rstrip("\r\n"),
                           "out", proc.pid))
        stream.close()
        proc._eof.set()
        for follower in list(proc._followers):
            follower.join(_DRAIN)
        try:
            code: int | None = proc.popen.wait(_DRAIN)  # EOF almost always means it exited
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            self._note(proc, f"[{describe_exit(code).removeprefix('was ')}]")
        proc._finished.set()
        with self._cond:
            self._cond.notify_all()

    def _follow(self, proc: Proc, path: Path, source: str) -> None:
        pos, pending = 0, b""

        def drain(final: bool) -> None:
            nonlocal pos, pending
            try:
                with path.open("rb") as f:
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                return
            pos += len(data)
            *complete, pending = (pending + data).split(b"\n")
            if final and pending:
                complete.append(pending)
                pending = b""
            for raw in complete:
                self._add(Line(time.time(), proc.name, raw.decode("utf-8", "replace").rstrip("\r"),
                               source, proc.pid))

        while not proc._eof.wait(0.05):  # polling a file is the portable way to tail it
            drain(final=False)
        drain(final=True)


def _is_pcbook_server(args: Sequence[str]) -> bool:
    return any(a == "-m" and b in ("pcbook.server", "pcbook.service.server") for a, b in itertools.pairwise(args))


def child_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """os.environ with `env` applied (None values remove a variable) and unbuffered Python output."""
    merged = {**os.environ, **(env or {})}
    merged["PYTHONUNBUFFERED"] = "1"  # children's lines must reach us as they are printed
    return {k: v for k, v in merged.items() if v is not None}


def _killpg(proc: Proc, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


# --- registry of live stacks, atexit and SIGTERM ---------------------------------------------------

_live: list[Stack] = []
_registry_lock = threading.RLock()  # re-entrant: the SIGTERM handler may run while it is held
_atexit_done = False
_sigterm_done = False


def live_stacks() -> list[Stack]:
    """The Stacks of this interpreter that are not closed yet, oldest first."""
    with _registry_lock:
        return list(_live)


def _register(stack: Stack) -> None:
    global _atexit_done, _sigterm_done
    with _registry_lock:
        _live.append(stack)
        if not _atexit_done:
            atexit.register(close_all)
            _atexit_done = True
        # Only the main thread may set handlers; leave a handler someone else installed alone.
        if (not _sigterm_done and threading.current_thread() is threading.main_thread()
                and _signal.getsignal(_signal.SIGTERM) is _signal.SIG_DFL):
            _signal.signal(_signal.SIGTERM, _on_sigterm)
            _sigterm_done = True


def _unregister(stack: Stack) -> None:
    with _registry_lock:
        if stack in _live:
            _live.remove(stack)


def _on_sigterm(signum: int, frame: object) -> None:
    close_all()
    raise SystemExit(128 + signum)


def close_all() -> None:
    """Close every live Stack of this interpreter, newest first."""
    for stack in reversed(live_stacks()):
        stack.close()
