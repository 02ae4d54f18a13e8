"""A command typed into a terminal, for the tests that follow the docs' by-hand instructions."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time

from pcbook.paths import ROOT


class Shell:
    """A command typed into a terminal: bash in the checkout, its own process group, lines collected."""

    def __init__(self, command: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCBOOK_JWT_")}
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=dict(env, PYTHONUNBUFFERED="1"),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; seen:\n" + "\n".join(self.seen))

    def rest(self, timeout: float = 30) -> list[str]:
        """Every line until the output ends (the command has exited)."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                return self.seen
            self.seen.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: make and the server
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
