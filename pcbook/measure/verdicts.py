"""What lessons 7 and 10 conclude from their measurements: pure functions over typed evidence.

No process, socket or clock here: the lesson modules gather the evidence, these functions say what it
shows. A checkpoint judges only what holds by construction on any machine (calls counted in logs,
connections counted by the kernel, capacity that adds up); a latency difference is a measurement,
shown with its interval, and called a difference only when the interval resolves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pcbook.measure.stats import Difference, paired_difference

# --- lesson 10, step 1: the nginx path goes through nginx; the hop, measured ---------------------------


@dataclass(frozen=True)
class HopEvidence:
    nginx_port: int
    nginx_calls: int  # CreateLaptop calls that succeeded through nginx (the load generator's count)
    logged_calls: int  # CreateLaptop lines with HTTP 200 and grpc-status 0 for that port in nginx's log
    direct_calls: int  # calls that succeeded on the direct path (never through nginx)
    added: Difference  # nginx p50 minus direct p50, us, paired by repetition


def judge_hop(e: HopEvidence) -> list[str]:
    """Every call of the nginx path is in nginx's log, and no direct call is."""
    if e.nginx_calls == 0:
        return ["no call succeeded through nginx: the measurement did not run"]
    if e.logged_calls == e.nginx_calls:
        return []
    if e.logged_calls > e.nginx_calls:
        return [f"nginx's log shows {e.logged_calls} CreateLaptop calls on {e.nginx_port} but only "
                f"{e.nginx_calls} were sent to it: calls of another path (direct: {e.direct_calls}) "
                "went through nginx too"]
    return [f"nginx's log shows {e.logged_calls} CreateLaptop calls on {e.nginx_port}, but {e.nginx_calls} "
            "succeeded through it"]


def hop_reading(d: Difference) -> str:
    """One line for the learner: what the hop added on this run, and whether the run resolves it."""
    added = f"nginx - direct, p50: {d.short()} us ({d.interval.coverage:.0%} interval, {d.interval.n} repetitions)"
    if not d.resolved:
        return (f"{added}: not resolved — on this run the hop is smaller than the machine's own variation; "
                "`make bench` measures longer")
    if d.interval.median > 0:
        return f"{added}: resolved, the hop adds about {d.interval.median:.0f} us per call here"
    return (f"{added}: resolved the other way, the call through nginx was faster here. Possible on a shared "
            "or power-saving machine (a core kept busy wakes faster); `make bench`'s placement and h2load "
            "rows show more")


# --- lesson 10, step 2: backend connections with and without keepalive ---------------------------------


@dataclass(frozen=True)
class ConnectionCount:
    opened: int  # new TCP connections to the backend port during the rounds
    calls: int  # calls made through nginx in the rounds (failed ones too)
    rounds: int = 1  # rounds the calls were made in


NO_KEEPALIVE_SHARE = 0.9  # a reused port (TIME_WAIT reuse on loopback) can hide a few new connections


KEEPALIVE_MIN_CALLS = 20  # fewer calls cannot tell "one connection per call" from a few reconnects


def judge_keepalive(keep: ConnectionCount, no_keep: ConnectionCount, min_calls: int = KEEPALIVE_MIN_CALLS) -> list[str]:
    """With keepalive: at most one new backend connection for all calls; without: one per call."""
    diffs = []
    if keep.calls < min_calls or no_keep.calls < min_calls:
        return [f"too few calls to count connections ({keep.calls} and {no_keep.calls}; {min_calls} needed)"]
    if keep.opened > 1:
        diffs.append(f"with keepalive nginx should reuse one backend connection but opened {keep.opened} "
                     f"for {keep.calls} calls")
    if not NO_KEEPALIVE_SHARE * no_keep.calls <= no_keep.opened <= no_keep.calls + 1:
        diffs.append(f"without keepalive nginx should open one backend connection per call but opened "
                     f"{no_keep.opened} for {no_keep.calls} calls")
    return diffs


# --- lesson 10, step 3: two saturated servers serve more than one ---------------------------------------


@dataclass(frozen=True)
class ScaleEvidence:
    one: Sequence[float]  # calls/s of one server, directly, per round
    two: Sequence[float]  # calls/s of two behind nginx, per round
    waiting_one: float  # calls waiting on average at the one server (median over rounds)
    served_through_nginx: Mapping[str, int]  # server -> calls it served in the nginx rounds
    capacity: float  # one server's simulated capacity, calls/s


SCALE_MIN = 1.4  # two servers of fixed capacity give 2x; 1.4 leaves room for a busy machine


def idle_servers(served_through_nginx: Mapping[str, int]) -> list[str]:
    """The servers that served no call through nginx: the upstream does not reach them."""
    return sorted(srv for srv, n in served_through_nginx.items() if n == 0)


def judge_scale(e: ScaleEvidence) -> list[str]:
    from pcbook.measure.stats import median

    if e.waiting_one < 1:
        return [f"one server was not saturated ({e.waiting_one:.1f} calls waiting on average): the load "
                "generator could not keep enough calls in flight, so the comparison cannot judge the config "
                "(a busy machine? run it again)"]
    diffs = []
    idle = idle_servers(e.served_through_nginx)
    if idle:
        diffs.append(f"{', '.join(idle)} served no call through nginx: the upstream reaches "
                     f"{len(e.served_through_nginx) - len(idle)} of the {len(e.served_through_nginx)} servers")
    one, two = median(e.one), median(e.two)
    x = two / one if one else 0.0
    if x < SCALE_MIN:
        diffs.append(f"two servers behind nginx should deliver at least {SCALE_MIN}x one server but delivered "
                     f"{x:.2f}x ({two:.0f} vs {one:.0f} calls/s): does the upstream reach two distinct servers?")
    return diffs


# --- lesson 7, step 5: what client-side balancing costs next to a direct call ---------------------------


def interleaved_differences(samples_ms: Mapping[str, Sequence[float]], base: str = "direct",
                            level: float = 0.95) -> dict[str, Difference]:
    """For each path but `base`: its latency minus base's, call i against call i (the driver sends
    them interleaved), in microseconds, with the interval of the median difference."""
    ref = [v * 1000 for v in samples_ms[base]]
    out = {}
    for name, values in samples_ms.items():
        if name != base:
            out[name] = paired_difference(name, [v * 1000 for v in values], base, ref, level)
    return out


def client_side_reading(d: Difference) -> str:
    if not d.resolved:
        return (f"client-side round robin - direct: {d.short()} us: not resolved, no cost measurable on this "
                "run — it is a direct call")
    return f"client-side round robin - direct: {d.short()} us: resolved, {d.state()} than direct on this run"
