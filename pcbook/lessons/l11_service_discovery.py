"""Lesson 11: service discovery with etcd. Servers register themselves; a thick client and nginx (fed by
nginx_sync) follow the live set with no change to their config.

Each step declares its registry (a Registry: etcd, which the stage keeps from step to step and empties
at each step's start), its two first servers (registered before the act begins) and server3, which
joins during the story (a standby server). The act plays lesson 11's story (pcbook.stage.story) on
one path; the judge holds the story's rules: an even spread in each phase, a first call on server3
within 3 s of its registration, no call lost on a join or a graceful stop, at most the calls in flight
lost on a kill. Lesson 12 judges its xDS story by the same rules.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from pcbook.measure import driver as load
from pcbook.stage.model import Exercise, Lesson, Nginx, Registry, RegistrySync, Server, Step
from pcbook.stage.results import Call, Calls, Counts, Discovered, Mark
from pcbook.stage.story import FIRST_CALL_WITHIN, Story, stories

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

SERVERS = ("server1", "server2", "server3")
NGINX_PORT = 8111  # nginx/lesson-11.conf
SIGMAS = 3.5  # xDS picks localities at random (weighted), so the band is binomial: about 1 in 2000 per check
# 20 ms of work per CreateLaptop, so that a kill finds calls in flight.
_FLAGS = ("--host", "127.0.0.1", "--work-ms", "20")


def registered(base: int) -> tuple[Server, Server, Server]:
    """server1-3 on base+1.. base+3, each registering itself in the step's registry."""
    s1, s2, s3 = (Server(name, base + i, flags=_FLAGS, register=True) for i, name in enumerate(SERVERS, 1))
    return s1, s2, s3


S1, S2, S3 = registered(50110)


# -- the story's rules (lesson 12's xDS story too) ---------------------------------------------------

def spread(counts: Counter[str] | dict[str, int], servers: set[str]) -> bool:
    """Exactly `servers` got the calls, each within SIGMAS standard deviations of an even share."""
    counts = {k: v for k, v in counts.items() if v}
    total = sum(counts.values())
    p = 1 / len(servers)
    band = SIGMAS * math.sqrt(total * p * (1 - p))
    return set(counts) == servers and all(abs(counts[s] - total * p) <= band for s in servers)


def judge_phases(p: dict[str, Counter[str]] | dict[str, dict[str, int]], first_call: float, failed: dict[str, int],
                 *, first_call_within: float = FIRST_CALL_WITHIN, kill_losses: int = 2) -> list[str]:
    """The phases a story played (an unfollowed one ends after "joined"), each against the story's rule."""
    diffs = []
    if not spread(p["two"], {"server1", "server2"}):
        diffs.append(f"with two servers registered the calls did not spread over both: {dict(p['two'])}")
    if not first_call <= first_call_within:
        diffs.append(f"server3 got no call within {first_call_within:g} s of registering (is the client watching?)")
    if not spread(p["joined"], {"server1", "server2", "server3"}):
        diffs.append(f"after server3 joined the calls did not spread over all three: {dict(p['joined'])}")
    if "left" in p and not spread(p["left"], {"server2", "server3"}):
        diffs.append(f"after server1's graceful stop the calls did not spread over server2 and server3: "
                     f"{dict(p['left'])}")
    if "killed" in p and set(k for k, v in p["killed"].items() if v) != {"server3"}:
        diffs.append(f"after server2's lease expired calls went elsewhere than server3: {dict(p['killed'])}")
    for event in ("join", "graceful stop"):
        if failed.get(event):
            diffs.append(f"{failed[event]} call(s) failed around the {event} (expected none)")
    if failed.get("kill", 0) > kill_losses:
        diffs.append(f"{failed['kill']} calls failed around the kill (at most the {kill_losses} in flight)")
    return diffs


def judge_story(result: Discovered, *, first_call_within: float = FIRST_CALL_WITHIN) -> list[str]:
    first = result.register_to_first_call if result.register_to_first_call is not None else math.inf
    return judge_phases({k: dict(v.per_server) for k, v in result.phases.items()}, first, result.failed,
                        first_call_within=first_call_within)


# -- typed results ------------------------------------------------------------------------------------

def calls_of(report: load.Report, receivers: dict[str, str], events: dict[str, float]) -> Calls:
    """A driver's report as the calls of a step, times relative to its first call."""
    origin = report.calls[0].t0 if report.calls else 0.0
    calls = tuple(Call(c.number, c.code, c.details, c.t0 - origin,
                       (receivers[c.laptop_id],) if c.laptop_id in receivers else ()) for c in report.calls)
    marks = tuple(Mark(label, t - origin) for label, t in events.items())
    return Calls(calls, SERVERS, marks=marks)


