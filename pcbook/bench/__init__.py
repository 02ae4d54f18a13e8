"""`make bench`: the cost of nginx's extra hop and the gain of scale-out, measured on this machine.

    python -m pcbook.bench [--reps N] [--processes N] [--out DIR]

Three phases, each on its own stack of servers, all children of one `procs.Stack` (nothing outlives it):

1. The hop. Seven paths to the same small unary call (CreateLaptop, no simulated work), measured in
   interleaved rounds: every repetition visits every path once, in a rotated order, so that a noisy
   moment of the machine hits all paths alike. Per round: latency with one call in flight (p50, p99),
   then throughput with many calls in flight. The xDS path dials `xds:///pcbook` through lesson 12's
   control plane, fed from a real etcd that lists server1 and server2.
2. Scale-out. Servers with a fixed capacity (`--workers` threads, `--work-ms` of sleep per call) are
   saturated: one server directly, two behind nginx, two with client-side round robin.
3. Three architectures on one registry (etcd): nginx fed by nginx_sync, lesson 11's thick client and
   lesson 12's xDS client. Per-call latency with the load driver (sync grpcio, the calls interleaved),
   as ratios to direct; then lesson 11's story of backend changes with the three clients calling at
   once: calls lost per change, the new server's first call, what each change made nginx, the thick
   client and the control plane do.

It prints a table with ratios to "direct", says which targets were met, and writes a chart and the raw
numbers to .run/bench/ (bench.png, results.json). Ports: servers 50101-50104, nginx 8101-8106, HAProxy
8107; etcd, the control plane and phase 3's story servers on free loopback ports.

Where HAProxy is installed, phase 1 also measures nginx's plaintext hop through HAProxy (port 8107), its
row right after nginx's, and the report gives each proxy's memory at rest; without it, one line says it
was skipped. Envoy's row (lesson 13) joins the same way.

One module per job: `settings` (what is measured: paths, labels, ports, settings) and `results` (their
types); `stacks` starts servers, nginx, the peer proxies and the load generator; `lookaside` everything that runs on the
registry (the hop's xDS path, phase 3); `accounting` counts connections, calls and CPU; `phases` measures
the hop, scale-out and h2load; `tables`, `report` and `chart` show it; `run` runs it all, `__main__` is
the command line. `rr_cost` (`python -m pcbook.bench.rr_cost`) is the measurement behind lesson 10's
explanation of the client-side round robin row. It sits above pcbook.measure and pcbook.discovery (it
composes their stacks) and below the lessons (lesson 10 runs short rounds of its phases).
"""
