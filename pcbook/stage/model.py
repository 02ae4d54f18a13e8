"""The lesson model: the types every lesson is declared with (each lesson in its module of pcbook/lessons/).

A lesson is an ordered list of steps. A step is a state of the stack (which servers run with which
flags, which nginx config, which client or load driver, the registry and control plane of lessons
11-12: the process specs of pcbook.stack.specs) and how it is judged: declaratively by an `Expect`
(what the tutorial's client and the logs must show), or by an `act` + `judge` pair of plain functions
of the lesson's module: `act(ctx)` drives the step through its StepContext (pcbook.stage.context) and
returns what it measured (a pcbook.stage.results type), `judge(result)` returns what differs from the
lesson's story (empty: the step passed). The stage and the runner own everything else.

Every field is given by keyword; a step's `key` is its stable name (tests, notebooks and docs refer to
it), its `title` is prose.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcbook.paths import ROOT
from pcbook.stack.specs import (
    NGINX_PORT,
    TUTORIAL_PORTS,
    Client,
    ClientKind,
    ControlPlane,
    Driver,
    Envoy,
    Nginx,
    Probe,
    Registry,
    RegistrySync,
    Server,
)

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

__all__ = ["DOCS_URL", "NGINX_PORT", "TUTORIAL_PORTS", "Client", "ClientKind", "ControlPlane", "Driver", "Envoy",
           "Exercise", "Expect", "Lesson", "Nginx", "Probe", "Registry", "RegistrySync", "Server", "Step", "Text"]

# Where `make docs` (mkdocs serve) shows the site; notebooks link their page there.
DOCS_URL = "http://127.0.0.1:8000/"
_KEY = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

Act = Callable[["StepContext"], Any]
Judge = Callable[[Any], list[str]]


@dataclass(frozen=True)
class Text:
    """A regex the evidence must match, and the same claim in plain words (for people)."""

    regex: str
    words: str


@dataclass(frozen=True)
class Expect:
    """What a step of the tutorial's client must show. Every field left at its default is not checked."""

    ok: bool = True  # the client exits 0; False: it must fail
    client_says: Text | None = None  # the client's output must match
    nginx_error: Text | None = None  # a line of nginx's error log must match
    server_says: Text | None = None  # a line of some server's output must match
    # Every server listed got at least one call (round robin reached them all).
    spread: tuple[str, ...] = ()
    # method -> the only servers allowed to serve it (and at least one of them must).
    routes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    access_posts: int | None = None  # at least this many POST lines in nginx's access log
    no_calls: bool = False  # no server logged any call: nginx refused it before any backend saw it

    def describe(self) -> list[str]:
        """Plain-English claims, for the docs and the runner's output."""
        claims = ["the client succeeds" if self.ok else "the client fails"]
        if self.client_says:
            claims.append(f"the client prints {self.client_says.words}")
        if self.nginx_error:
            claims.append(f"nginx's error log shows {self.nginx_error.words}")
        if self.server_says:
            claims.append(f"a server logs {self.server_says.words}")
        if self.spread:
            claims.append("calls reach " + " and ".join(self.spread))
        for method, servers in self.routes.items():
            claims.append(f"{method} is served only by {' or '.join(servers)}")
        if self.access_posts:
            claims.append(f"nginx's access log shows {self.access_posts} POST lines")
        if self.no_calls:
            claims.append("no call reaches a server")
        return claims


