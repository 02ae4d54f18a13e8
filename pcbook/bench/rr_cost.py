"""Why "client-side round robin, 2 servers" costs more than a direct call: the measurement that decides.

    python -m pcbook.bench.rr_cost [--quick] [--free-placement]

`make bench`'s client-rr row differs from its direct row in four ways at once: the LB policy
(round_robin, not pick_first), the address list (two subchannels, two connections), a second server
process that must be warm, and calls alternating between two processes on the servers' one core.
Five paths, each changing one of those, measured like phase 3 of the bench (the load driver, one call
in flight, the paths interleaved 20 calls at a time so that a busy machine slows every path alike and
each path's calls reach its servers back to back, as in a round of `make bench`; the p50 of each block
of calls paired with direct's same block):

  direct     pick_first to rr1                                        the baseline
  rr-one     round_robin over rr1's one address                       the policy alone
  rr-same    round_robin over two addresses of rr1 (127.0.0.1, .2)    two connections, one process
  rr-two     round_robin over rr1 and rr2                             two processes: the bench's client-rr
  direct-2   pick_first to rr2                                        is the second server slower alone?

rr1 listens on 0.0.0.0 (the server's default) so that 127.0.0.2, another loopback address, reaches the
same process: gRPC keeps one subchannel, one connection, per distinct address (measured: `ss` lists one
connection to 127.0.0.1:50131 and one to 127.0.0.2:50131). Placement as `make bench`'s (the servers on
one core, the driver on the other), or free. Ports 50131, 50132.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from pcbook.bench.phases import architecture_latency
from pcbook.bench.settings import LEVEL, Say
from pcbook.measure.placement import LOADGEN, available, pinned, plan
from pcbook.measure.stats import Difference, block_percentiles, paired_difference
from pcbook.paths import RUN_DIR
from pcbook.stack import procs
from pcbook.stack.specs import Driver, Server
from pcbook.stage.stage import Stage

P1, P2 = 50131, 50132
SERVERS = (
    Server("rr1", P1, flags=("--host", "0.0.0.0"), log_file=True),  # reached on 127.0.0.1 and 127.0.0.2
    Server("rr2", P2, flags=("--host", "127.0.0.1"), log_file=True),
)
DIRECT, RR_ONE, RR_SAME, RR_TWO, DIRECT_2 = "direct", "rr-one", "rr-same", "rr-two", "direct-2"
PATHS = {
    DIRECT: f"127.0.0.1:{P1}",
    RR_ONE: f"round_robin@ipv4:127.0.0.1:{P1}",
    RR_SAME: f"round_robin@ipv4:127.0.0.1:{P1},127.0.0.2:{P1}",
    RR_TWO: f"round_robin@ipv4:127.0.0.1:{P1},127.0.0.1:{P2}",
    DIRECT_2: f"127.0.0.1:{P2}",
}
WHAT = {
    RR_ONE: "the round_robin policy, one address",
    RR_SAME: "two addresses (two connections), one server process",
    RR_TWO: "two server processes, alternating (the bench's client-rr)",
    DIRECT_2: "the second server, alone",
}


@dataclass(frozen=True)
class Size:
    calls: int  # per path, one in flight, interleaved call by call (the load driver's --compare)
    warmup: int
    blocks: int  # the calls cut into blocks; block i of every path was sent at the same time: paired
    # Calls in a row on one path before the next path's: a path's calls reach its servers back to back,
    # as in a round of `make bench`, and only one in `run_length` follows another path's call.
    run_length: int = 20


FULL = Size(calls=1500, warmup=100, blocks=10)
QUICK = Size(calls=400, warmup=40, blocks=8)


@dataclass(frozen=True)
class RrCost:
    added: dict[str, Difference]  # path -> its p50 minus direct's, us, paired by block
    two_vs_same: Difference  # rr-two minus rr-same: what the second process adds over the second address
    p50_ms: dict[str, float]  # path -> p50 over all its calls


def measure(size: Size = FULL, say: Say = lambda _line: None, *, free: bool = False) -> RrCost:
    """Start rr1 and rr2, run the load driver over the five paths, stop everything. `free`: let the OS
    place the processes (default: pinned as `make bench` pins them)."""
    where = plan(available(), free=free)
    with procs.Stack(echo=None) as stack:
        stage = Stage(stack, RUN_DIR / "rr-cost", where, say)
        stage.apply(SERVERS)
        driver = Driver(calls=size.calls, warmup=size.warmup, run_length=size.run_length,
                        compare=tuple(f"{n}={t}" for n, t in PATHS.items()))
        say(f"{size.calls} calls per path after {size.warmup} warm-up calls, one in flight, interleaved "
            f"{size.run_length} calls at a time; "
            f"{where.describe()}")
        with pinned(where, LOADGEN):
            run = stage.start_driver(driver, "compare")
        report = stage.collect(run, timeout=60 + size.calls * len(PATHS) * 0.02)
        stage.close()
    rows = architecture_latency(report.samples_ms, DIRECT, size.blocks, LEVEL)
    added = {r.name: r.added for r in rows if r.added is not None}
    blocks = {n: [v * 1000 for v in block_percentiles(report.samples_ms[n], size.blocks)] for n in (RR_TWO, RR_SAME)}
    two_vs_same = paired_difference(RR_TWO, blocks[RR_TWO], RR_SAME, blocks[RR_SAME], LEVEL)
    return RrCost(added, two_vs_same, {r.name: r.p50_ms for r in rows})


def explanation(cost: RrCost) -> list[str]:
    """What the run says, one line per candidate cause, then the verdict."""
    lines = [f"{name:<9} - direct: {d.short():>22} us  {d.state():<13} {WHAT[name]}" for name, d in cost.added.items()]
    lines.append(f"rr-two - rr-same: {cost.two_vs_same.short()} us  {cost.two_vs_same.state()}: "
                 "what alternating between two processes adds over two connections to one")
    return lines


def contradictions(cost: RrCost) -> list[str]:
    """What would refute the explanation on the lesson page: the policy, or a second address of the same
    process, resolved slower than direct; or two processes resolved faster than two addresses of one."""
    out = []
    for name in (RR_ONE, RR_SAME):
        d = cost.added[name]
        if d.resolved and d.interval.median > 0:
            out.append(f"{name} ({WHAT[name]}) is resolved slower than direct: {d.verdict()}")
    d = cost.two_vs_same
    if d.resolved and d.interval.median < 0:
        out.append(f"two server processes are resolved faster than two addresses of one: {d.verdict()}")
    return out


def confirmed(cost: RrCost) -> bool:
    """The run resolves what the explanation says costs: two processes slower than two addresses of one."""
    d = cost.two_vs_same
    return d.resolved and d.interval.median > 0 and not contradictions(cost)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcbook.bench.rr_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.calls} calls per path instead of {FULL.calls}")
    parser.add_argument("--free-placement", action="store_true", help="do not pin the servers and the driver")
    args = parser.parse_args(argv)
    try:
        cost = measure(QUICK if args.quick else FULL, say=lambda line: print(line, flush=True),
                       free=args.free_placement)
    except (procs.PortBusyError, procs.NotReadyError, RuntimeError) as err:
        print(f"rr_cost failed: {err}")
        return 1
    for line in explanation(cost):
        print(line)
    against = contradictions(cost)
    if against:
        print("this run contradicts the explanation:")
        print("\n".join(f"  {line}" for line in against))
    elif confirmed(cost):
        print("this run bears the explanation out: the second server process, not the policy nor the address "
              "list, is what costs")
    else:
        print("this run does not resolve the difference between two processes and two addresses of one "
              "(a busy machine? --free-placement, or run it again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
