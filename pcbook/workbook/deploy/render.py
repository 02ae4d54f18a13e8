"""A lesson's container plan (its checkpoint step's servers, nginx config and client, and lesson 13's Envoy
twin) and the one rendering step: configs whose backends are on loopback ports, rewritten to the names
the containers reach those backends by."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pcbook.stage.model import Client, Envoy, Step
from pcbook.workbook import manifest as lessons

LESSON_ENV = "PCBOOK_LESSON"
DEFAULT_LESSON = 5
NGINX_SERVICE = "nginx"  # the compose service of nginx; the client dials it
ENVOY_SERVICE = "envoy"  # the compose service of Envoy (lesson 13's twin of the lesson); client-envoy dials it
ENVOY_CLIENT = "client-envoy"
_LOOPBACK_HOSTS = ("0.0.0.0", "127.0.0.1", "localhost")


class ContainerError(Exception):
    """A lesson, role or config that the container stack cannot run; the message says why."""


@dataclass(frozen=True)
class Plan:
    """What the containers of one lesson run: its checkpoint step's servers, nginx config and client."""

    lesson: lessons.Lesson
    step: lessons.Step
    conf: Path

    @property
    def nginx_port(self) -> int:
        assert self.step.nginx is not None  # plan() keeps only steps with nginx
        return self.step.nginx.port

    @property
    def client(self) -> Client:
        assert isinstance(self.step.client, Client)  # plan() keeps only steps of the tutorial's client
        return self.step.client

    @property
    def servers(self) -> tuple[lessons.Server, ...]:
        return self.step.servers

    def server(self, name: str) -> lessons.Server:
        for s in self.servers:
            if s.name == name:
                return s
        raise ContainerError(f"lesson {self.lesson.number} has no server {name!r}"
                             f" (roles: {', '.join(self.roles())})")

    @property
    def envoy_step(self) -> Step | None:
        """Lesson 13's step that runs this lesson on Envoy, if it has one."""
        from pcbook.lessons.l13_envoy import ON_ENVOY

        key = ON_ENVOY.get(self.lesson.number)
        return lessons.get(13).step(key) if key else None

    @property
    def envoy(self) -> Envoy | None:
        """The Envoy of that step (its config, port and admin port), if the lesson has one."""
        step = self.envoy_step
        return step.envoy if step is not None else None

    def roles(self) -> list[str]:
        envoy = [ENVOY_SERVICE, ENVOY_CLIENT] if self.envoy else []
        return [s.name for s in self.servers] + [NGINX_SERVICE, "client", *envoy]

    def client_args(self, host: str = NGINX_SERVICE, port: int | None = None) -> list[str]:
        """The lesson's client flags, dialling `host` (and `port`) instead of the lecture's 0.0.0.0."""
        args = self.client.args()
        i = args.index("--address") + 1
        _, lesson_port = _split_address(args[i])
        args[i] = f"{host}:{port or lesson_port}"
        return args

    def envoy_names(self) -> dict[int, str]:
        """Lesson 13's server ports -> the compose address of the server of the same name."""
        step = self.envoy_step
        assert step is not None
        return {s.port: f"{s.name}:{self.server(s.name).port}" for s in step.servers}


def plan(number: int) -> Plan:
    """The container plan of lesson `number`; ContainerError for a lesson without one."""
    try:
        lesson = lessons.get(number)
    except (KeyError, ValueError, LookupError):
        raise ContainerError(f"there is no lesson {number}") from None
    # The lecture's own setup: lessons beyond the tutorial run stacks (an L4 port, load drivers) that
    # the compose file does not model.
    steps = [s for s in lesson.checkpoint_steps if _runs_in_containers(s)] if lesson.tutorial else []
    if not steps:
        usable = ", ".join(str(n) for n in usable_lessons())
        raise ContainerError(f"lesson {number} has no nginx-and-servers checkpoint to run in containers"
                             f" (lessons {usable} have)")
    step = steps[-1]
    return Plan(lesson, step, step.nginx.path)


def _runs_in_containers(step: Step) -> bool:
    """A step of the tutorial's kind: nginx in front of two or more servers, the tutorial's client."""
    # The refusal steps (a client without or with a foreign certificate) show nginx saying no; the
    # container stack replays the lesson's working call.
    return (step.nginx is not None and len(step.servers) >= 2 and isinstance(step.client, Client)
            and step.client.cert == "ours")


