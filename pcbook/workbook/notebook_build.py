"""Write the lesson notebooks (lessons/NN-slug.ipynb) from the lesson manifest and the prose below.

    python -m pcbook.workbook.notebook_build            # (re)write every notebook
    python -m pcbook.workbook.notebook_build --check    # exit 1 if a committed notebook differs from this

The notebooks are plain .ipynb without outputs, so that a double click in JupyterLab opens them and
git diffs stay readable. Titles, goals, links and make targets come from pcbook.workbook.manifest; the prose
and the code cells of each lesson's story are here. tests/notebooks checks that the committed files
are what this module writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from pcbook.paths import ROOT
from pcbook.workbook import manifest
from pcbook.workbook.manifest import Lesson

LESSONS_DIR = ROOT / "lessons"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
TUTORIAL_PORTS = "8080, 50051 and 50052"
# Lessons beyond the tutorial have their own ports (see pcbook/lessons/).
SCENARIO_PORTS = {
    7: "50071-50072 and 8071",
    8: "50081-50082 and 8081",
    9: "50091-50092, 8091 (L7) and 8092 (L4)",
    10: "50101-50104 and 8101-8105",
}

Cell = tuple[str, str]  # ("md" | "code", source)


def md(text: str) -> Cell:
    return ("md", text.strip())


def code(text: str) -> Cell:
    return ("code", text.strip())


def intro(lesson: Lesson) -> Cell:
    page = f"../docs/{lesson.doc_page}"
    ports = TUTORIAL_PORTS if lesson.scenario is None else SCENARIO_PORTS[lesson.number]
    return md(f"""
# Lesson {lesson.number} — {lesson.title}

**Goal**: {lesson.goal}

- The lesson's page: [{lesson.doc_url}]({lesson.doc_url}) (run `make docs` first), or
  [{page}]({page}) in the repository.
- In a terminal, `make {lesson.target}` replays the same story and `make check-{lesson.number}` runs its checkpoint.
- Run it with **Run → Run All Cells**. Every process a cell starts is printed with its name as a prefix
  (`server1 | ...`, `nginx   | ...`). The last cell stops them all; so does a failing cell, an interrupted
  or restarted kernel, and running the notebook again from the top.
- Ports used: {ports}. If one is busy, `make stop` ends what an earlier crashed run left behind.
""")


def setup(lesson: Lesson, names: str) -> Cell:
    return code(f"""
from pcbook.workbook.notebook import {names}

session = Session({lesson.number})
""")


def ending(lesson: Lesson) -> list[Cell]:
    return [
        md("## Checkpoint\n\nThe steps marked *checkpoint* prove the lesson; the last line says whether "
           f"they passed, exactly as `make check-{lesson.number}` would."),
        code("session.checkpoint()"),
        md("## Stop\n\nStops every process this notebook started. Re-running the notebook starts a fresh stack."),
        code("session.close()"),
    ]


def steps_cell(number: int) -> Cell:
    return code(f"step{number} = session.step({number})")


# --- the tutorial's lessons: one cell per step --------------------------------------------------------

def lesson_1(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session"),
        md("""
No nginx yet. The client dials `0.0.0.0:8080` and the server listens there itself. The server's `--tls`
means *mutual* TLS, as in the lecture: it shows its certificate and asks for the client's.

### Step 1: both sides plaintext
"""),
        steps_cell(1),
        md("""
### Step 2: the server turns TLS on, the client does not

**This step is expected to fail.** Watch for the client's `rpc error: code = Unavailable`: a plaintext
HTTP/2 preface reaches a port that waits for a TLS handshake.
"""),
        steps_cell(2),
        md("### Step 3: both sides with TLS (checkpoint)\n\nThe client loads the CA and its own certificate."),
        steps_cell(3),
    ]


def lesson_2(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_calls, show_config"),
        md("""