@dataclass(frozen=True, kw_only=True)
class Step:
    """One state of the stack and what it must show.

    Judged by `expect` (the tutorial's client, run `client.runs` times), or by `act` + `judge`.
    Servers not listed are stopped; nginx is started afresh for every step that names one (as in
    the tutorial, which also clears nginx's memory of failed backends).
    """

    key: str  # stable, lowercase-with-dashes: what tests, notebooks and docs name the step by
    title: str
    why: str  # one or two sentences: the cause of what the learner sees
    servers: tuple[Server, ...] = ()
    # Servers of the step that its act starts at its moment (a server that joins): declared here so
    # that their ports are the lesson's and their command lines are the specs'.
    standby: tuple[Server, ...] = ()
    nginx: Nginx | None = None
    envoy: Envoy | None = None  # lesson 13: Envoy, started afresh for every step that names one, like nginx
    sync: RegistrySync | None = None  # nginx's upstream rendered from the registry (lesson 11)
    registry: Registry | None = None  # lessons 11-12: etcd, empty at the step's start
    control_plane: ControlPlane | None = None  # lesson 12: the xDS control plane fed from that registry
    client: ClientKind | None = None
    expect: Expect | None = None
    act: Act | None = None
    judge: Judge | None = None
    checkpoint: bool = False
    then: tuple[str, ...] = ()  # what happens while the client runs (a kill, a signal), announced
    claims: tuple[str, ...] = ()  # what an act/judge step must show, in plain words
    quiet: bool = False  # the servers' and nginx's lines are captured, not shown (a measurement)

    def must_show(self) -> list[str]:
        return self.expect.describe() if self.expect is not None else list(self.claims)

    @property
    def config_file(self) -> Path | None:
        """What a learner's CONF= may stand in for: the config of the step's proxy (nginx's, else Envoy's),
        else the load driver's service config file, else the file of knobs the act writes to the registry."""
        spec = self.nginx or self.envoy
        if spec is not None:
            return spec.path
        if isinstance(self.client, Driver) and self.client.service_config is not None:
            return self.client.service_config_path
        return self.registry.knobs_path if self.registry is not None else None

    def client_for(self, conf: Path | None) -> ClientKind | None:
        """The step's client with `conf` (config_file, or a learner's file in its place) as its service config
        when the file is the driver's: what the step runs and announces."""
        if conf is None or self.nginx or self.envoy or not isinstance(self.client, Driver) \
                or self.client.service_config is None:
            return self.client
        return replace(self.client, service_config=str(Path(conf).resolve()))

    def server(self, name: str) -> Server:
        """The step's server (running or standby) called `name`."""
        for server in (*self.servers, *self.standby):
            if server.name == name:
                return server
        raise KeyError(f"step {self.key!r} declares no server {name!r}")

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"step key {self.key!r}: lowercase words joined by dashes")
        if (self.expect is None) == (self.judge is None):
            raise ValueError(f"step {self.key!r}: give either expect or judge (with act)")
        if self.expect is not None and not isinstance(self.client, Client):
            raise ValueError(f"step {self.key!r}: an Expect judges the tutorial's client; give client=Client()")
        if self.judge is not None and self.act is None:
            raise ValueError(f"step {self.key!r}: a judge needs an act that measures what it judges")
        if (self.control_plane is not None or self.sync is not None) and self.registry is None:
            raise ValueError(f"step {self.key!r}: a control plane or nginx_sync needs a registry to read from")
        if self.sync is not None and self.nginx is None:
            raise ValueError(f"step {self.key!r}: nginx_sync needs the nginx whose upstream it renders")
        if any(s.register for s in (*self.servers, *self.standby)) and self.registry is None:
            raise ValueError(f"step {self.key!r}: a server that registers needs the step's registry")


# What an exercise's file is: how the checkpoint uses it (CONF= replaces the config of the exercise's
# steps: nginx's, Envoy's in lesson 13, the load driver's service config in lesson 7, the knobs lesson 12's
# act writes to etcd).
EXERCISE_KINDS = ("nginx config", "envoy config", "service config", "registry knobs")


@dataclass(frozen=True, kw_only=True)
class Exercise:
    """A lesson's exercise: a starter with TODOs the learner fills until `make check-N CONF=starter` passes.

    `answer` is the lesson's own config of those steps (the story's tests pass it); `steps` are the keys
    of the checkpoint steps whose config the learner's file replaces; `hints` go from a nudge to the
    exact directive, with a link to its documentation (`make hint-N` shows them one at a time).
    """

    kind: str
    starter: str  # relative to the checkout: nginx/exercises/lesson-N.conf
    answer: str  # relative to the checkout: nginx/lesson-N.conf
    steps: tuple[str, ...]
    hints: tuple[str, ...]

    @property
    def path(self) -> Path:
        return ROOT / self.starter

    @property
    def answer_path(self) -> Path:
        return ROOT / self.answer

    def __post_init__(self) -> None:
        if self.kind not in EXERCISE_KINDS:
            raise ValueError(f"exercise {self.starter}: kind {self.kind!r} is not one of {EXERCISE_KINDS}")
        if not 2 <= len(self.hints) <= 3:
            raise ValueError(f"exercise {self.starter}: give 2 or 3 hints, not {len(self.hints)}")
        if not self.steps:
            raise ValueError(f"exercise {self.starter}: name the checkpoint steps its file stands in for")


