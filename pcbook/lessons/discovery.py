"""Lessons 11 and 12: service discovery (etcd) and look-aside balancing (xDS), on real processes.

Every step declares its registry (model.Registry: a fresh etcd, which the runner starts and stops)
and, in lesson 12, the flags of the xDS control plane fed from it (model.ControlPlane). The act drives
the rest with pcbook.discovery.lab on top of the registry (ctx.lab()), the control plane included (its
moment is the story's): servers that register themselves (`--register`), and
one of the three ways to reach them: the thick client (`--discover`), nginx fed by nginx_sync, or
grpc's xDS client. It runs lesson 11's story (two servers, a third joins, one stops gracefully, one is
SIGKILLed) or one of lesson 12's look-aside measurements, and stops what it started. The judges are
pure functions of the typed results (results.Discovered).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pcbook.discovery import lab as discovery_lab
from pcbook.discovery.lab import Story
from pcbook.workbook.results import Call, Calls, Counts, Discovered, Mark

if TYPE_CHECKING:
    from pcbook.workbook.runner import StepContext

SERVERS = ("server1", "server2", "server3")
WEIGHT = 3  # server1's weight in lesson 12's weight step
WEIGHT_BAND = (0.65, 0.85)  # server1's share under 3:1 locality weights (N = 200: about +-3 sigma)
EVEN_BAND = (0.4, 0.6)  # its share when the weights are on the endpoints (round robin ignores them)
MEASURED = 200


def _calls(report, receivers: dict[str, str], events: dict[str, float]) -> Calls:  # type: ignore[no-untyped-def]
    origin = report.calls[0].t0 if report.calls else 0.0
    calls = tuple(Call(c.number, c.code, c.details, c.t0 - origin,
                       (receivers[c.laptop_id],) if c.laptop_id in receivers else ()) for c in report.calls)
    marks = tuple(Mark(label, t - origin) for label, t in events.items())
    return Calls(calls, SERVERS, marks=marks)


def _counts(counter: dict[str, int]) -> Counts:
    """Calls per server, every server listed (0: none), then 'failed' or 'unknown' if any."""
    return Counts({name: counter.get(name, 0) for name in SERVERS} | {k: v for k, v in counter.items()
                                                                       if k not in SERVERS})


def _discovered(path: str, story: Story, **more: Any) -> Discovered:
    """The story as a typed result; `more`: what the act measured besides (notes=, upstream_lists=)."""
    return Discovered(path, _calls(story.report, story.receivers, story.events),
                      {phase: _counts(c) for phase, c in story.phases.items()}, story.register_to_first_call,
                      story.kill_to_removal, dict(story.failed), **more)


def _say_story(ctx: StepContext, result: Discovered) -> None:
    first = result.register_to_first_call
    ctx.say("server3's first call: " + (f"{first:.3f} s after its registration" if first is not None
                                         and math.isfinite(first) else "never"))
    if result.kill_to_removal is None:
        ctx.say("the story ended after the join: no client reached server3, so server1's stop and server2's "
                "kill were not played")
    else:
        ctx.say(f"server2's key left the registry {result.kill_to_removal:.2f} s after its SIGKILL (its lease's "
                "TTL)")
    ctx.say("failed calls: " + ", ".join(f"{event} {n}" for event, n in result.failed.items()))
    for phase, counts in result.phases.items():
        ctx.say(f"{phase}: {counts}")


# -- lesson 11 ---------------------------------------------------------------------------------------


def thick(ctx: StepContext) -> Discovered:
    lab = ctx.lab()
    try:
        result = _discovered("thick client", discovery_lab.story(lab, lab.url))
    finally:
        lab.close()
    _say_story(ctx, result)
    return result


def via_nginx(ctx: StepContext) -> Discovered:
    lab = ctx.lab()
    try:
        lab.server("server1")
        lab.server("server2")
        upstream = lab.nginx().prefix / "upstream.conf"
        first = upstream.read_text()
        story = discovery_lab.story(lab, f"127.0.0.1:{discovery_lab.NGINX_PORT}")
        reloads = sum(line.endswith("nginx reloaded") for line in ctx.stack.lines("sync"))
        last = upstream.read_text()
    finally:
        lab.close()
    result = _discovered("nginx + nginx_sync", story, notes={"nginx reloads": reloads}, upstream_lists=(first, last))
    _say_story(ctx, result)
    ctx.say(f"nginx reloads: {reloads}")
    return result


def judge_story(result: Discovered, *, first_call_within: float = discovery_lab.FIRST_CALL_WITHIN) -> list[str]:
    first = result.register_to_first_call if result.register_to_first_call is not None else math.inf
    return discovery_lab.judge_phases({k: dict(v.per_server) for k, v in result.phases.items()}, first, result.failed,
                                      first_call_within=first_call_within)


# -- lesson 12 ---------------------------------------------------------------------------------------


def xds_story(ctx: StepContext) -> Discovered:
    lab = ctx.lab()
    try:
        lab.server("server1")
        lab.server("server2")
        lab.control_plane()  # the step's ControlPlane, once its first servers are registered
        story = discovery_lab.story(lab, "xds:///pcbook")
        acks = sum("ACK EDS " in line for line in ctx.stack.lines("xds"))
    finally:
        lab.close()
    result = _discovered("xDS", story, notes={"EDS ACKs": acks})
    _say_story(ctx, result)
    ctx.say(f"the client ACKed {acks} endpoint lists (EDS)")
    return result


def _weighted(ctx: StepContext, *, knob: str, value: str) -> Discovered:
    lab = ctx.lab()
    try:
        lab.server("server1")
        lab.server("server2")
        lab.control_plane()
        share, acked, report = discovery_lab.share_after(
            lab, lambda: lab.registry.put(f"/pcbook-lb/{knob}/server1" if knob == "weight" else
                                          f"/pcbook-lb/{knob}/server2", value), None, MEASURED, say=ctx.say)
        receivers = lab.receivers(report)
    finally:
        lab.close()
    counts = {name: round(share.get(name, 0.0) * MEASURED) for name in ("server1", "server2")}
    ctx.say("share of the measured calls: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(share.items())))
    return Discovered("xDS", _calls(report, receivers, {}), {"after the change": Counts(counts)},
                      failed={knob: len(report.failed())}, share=share, notes={"change to ACK": acked})


def weights(ctx: StepContext) -> Discovered:
    """weight/server1 = 3 in etcd; where the control plane puts it (a locality's weight or the endpoint's)
    is the step's ControlPlane declaration."""
    return _weighted(ctx, knob="weight", value=str(WEIGHT))