nginx listens on 8080 and passes every call to an upstream of two plaintext servers. The three lines
that matter: `listen 8080 http2`, the `upstream` block, and `grpc_pass grpc://...`.
"""),
        code('show_config("lesson-2.conf")'),
        md("""
### Step 1: one client, two servers (checkpoint)

The client logs in and creates three laptops over **one** connection. Watch the `server1 |` and
`server2 |` lines take turns.
"""),
        steps_cell(1),
        md("Round robin works per call, not per connection: one connection's four calls are spread over both."),
        code("plot_calls(step1)"),
    ]


def lesson_3(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_calls, show_diff"),
        md("""
nginx now terminates mutual TLS on 8080: `listen 8080 ssl http2`, its server certificate, and
`ssl_client_certificate` with `ssl_verify_client on` to ask for the client's. The backends stay plaintext.
What changed since lesson 2:
"""),
        code('show_diff("lesson-2.conf", "lesson-3.conf")'),
        md("""
### Step 1: the plaintext client against nginx with TLS (checkpoint)

**This step is expected to fail**, the same way as lesson 1's mismatch: nginx closes a connection that
does not start with a TLS handshake.
"""),
        steps_cell(1),
        md("### Step 2: the TLS client (checkpoint)\n\nnginx decrypts and forwards each call in plaintext."),
        steps_cell(2),
        code("plot_calls(step2)"),
    ]


def lesson_4(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_calls, show_config, show_diff"),
        md("""
The backends turn TLS on. nginx first keeps lesson 3's config, which still speaks plaintext to them:
"""),
        code('show_config("lesson-3.conf")'),
        md("""
### Step 1: TLS backends, nginx still on `grpc://`

**This step is expected to fail**: the backends drop nginx's plaintext connection and nginx answers the
client with an HTML `502`, which the client reports as `Unavailable`. nginx's error log says why.
"""),
        steps_cell(1),
        md("The fix the tutorial tries first: `grpcs://` in `grpc_pass`."),
        code('show_diff("lesson-3.conf", "lesson-4.conf")'),
        md("""
### Step 2: `grpcs://` against backends that require a client certificate

**This step is expected to fail** too: nginx does TLS now, but shows no certificate, and the servers
still require one. The server logs `PEER_DID_NOT_RETURN_A_CERTIFICATE`.
"""),
        steps_cell(2),
        md("""
### Step 3: backends with server-side TLS only (checkpoint)

The tutorial's `NoClientCert` edit: the servers run with `--client-auth none`, and nginx's TLS
handshake succeeds.
"""),
        steps_cell(3),
        code("plot_calls(step3)"),
        md("""
### Step 4 (aside): the lecture's two handshake lines come from TLS 1.2

**This step is expected to fail**, on purpose: the backends require a client certificate again and
nginx is held to TLS 1.2 (`grpc_ssl_protocols TLSv1.2;`), as nginx before 1.23.4 was. The refusal now
happens inside the handshake, before nginx sent anything, so nginx tries the next backend: one
`... while SSL handshaking to upstream` line per backend, as in the lecture.
"""),
        code('show_diff("lesson-4.conf", "lesson-4-tls12.conf")'),
        steps_cell(4),
    ]


def lesson_5(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_calls, show_diff"),
        md("""
### Step 1: back to mutual TLS on the backends, with lesson 4's config

**This step is expected to fail** as in lesson 4: nginx has no certificate to show.
"""),
        steps_cell(1),
        md("""
The fix: `grpc_ssl_certificate` and `grpc_ssl_certificate_key` give nginx a certificate signed by the CA
the servers trust.
"""),
        code('show_diff("lesson-4.conf", "lesson-5.conf")'),
        md("### Step 2: both hops mutual TLS (checkpoint)"),
        steps_cell(2),
        code("plot_calls(step2)"),
    ]


def lesson_6(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_calls, show_diff"),
        md("""