@dataclass(frozen=True, kw_only=True)
class Lesson:
    number: int
    slug: str
    title: str
    goal: str
    steps: tuple[Step, ...]
    tutorial: bool = True  # False: beyond the tutorial (lessons 7-10)
    # Lines of the servers' output not echoed (still captured): e.g. lesson 9's two lines per 1 KiB chunk.
    hide: tuple[str, ...] = ()
    exercise: Exercise | None = None

    @property
    def target(self) -> str:
        return f"lesson-{self.number}"

    @property
    def doc_page(self) -> str:
        """Path of the lesson's page inside docs/."""
        return f"lessons/{self.number:02d}-{self.slug}.md"

    @property
    def doc_url(self) -> str:
        return f"{DOCS_URL}lessons/{self.number:02d}-{self.slug}/"

    @property
    def notebook(self) -> str:
        return f"lessons/{self.number:02d}-{self.slug}.ipynb"

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(f"lesson {self.number} has no step {key!r}")

    def number_of(self, key: str) -> int:
        """The step's number in the lesson's story (1-based), as the runner and the notebook show it."""
        return self.steps.index(self.step(key)) + 1

    def __post_init__(self) -> None:
        keys = [s.key for s in self.steps]
        if len(set(keys)) != len(keys):
            raise ValueError(f"lesson {self.number}: two steps share a key: {keys}")

    @property
    def checkpoint_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.checkpoint)

    @property
    def nginx_configs(self) -> list[Path]:
        """The lesson's own configs in story order, without repeats."""
        return list(dict.fromkeys(s.nginx.path for s in self.steps if s.nginx))

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port the lesson's processes listen on, sorted."""
        found = {srv.port for s in self.steps for srv in (*s.servers, *s.standby)}
        found |= {p for s in self.steps if s.nginx for p in s.nginx.ports}
        found |= {p for s in self.steps if s.envoy for p in s.envoy.ports}
        return tuple(sorted(found))

    def exercise_problems(self) -> list[str]:
        """What does not hold between the exercise and the steps it names (empty: all is well): each a
        checkpoint step with a config file, all on one, which is the exercise's answer."""
        if self.exercise is None:
            return []
        problems = []
        keys = {s.key: s for s in self.steps}
        for key in self.exercise.steps:
            step = keys.get(key)
            if step is None or not step.checkpoint or step.config_file is None:
                problems.append(f"lesson {self.number}: exercise step {key!r} is not a checkpoint step with a "
                                f"{self.exercise.kind}")
            elif step.config_file != self.exercise.answer_path:
                problems.append(f"lesson {self.number}: step {key!r} runs {step.config_file.name}, not the "
                                f"exercise's answer {self.exercise.answer}")
        return problems

    def conf_replaces(self, step: Step) -> bool:
        """Whether a learner's `CONF=` stands in for this step's config: the exercise's steps, or (a
        lesson without an exercise) every checkpoint step on the config the checkpoint ends with."""
        if self.exercise is not None:
            return step.key in self.exercise.steps
        return step.checkpoint and step.nginx is not None and step.nginx.path == self.checkpoint_config

    @property
    def checkpoint_config(self) -> Path | None:
        """The config a learner's `CONF=` replaces: the exercise's answer (nginx's or Envoy's), else the nginx
        config the checkpoint steps end with. None: no CONF (`make check-N` takes none)."""
        if self.exercise is not None:
            return self.exercise.answer_path
        confs = [s.nginx.path for s in self.checkpoint_steps if s.nginx]
        return confs[-1] if confs else None

    @property
    def checkpoint_nginx_config(self) -> Path | None:
        """checkpoint_config when it is nginx's (the config `make nginx-N CONF=` and the mutants of nginx
        directives are about)."""
        conf = self.checkpoint_config
        return conf if conf is not None and any(s.nginx and s.nginx.path == conf for s in self.steps) else None

    @property
    def nginx_step(self) -> Step | None:
        """The step whose stack `make nginx-N` puts up: the last checkpoint step with nginx, else
        the last step with nginx."""
        with_nginx = [s for s in self.checkpoint_steps if s.nginx] or [s for s in self.steps if s.nginx]
        return with_nginx[-1] if with_nginx else None
