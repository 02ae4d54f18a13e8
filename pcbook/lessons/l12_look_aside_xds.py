"""Lesson 12: look-aside balancing with xDS. A small control plane (pcbook.discovery.xds) reads the
registry and tells grpc's own xDS client which servers to use, with weights and draining.

Each step declares its registry, its two first servers and its ControlPlane (the flags it runs with);
the stage starts the control plane once the servers have registered, and keeps servers, registry and
control plane from one step to the next when they are the same (the registry emptied of what the step
before wrote). The acts: lesson 11's story through `xds:///pcbook`, a weight or a drain written to
etcd and the share of the calls after the client ACKed it, and the control plane killed and restarted.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pcbook.discovery.xds import KnobFileError, knobs_from_file
from pcbook.lessons.l11_service_discovery import (
    calls_of,
    discovered,
    judge_story,
    registered,
    say_story,
    spread,
)
from pcbook.measure import driver as load
from pcbook.paths import shown
from pcbook.service.logs import RECEIVED_TEXT
from pcbook.service.registry import RegistryError
from pcbook.stack.procs import NotReadyError
from pcbook.stack.specs import Driver
from pcbook.stage.model import ControlPlane, Exercise, Lesson, Registry, Step
from pcbook.stage.results import Counts, Discovered
from pcbook.stage.stage import XDS, Stage, per_server
from pcbook.stage.story import stories

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

WEIGHT = 3  # server1's weight in the weight step
WEIGHT_BAND = (0.65, 0.85)  # server1's share under 3:1 locality weights (N = 200: about +-3 sigma)
EVEN_BAND = (0.4, 0.6)  # its share when the weights are on the endpoints (round robin ignores them)
MEASURED = 200
TARGET = "xds:///pcbook"
S1, S2, S3 = registered(50120)


def _xds_driver(rate: float) -> Driver:
    return Driver(address=TARGET, calls=100_000, rate=rate, concurrency=2)


def eds_version(stage: Stage) -> int:
    """The version of the endpoints the control plane last announced (`endpoints vN: ...`), 0: none yet."""
    found = [int(m.group(1)) for rec in stage.stack.records(XDS) if (m := re.search(r" endpoints v(\d+): ", rec.text))]
    return found[-1] if found else 0


def share_after(ctx: StepContext, change: Callable[[], bool], calls: int = MEASURED
                ) -> tuple[dict[str, float], float, load.Report]:
    """Apply `change` (etcd writes; False: it wrote nothing), wait for the client's ACK of the next EDS version,
    then send `calls` calls; returns each server's share of them, the change-to-ACK time and the report."""
    stage = ctx.stage
    run = ctx.start_driver(_xds_driver(100))
    run.wait_done(10)
    ack_version = f"v{eds_version(stage) + 1}"
    mark = stage.stack.mark()
    changed = time.time()
    wrote = change()
    acked = None
    if wrote:
        try:
            acked = stage.wait_line(XDS, f"ACK EDS {ack_version} ", 10, since=mark)
        except NotReadyError:  # the write changed nothing the control plane sends
            pass
    if acked is None:
        acked = time.time()
        ctx.say("the control plane pushed no new endpoints after the write: measuring with those it had")
    else:
        ctx.say(f"the change reached the client (its ACK) {acked - changed:.3f} s after the write to etcd")
    run.wait_more(calls + 10)
    report = run.finish()
    counts = per_server(report, stage.receivers(report), acked + 0.05)
    total = sum(counts.values()) or 1
    return {name: n / total for name, n in counts.items()}, acked - changed, report


# -- the acts -----------------------------------------------------------------------------------------

def xds_story(ctx: StepContext) -> Discovered:
    story = stories(ctx.stage, {"client": TARGET}, ctx.step.standby[0])["client"]
    acks = sum("ACK EDS " in line for line in ctx.lines(XDS))
    result = discovered("xDS", story, notes={"EDS ACKs": acks})
    say_story(ctx, result)
    ctx.say(f"the client ACKed {acks} endpoint lists (EDS)")
    return result


