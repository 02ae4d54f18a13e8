"""`make bench`: the cost of nginx's extra hop and the gain of scale-out, measured on this machine.

    python -m pcbook.bench [--reps N] [--processes N] [--out DIR]

The command line: its flags become a Settings, and a learner's mistake or a failed start one line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from pcbook.bench.run import run_bench, say_flushed
from pcbook.bench.settings import OUT_DIR, Settings
from pcbook.paths import shown
from pcbook.service import tls
from pcbook.stack import nginx, procs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m pcbook.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=defaults.reps,
                        help=f"repetitions of every round (default {defaults.reps}; 6 or more for 95 %% intervals)")
    parser.add_argument("--processes", type=int, default=defaults.processes,
                        help="load generator processes (default 2)")
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke test, not a measurement")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"where the chart and results go ({shown(OUT_DIR)})")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument("--free-placement", action="store_true",
                        help="do not pin servers, nginx and the load generator to separate cores")
    parser.add_argument("--no-h2load", action="store_true", help="skip the h2load cross-check")
    parser.add_argument("--no-architectures", action="store_true",
                        help="skip phase 3 (nginx fed by etcd, the thick client and xDS side by side)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reps < 1 or args.processes < 1:
        say_flushed("bench: --reps and --processes must be at least 1")
        return 2
    settings = replace(Settings(), reps=args.reps, processes=args.processes, free_placement=args.free_placement,
                       cross_check=not args.no_h2load, architectures=not args.no_architectures)
    if args.quick:
        settings = replace(settings, latency_window=0.3, load_window=0.3, scale_window=0.5, warmup=0.1,
                           scale_warmup=0.3, arch_calls=max(args.reps * 20, 200), arch_warmup=20)
    try:
        run_bench(settings, args.out, chart=not args.no_chart)
    except KeyboardInterrupt:
        say_flushed("interrupted: every process the bench started has been stopped")
        return 130
    except (procs.PortBusyError, procs.NotReadyError, nginx.NginxError, tls.CertificateFileError, RuntimeError) as err:
        say_flushed(f"bench failed: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