Every gRPC call is an HTTP/2 `POST /package.Service/Method`, so an nginx `location` per service prefix
can choose the upstream: the auth service goes to server1, the laptop service to server2.
"""),
        code('show_diff("lesson-5.conf", "lesson-6.conf")'),
        md("""
### Step 1: one upstream per service, two client runs (checkpoint)

Two runs, so that round robin would have had the chance to mix them up: it must not.
"""),
        steps_cell(1),
        code("plot_calls(step1)"),
    ]


# --- lessons beyond the tutorial: the story once, then a look at each step ---------------------------

RUN_ONCE = md("""
## The story, once

The next cell plays every step of the lesson on real processes and prints their logs as they come
(it takes a few seconds). The cells after it look at what each step recorded; none of them runs
anything again.
""")


def lesson_7(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_calls, plot_latency, plot_timeline, show_config"),
        md("""
No proxy in the path: the client's target lists both servers (`ipv4:127.0.0.1:50071,127.0.0.1:50072`)
and grpcio's load-balancing policy picks a server for every call. nginx shows up only in the last
step, to measure what its hop costs:
"""),
        code('show_config("lesson-7.conf")'),
        RUN_ONCE,
        code("result = session.run()"),
        md("### Steps 1 and 2: `pick_first` vs `round_robin`\n\ngrpcio's default policy sticks to one "
           "server; `round_robin` spreads the same calls."),
        code("plot_calls(session.outcome(1))"),
        code("plot_calls(session.outcome(2))"),
        md("### Step 3: health-aware round robin\n\nA server that reports `NOT_SERVING` gets no calls "
           "until it is `SERVING` again."),
        code("step3 = session.outcome(3)\nplot_calls(step3)\nplot_timeline(step3)"),
        md("### Step 4: a server dies mid-run\n\nThe calls it had in flight fail; round robin moves on "
           "to the survivor."),
        code("plot_timeline(session.outcome(4))"),
        md("### Step 5: the cost of the hop\n\nThe same call direct, through nginx, and balanced by the "
           "client. Only the ratios mean anything; the absolute numbers are your machine's."),
        code("plot_latency(session.outcome(5))"),
    ]


def lesson_8(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_codes, plot_timeline, show_diff, table"),
        md("""
The tutorial's config answers a missing backend with an HTML 502 page; this lesson's config answers in
gRPC (`error_page 502 = @grpc_unavailable`), takes a failed server out of rotation for a short
`fail_timeout`, and gives nginx enough `worker_connections`:
"""),
        code('show_diff("lesson-8-tutorial.conf", "lesson-8.conf")'),
        RUN_ONCE,
        code("result = session.run()"),
        md("### Steps 1 and 2: no backend at all\n\nThe same `Unavailable`, but only the second one carries "
           "a gRPC message the client can read instead of an HTML status."),
        code("for number in (1, 2):\n    print(session.outcome(number).data['seen'])"),
        md("### Steps 3 and 4: a backend killed under load\n\nCalls already sent to the killed server "
           "fail; nginx cannot resend a call it has passed on, even with `non_idempotent`:"),
        code('show_diff("lesson-8.conf", "lesson-8-non-idempotent.conf")'),
        code("plot_timeline(session.outcome(3))\nplot_timeline(session.outcome(4))"),
        md("### Steps 5 and 6: passive health\n\nA refused connection is retried on the other server and "
           "the dead one is left alone for `fail_timeout`; with both down, nginx says `no live upstreams`."),
        code("""
step5 = session.outcome(5)
table([(step5.data["requests"], step5.data["attempts_on_dead_server"],
        "yes" if step5.data["temporarily_disabled"] else "no")],
      ["requests nginx logged", "attempts on the dead server1", "server1 temporarily disabled"])
plot_timeline(session.outcome(6))
"""),
        md("### Steps 7 and 8: `worker_connections`\n\nThe tutorial's 10 connections are not enough for 24 "
           "concurrent calls; the fixed config has room."),
        code("plot_codes(session.outcome(7), session.outcome(8))"),
    ]


def lesson_9(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, plot_l4_vs_l7, show_config, show_diff, table"),
        md("""
