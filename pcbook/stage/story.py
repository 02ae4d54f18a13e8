"""Lesson 11's story on a stage: two registered servers take calls, a third joins, the first stops
gracefully, the second is SIGKILLed; one load driver per way of reaching them calls all along.

Lessons 11-12 play it once per path and judge it (their modules hold the rules); the bench plays it
with three clients at once. Every moment is read from evidence: the drivers' progress lines, the
servers' own lines (who received each call), and a watch of the registry (when each key came and went).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

from pcbook.measure import driver as load
from pcbook.service.logs import RECEIVED_TEXT
from pcbook.service.registry import Members
from pcbook.stack import procs
from pcbook.stack.specs import Driver, Server
from pcbook.stage.stage import Stage, failed_between, per_server

FIRST_CALL_WITHIN = 3.0  # s from server3's registration to its first call, for every path of lesson 11
FIRST, SECOND = "server1", "server2"  # the story's two first servers: the one that stops, the one killed


@dataclass
class Story:
    """The story on one path: who received the calls in each phase, and what each event cost."""

    path: str
    phases: dict[str, Counter[str]]  # "two", "joined", "left", "killed" (those played) -> calls per server
    register_to_first_call: float  # s from server3's registration to its first call (inf: never)
    kill_to_removal: float | None  # s from the SIGKILL to the registry's DELETE of server2 (None: not played)
    failed: dict[str, int]  # event -> calls that failed around it
    report: load.Report
    receivers: dict[str, str]  # laptop id -> server
    events: dict[str, float]  # label -> time.time()


def stories(stage: Stage, targets: dict[str, str], joiner: Server, *, rate: float = 40, step: int = 60,
            concurrency: int = 2, end_unfollowed: bool = True) -> dict[str, Story]:
    """The story once, with one driver per target (driver name -> target: an etcd:// URL for the thick
    client, nginx's host:port, xds:///pcbook) calling at the same time: every client sees the same servers
    and the same events. server1 and server2 are the stage's (registered); `joiner` joins.

    `end_unfollowed`: when no client reaches the joiner (none follows the registry), the story ends after
    the join, whose phase already fails the judge: the stop and the kill would only add ten seconds of
    calls to servers that are gone. Only the phases played are in the stories."""
    ttl = stage.servers[SECOND].ttl
    seen: list[tuple[float, set[str]]] = []  # when our own watch saw each state of the registry
    with Members(stage.registry, on_change=lambda m: seen.append((time.time(), set(m)))) as members:
        members.wait(lambda m: {FIRST, SECOND} <= m.keys(), 10)
        runs = {name: stage.start_driver(Driver(address=target, calls=100_000, rate=rate, concurrency=concurrency),
                                         name) for name, target in targets.items()}
        lead = next(iter(runs.values()))  # every driver calls at the same rate: one paces the story
        t_start = max(run.wait_done(10) for run in runs.values())
        t_two = lead.wait_more(step)
        mark3 = stage.stack.mark()
        stage.start_server(joiner)
        members.wait(lambda m: joiner.name in m, 5)
        t_reg = next(t for t, names in seen if joiner.name in names)  # the PUT, before the joiner logs it
        try:  # twice what the judge allows: "late" and "never" still read apart, a wrong setup is quick
            stage.stack.wait_for_line(joiner.name, RECEIVED_TEXT, 2 * FIRST_CALL_WITHIN,
                                      since=mark3)
            followed = True
        except procs.NotReadyError:
            followed = False  # no client learns of the joiner: first call = inf
        t_joined = lead.wait_more(step)
        events = {f"{joiner.name} registered": t_reg}
        played = followed or not end_unfollowed  # the stop and the kill
        if played:
            t_term = events[f"{FIRST} SIGTERM"] = stage.terminate(FIRST)
            stage.stack.proc(FIRST).wait(15)
            t_gone = time.time()  # after its drain: from here on nobody can send it a call
            lead.wait_more(step)
            t_kill = events[f"{SECOND} SIGKILL"] = stage.kill_working(SECOND)
            members.wait(lambda m: SECOND not in m, ttl + 5)
            removed = events[f"{SECOND}'s lease expired"] = next(
                t for t, names in seen if t > t_kill and SECOND not in names)
            t_end = lead.wait_more(step)
        reports = {name: run.finish() for name, run in runs.items()}
    since = min(run.mark for run in runs.values())
    receivers_all = stage.receivers(load.Report([c for r in reports.values() for c in r.calls]), since)
    on_joiner = stage.received_at(joiner.name, mark3)
    out = {}
    for name, report in reports.items():
        ids = {c.laptop_id for c in report.calls}
        receivers = {i: srv for i, srv in receivers_all.items() if i in ids}
        first = min((t for i, t in on_joiner.items() if i in ids and t >= t_reg), default=math.inf)
        joined_end = t_term if played else t_joined
        phases = {"two": per_server(report, receivers, t_start, t_two),
                  "joined": per_server(report, receivers, first if math.isfinite(first) else t_reg, joined_end)}
        failed = {"join": len(failed_between(report, t_two, joined_end))}
        if played:
            phases |= {"left": per_server(report, receivers, t_gone, t_kill),
                       "killed": per_server(report, receivers, removed, t_end)}
            failed |= {"graceful stop": len(failed_between(report, t_term, t_kill)),
                       "kill": len(failed_between(report, t_kill, t_end))}
        out[name] = Story(targets[name], phases, first - t_reg, removed - t_kill if played else None, failed,
                          report, receivers, dict(events))
    return out