def counts_of(counter: dict[str, int]) -> Counts:
    """Calls per server, every server listed (0: none), then 'failed' or 'unknown' if any."""
    return Counts({name: counter.get(name, 0) for name in SERVERS} | {k: v for k, v in counter.items()
                                                                       if k not in SERVERS})


def discovered(path: str, story: Story, **more: Any) -> Discovered:
    """The story as a typed result; `more`: what the act measured besides (notes=, upstream_lists=)."""
    return Discovered(path, calls_of(story.report, story.receivers, story.events),
                      {phase: counts_of(c) for phase, c in story.phases.items()}, story.register_to_first_call,
                      story.kill_to_removal, dict(story.failed), **more)


def say_story(ctx: StepContext, result: Discovered) -> None:
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


def play(ctx: StepContext, target: str) -> Story:
    """The story with one client on `target`; the joiner is the step's standby server."""
    return stories(ctx.stage, {"client": target}, ctx.step.standby[0])["client"]


# -- the acts -----------------------------------------------------------------------------------------

def thick(ctx: StepContext) -> Discovered:
    result = discovered("thick client", play(ctx, ctx.registry_url))
    say_story(ctx, result)
    return result


def via_nginx(ctx: StepContext) -> Discovered:
    upstream = ctx.nginx.prefix / "upstream.conf"
    first = upstream.read_text()
    story = play(ctx, f"127.0.0.1:{NGINX_PORT}")
    reloads = sum(line.endswith("nginx reloaded") for line in ctx.lines("sync"))
    result = discovered("nginx + nginx_sync", story, notes={"nginx reloads": reloads},
                        upstream_lists=(first, upstream.read_text()))
    say_story(ctx, result)
    ctx.say(f"nginx reloads: {reloads}")
    return result


# -- the lesson ---------------------------------------------------------------------------------------

_THEN = ("server3 starts and registers", "server1 gets SIGTERM", "server2 gets SIGKILL")

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-11.conf",
    answer="nginx/lesson-11.conf",
    steps=("nginx-sync",),
    hints=(
        "nginx knows nothing of etcd; nginx_sync writes the registered servers into a file in nginx's prefix "
        'folder and reloads nginx. The upstream has to read that file instead of its own list.',
        'Replace the two `server` lines of `upstream pcbook_services` with `include upstream.conf;`: '
        'https://nginx.org/en/docs/ngx_core_module.html#include',
    ),
)

LESSON = Lesson(
    number=11,
    slug="service-discovery",
    title="Service discovery with etcd",
    goal="Servers register themselves in etcd; a thick client and nginx follow the live set with no config change.",
    tutorial=False,
    exercise=EXERCISE,
    steps=(
        Step(
            key="thick-client",
            title="the thick client follows the registry",
            why="Each server puts `/pcbook/<name> = host:port` in etcd under a 3 s lease it keeps alive; a "
                "graceful stop revokes the lease first, then serves 1 s more. The client watches the prefix and "
                "rebuilds its round_robin channel on each change, so a new server gets calls at once; a killed "
                "server's connection breaks and round robin leaves it out before its lease expires.",
            servers=(S1, S2),
            standby=(S3,),
            registry=Registry(),
            then=_THEN,
            act=thick,
            judge=judge_story,
            claims=("with two servers registered the calls spread over both",
                    "server3 gets calls within 3 s of registering, with no change to the client",
                    "a graceful stop loses no call; a SIGKILL loses at most the calls in flight",
                    "the killed server's key leaves when its lease expires"),
            checkpoint=True,
        ),
        Step(
            key="nginx-sync",
            title="nginx fed by the registry",
            why="nginx knows nothing of etcd: nginx_sync renders the upstream's servers from the registry into a "
                "file nginx.conf includes, checks it with `nginx -t` and reloads nginx on each change (the "
                "consul-template pattern). nginx retries a refused connection on the next server, so only the "
                "call in flight on the killed server fails.",
            servers=(S1, S2),
            standby=(S3,),
            nginx=Nginx("lesson-11.conf", NGINX_PORT),
            sync=RegistrySync(),
            registry=Registry(),
            then=_THEN,
            act=via_nginx,
            judge=judge_story,
            claims=(f"the same story through nginx on {NGINX_PORT}, with one reload per change of the set",
                    "server3 gets calls after one reload, with no edit of nginx's config by hand"),
            checkpoint=True,
        ),
    ),
)