Streams through nginx with mutual TLS on both hops. Steps 1-4 start from defaults (lesson 5's setup on
this lesson's ports):
"""),
        code('show_config("lesson-9-defaults.conf")'),
        md("The final config raises the upload limit and the read timeout for the methods that need it, and adds "
           "a `stream` (L4) server on 8092 next to the L7 one on 8091:"),
        code('show_diff("lesson-9-defaults.conf", "lesson-9.conf")'),
        RUN_ONCE,
        code("result = session.run()"),
        md("### What each step showed\n\nSteps 3 and 4 are nginx's defaults failing: a 413 for the "
           "upload, a cut stream after `grpc_read_timeout`."),
        code("table([(i, o.title, 'yes' if o.checkpoint else '', 'ok' if o.passed else 'DIFFERS')\n"
             "       for i, o in enumerate(result.steps, 1)], ['step', 'what', 'checkpoint', 'verdict'])"),
        md("### L7 vs L4\n\nThrough `grpc_pass` (L7) nginx picks a backend per call; through the `stream` "
           "module (L4) once per TCP connection, so one client's calls all land on one server."),
        code("plot_l4_vs_l7(session.outcome(9))"),
    ]


def lesson_10(lesson: Lesson) -> list[Cell]:
    return [
        setup(lesson, "Session, bench_table, plot_bench, show_config"),
        md("""
A short `make bench` that checks itself: the hop's latency (direct vs through nginx, one call in
flight), the backend connections nginx opens with and without keepalive, and what a second server adds
when the servers are saturated. The checkpoint counts what holds on any machine (calls in nginx's log,
backend connections, calls each server served); the hop's added time is shown as a measurement, with
its interval. The scale-out config:
"""),
        code('show_config("bench-scale.conf")'),
        RUN_ONCE,
        code("result = session.run()"),
        md("### The numbers, per repetition\n\nEvery point is one round; the dashed line is one server's "
           "capacity."),
        code("plot_bench(result)"),
        code("bench_table(result)"),
    ]


STORIES = {1: lesson_1, 2: lesson_2, 3: lesson_3, 4: lesson_4, 5: lesson_5, 6: lesson_6,
           7: lesson_7, 8: lesson_8, 9: lesson_9, 10: lesson_10}


def cells(lesson: Lesson) -> list[Cell]:
    story = STORIES[lesson.number](lesson)
    if lesson.scenario is None:
        ran = [src for kind, src in story if kind == "code" and "session.step(" in src]
        wanted = [f"step{i} = session.step({i})" for i in range(1, len(lesson.steps) + 1)]
        if ran != wanted:  # the manifest gained or lost a step: the prose here must follow
            raise ValueError(f"lesson {lesson.number}: the notebook runs {ran}, the manifest has {wanted}")
    return [intro(lesson), *story, *ending(lesson)]


def build(lesson: Lesson) -> str:
    """The notebook's file content, deterministic (fixed cell ids, sorted keys)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for index, (kind, source) in enumerate(cells(lesson), 1):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell.id = f"lesson{lesson.number:02d}-{index:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def notebook_path(lesson: Lesson) -> Path:
    return ROOT / lesson.notebook


def stale() -> list[Path]:
    """Committed notebooks that differ from what build() writes (or are missing)."""
    out = []
    for lesson in manifest.LESSONS:
        path = notebook_path(lesson)
        if not path.is_file() or path.read_text() != build(lesson):
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that differ")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale()
        for path in differ:
            print(f"{path.relative_to(ROOT)} is stale: run python -m pcbook.workbook.notebook_build")
        return 1 if differ else 0
    LESSONS_DIR.mkdir(exist_ok=True)
    for lesson in manifest.LESSONS:
        notebook_path(lesson).write_text(build(lesson))
        print(f"wrote {lesson.notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