def drain(ctx: StepContext) -> Discovered:
    return _weighted(ctx, knob="drain", value="1")


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


def restart(ctx: StepContext) -> Discovered:
    lab = ctx.lab()
    try:
        lab.server("server1")
        lab.server("server2")
        lab.control_plane()
        r = discovery_lab.restart_control_plane(lab)
        receivers = lab.receivers(r.report)
    finally:
        lab.close()
    ctx.say(f"control plane down {r.down_s:.2f} s: {r.failed} failed calls; server3 (registered meanwhile) got "
            f"its first call {r.restart_to_first_call:.2f} s after the restart")
    run = _calls(r.report, receivers, r.events)
    return Discovered("xDS", run, {"all": run.counts()}, failed={"control plane down": r.failed},
                      notes={"down": r.down_s, "restart to first call": r.restart_to_first_call,
                             "reached server3 while down": float(r.reached_new_server_while_down),
                             "spread while down": float(r.spread_while_down)})


def judge_restart(result: Discovered) -> list[str]:
    diffs = [f"{n} calls failed while the control plane was down" for n in result.failed.values() if n]
    if not result.notes.get("spread while down"):
        diffs.append("without a control plane the client did not keep calling both servers")
    if result.notes.get("reached server3 while down"):
        diffs.append("server3 got calls while no control plane could have told the client about it")
    if not math.isfinite(result.notes.get("restart to first call", math.inf)):
        diffs.append("after the restart the client never reached server3: it did not resync")
    return diffs