def usable_lessons() -> list[int]:
    found = []
    for lesson in lessons.LESSONS:
        if lesson.tutorial and any(_runs_in_containers(s) for s in lesson.checkpoint_steps):
            found.append(lesson.number)
    return found


def lesson_from_env() -> int:
    raw = os.environ.get(LESSON_ENV, "").strip() or str(DEFAULT_LESSON)
    try:
        return int(raw)
    except ValueError:
        raise ContainerError(f"{LESSON_ENV}={raw} is not a lesson number (try {LESSON_ENV}=5)") from None


# --- the one rendering step ----------------------------------------------------------------------

def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ContainerError(f"{address!r} is not a host:port address")
    return host, int(port)


def render_upstreams(text: str, names: Mapping[int, str], *, source: str = "the config") -> str:
    """Replace the host of each upstream `server 0.0.0.0:PORT ...;` by ``names[PORT]``.

    `names` maps a lesson port to ``host:port`` as the containers reach it. A server line that maps
    to an address already listed in the same upstream becomes a comment (on the same line, so nginx's
    line numbers still match the file): in Kubernetes both lesson backends are one pool of pods.
    """
    edits: list[tuple[int, int, str]] = []
    seen: dict[int, set[str]] = {}
    from pcbook.stack import nginx

    for s in nginx._statements(text):  # the nginx runner's parser: quotes, comments and blocks
        if len(s.words) < 2 or s.words[0] != "server" or not s.parents or s.parents[-1] != "upstream":
            continue
        host, port = _split_address(s.words[1])
        if host not in _LOOPBACK_HOSTS:
            continue  # already a name: leave it as the learner wrote it
        if port not in names:
            known = ", ".join(str(p) for p in sorted(names))
            raise ContainerError(f"{source}: upstream server {s.words[1]} is on no lesson server's port ({known})")
        target = names[port]
        original = text[s.start:s.end]
        block = seen.setdefault(s.block_id, set())
        if target in block:
            edits.append((s.start, s.end, f"# {original.replace(s.words[1], target, 1)} (same pool as above)"))
        else:
            block.add(target)
            edits.append((s.start, s.end, original.replace(s.words[1], target, 1)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def compose_names(p: Plan) -> dict[int, str]:
    """Lesson port -> compose address: server1's port -> server1:50051 (the service keeps the port)."""
    return {s.port: f"{s.name}:{s.port}" for s in p.servers}


_ENDPOINT = re.compile(r"socket_address: \{address: (127\.0\.0\.1|0\.0\.0\.0), port_value: (\d+)\}")


def render_envoy(text: str, names: Mapping[int, str], *, source: str = "the config") -> str:
    """Lesson 13's Envoy config with each endpoint `{address: 127.0.0.1, port_value: PORT}` of a lesson server
    on its container name, and its clusters resolving those names (STRICT_DNS: a STATIC cluster takes IPs
    only). The listeners (0.0.0.0) are left as they are. An endpoint line that maps to an address already
    listed in the same cluster becomes a comment, as in `render_upstreams` (Kubernetes: one pool of pods)."""
    lines, seen, changed = [], set(), False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("cluster_name:"):
            seen = set()  # a new cluster's endpoints
        m = _ENDPOINT.search(line)
        if m is None or int(m.group(2)) not in names:  # a listener, or an address of no lesson server
            lines.append(line)
            continue
        host, port = _split_address(names[int(m.group(2))])
        new = line[:m.start()] + f"socket_address: {{address: {host}, port_value: {port}}}" + line[m.end():]
        if (host, port) in seen:
            indent = new[:len(new) - len(new.lstrip())]
            new = f"{indent}# {new.strip()} (same pool as above)\n"
        seen.add((host, port))
        lines.append(new)
        changed = True
    if not changed:
        raise ContainerError(f"{source}: no endpoint is on a lesson server's port ({', '.join(map(str, names))})")
    return re.sub(r"(?m)^(\s*)type: STATIC$", r"\1type: STRICT_DNS", "".join(lines))