def _weighted(ctx: StepContext, knobs: list[tuple[str, str]], knob: str) -> Discovered:
    def write() -> bool:
        for key, value in knobs:
            ctx.registry.put(key, value)
        return bool(knobs)

    share, acked, report = share_after(ctx, write)
    receivers = ctx.stage.receivers(report)
    counts = {name: round(share.get(name, 0.0) * MEASURED) for name in ("server1", "server2")}
    ctx.say("share of the measured calls: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(share.items())))
    return Discovered("xDS", calls_of(report, receivers, {}), {"after the change": Counts(counts)},
                      failed={knob: len(report.failed())}, share=share, notes={"change to ACK": acked})


def weights(ctx: StepContext) -> Discovered:
    """The knobs of the step's file (lessons/registry/lesson-12-weights.txt: weight/server1 = 3, or a learner's)
    written to etcd; where the control plane puts a weight (a locality's or the endpoint's) is the step's
    ControlPlane declaration."""
    assert ctx.conf is not None  # the step's Registry declares its knobs file
    try:
        knobs = knobs_from_file(ctx.conf.read_text(), ctx.step.registry.prefix, shown(ctx.conf))
    except (OSError, UnicodeDecodeError) as err:
        raise RegistryError(f"cannot read {shown(ctx.conf)}: {getattr(err, 'strerror', None) or err}") from None
    except KnobFileError as err:
        raise RegistryError(str(err)) from None
    ctx.say("written to etcd: " + (", ".join(f"{k} = {v}" for k, v in knobs) or f"nothing ({shown(ctx.conf)} "
                                                                                   "sets no knob)"))
    return _weighted(ctx, knobs, "weight")


def drain(ctx: StepContext) -> Discovered:
    return _weighted(ctx, [("/pcbook-lb/drain/server2", "1")], "drain")


@dataclass
class Restart:
    """The control plane SIGKILLed and started again while a client keeps calling."""

    down_s: float
    failed: int
    reached_new_server_while_down: bool
    restart_to_first_call: float  # s from the restart to the first call of the server registered meanwhile
    spread_while_down: bool
    report: load.Report
    events: dict[str, float]


def restart(ctx: StepContext) -> Discovered:
    stage = ctx.stage
    run = ctx.start_driver(_xds_driver(50))
    run.wait_done(20)
    killed = ctx.kill(XDS)
    run.wait_more(60)  # the client goes on with the endpoints it had
    registered_at = ctx.start_server("server3")  # unknown to the clients while no control plane runs
    run.wait_more(60)
    reached = math.isfinite(stage.first_call("server3", registered_at))
    mark = stage.stack.mark()
    restarted = time.time()
    ctx.start_control_plane()
    stage.wait_line(XDS, "ACK EDS", 30, since=mark)  # the client reconnected (with backoff) and resynced
    first = stage.wait_line("server3", RECEIVED_TEXT, 15, since=mark)
    run.wait_more(30)
    report = run.finish()
    receivers = stage.receivers(report)
    r = Restart(restarted - killed, len(report.failed()), reached, first - restarted,
                spread(per_server(report, receivers, killed, registered_at), {"server1", "server2"}), report,
                {"control plane SIGKILL": killed, "server3 registered": registered_at,
                 "control plane restarted": restarted})
    ctx.say(f"control plane down {r.down_s:.2f} s: {r.failed} failed calls; server3 (registered meanwhile) got "
            f"its first call {r.restart_to_first_call:.2f} s after the restart")
    calls = calls_of(r.report, receivers, r.events)
    return Discovered("xDS", calls, {"all": calls.counts()}, failed={"control plane down": r.failed},
                      notes={"down": r.down_s, "restart to first call": r.restart_to_first_call,
                             "reached server3 while down": float(r.reached_new_server_while_down),
                             "spread while down": float(r.spread_while_down)})


# -- the judges ---------------------------------------------------------------------------------------

def judge_weights(result: Discovered) -> list[str]:
    low, high = WEIGHT_BAND
    got = result.share.get("server1", 0.0)
    diffs = [] if low <= got <= high else [f"server1 got {got:.2f} of the calls under weight {WEIGHT}:1, not "
                                           f"{low}-{high}: the weights did not reach the client"]
    return diffs + [f"{n} calls failed" for n in result.failed.values() if n]


def judge_endpoint_weights(result: Discovered) -> list[str]:
    low, high = EVEN_BAND
    got = result.share.get("server1", 0.0)
    return [] if low <= got <= high else [f"server1 got {got:.2f} with endpoint weights: not the even split of "
                                          "round robin"]


def judge_drain(result: Discovered) -> list[str]:
    diffs = [f"{n} calls failed while server2 drained" for n in result.failed.values() if n]
    if result.share != {"server1": 1.0}:
        diffs.append(f"server2 still got calls after the control plane marked it DRAINING: {result.share}")
    return diffs


def judge_restart(result: Discovered) -> list[str]:
    diffs = [f"{n} calls failed while the control plane was down" for n in result.failed.values() if n]
    if not result.notes.get("spread while down"):
        diffs.append("without a control plane the client did not keep calling both servers")
    if result.notes.get("reached server3 while down"):
        diffs.append("server3 got calls while no control plane could have told the client about it")
    if not math.isfinite(result.notes.get("restart to first call", math.inf)):
        diffs.append("after the restart the client never reached server3: it did not resync")
    return diffs


# -- the lesson ---------------------------------------------------------------------------------------

_THEN = ("server3 starts and registers", "server1 gets SIGTERM", "server2 gets SIGKILL")
KNOBS = "lessons/registry/lesson-12-weights.txt"  # weight/server1 = WEIGHT: the exercise's answer

EXERCISE = Exercise(
    kind="registry knobs",
    starter="lessons/exercises/lesson-12.txt",
    answer=KNOBS,
    steps=("weights",),
    hints=(
        "No config file changes: the control plane reads the operator's knobs from etcd, under the registry's "
        "prefix followed by -lb, and pushes new endpoints on each change.",
        "A server's weight is the key /pcbook-lb/weight/<server>, a number from 1 to 1000 (default 1). Each "
        "server is its own locality, and grpc's round robin shares the calls between localities by weight.",
        "One line: `/pcbook-lb/weight/server1 3` (as `etcdctl put /pcbook-lb/weight/server1 3`). The control "
        "plane's knobs are described in docs/lessons/12-look-aside-xds.md and pcbook/discovery/xds.py.",
    ),
)

LESSON = Lesson(
    number=12,
    slug="look-aside-xds",
    title="Look-aside balancing with xDS",
    goal="A small xDS control plane tells grpc's own xDS client which servers to use, with weights and draining.",
    tutorial=False,
    exercise=EXERCISE,
    steps=(
        Step(
            key="xds-story",
            title="xDS clients follow the registry",
            why="The client dials `xds:///pcbook`: grpc reads the bootstrap file, opens an ADS stream to the "
                "control plane and gets a listener, a cluster and its endpoints, which the control plane builds "
                "from etcd and pushes again on each change.",
            servers=(S1, S2),
            standby=(S3,),
            registry=Registry(),
            control_plane=ControlPlane(),
            then=_THEN,
            act=xds_story,
            judge=judge_story,
            claims=("lesson 11's story holds with the control plane as the only source of endpoints",
                    "each push and each ACK is a line of the control plane's log"),
            checkpoint=True,
        ),
        Step(
            key="weights",
            title="the control plane shifts traffic by weight",
            why="grpc's round robin balances between localities by their weight; each server is its own "
                f"locality, so `etcdctl put /pcbook-lb/weight/server1 {WEIGHT}` sends about three calls in four "
                "to server1.",
            servers=(S1, S2),
            registry=Registry(knobs=KNOBS),
            control_plane=ControlPlane(),
            then=(f"the knobs of {KNOBS} (weight/server1 = {WEIGHT}) are written to etcd", f"{MEASURED} calls "
                  "after the client ACKs the "
                  "new endpoints"),
            act=weights,
            judge=judge_weights,
            claims=(f"server1 gets between {WEIGHT_BAND[0]} and {WEIGHT_BAND[1]} of the calls", "no call fails"),
            checkpoint=True,
        ),
        Step(
            key="endpoint-weights",
            title="round robin ignores endpoint weights",
            why="The same weight put on the endpoint, both endpoints in one locality: grpc's ROUND_ROBIN ignores "
                "per-endpoint weights, so the split stays even.",
            servers=(S1, S2),
            registry=Registry(knobs=KNOBS),
            control_plane=ControlPlane(weights="endpoint"),
            then=(f"weight/server1 = {WEIGHT}, sent as an endpoint weight",),
            act=weights,
            judge=judge_endpoint_weights,
            claims=(f"server1 gets between {EVEN_BAND[0]} and {EVEN_BAND[1]} of the calls",),
        ),
        Step(
            key="drain",
            title="draining a backend loses no call",
            why="The control plane sends server2's endpoint as DRAINING: grpc takes it out of the picker and lets "
                "the calls it has finish.",
            servers=(S1, S2),
            registry=Registry(),
            control_plane=ControlPlane(),
            then=("drain/server2 is written to etcd",),
            act=drain,
            judge=judge_drain,
            claims=("after the client's ACK every call goes to server1", "no call fails"),
            checkpoint=True,
        ),
        Step(
            key="control-plane-restart",
            title="the control plane dies and comes back",
            why="grpc keeps the last resources it accepted: with no control plane the client goes on calling the "
                "servers it knows, and learns nothing new. Restarted, the control plane answers the client's "
                "reconnect from etcd and the client resyncs.",
            servers=(S1, S2),
            standby=(S3,),
            registry=Registry(),
            control_plane=ControlPlane(),
            then=("the control plane gets SIGKILL", "server3 registers while it is down",
                  "the control plane starts again"),
            act=restart,
            judge=judge_restart,
            claims=("no call fails while the control plane is down",
                    "server3 gets no call until the control plane is back, then it does"),
            checkpoint=True,
        ),
    ),
)
