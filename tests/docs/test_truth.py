"""What a learner reads must be what the stack does: claims in configs and pages, checked against the
files and the code they describe (the lessons' checkpoint tests measure the stack itself)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pcbook.workbook import manifest

ROOT = Path(__file__).resolve().parents[2]
NGINX = ROOT / "nginx"
DOCS = ROOT / "docs"


def _directives(path: Path) -> list[str]:
    """The config without comments or blank lines."""
    lines = (re.sub(r"#.*$", "", line).rstrip() for line in path.read_text().splitlines())
    return [line for line in lines if line.strip()]


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return " ".join(line.lstrip("# ") for line in lines[:end])


def test_non_idempotent_counter_example_is_one_line_and_says_it_changes_nothing() -> None:
    # Lesson 8 step 4 measures that non_idempotent retries nothing behind grpc_pass; the file must say so.
    base, other = _directives(NGINX / "lesson-8.conf"), _directives(NGINX / "lesson-8-non-idempotent.conf")
    changed = [(a, b) for a, b in zip(base, other, strict=True) if a != b]
    assert changed == [("            grpc_next_upstream error timeout;",
                        "            grpc_next_upstream error timeout non_idempotent;")]
    header = _header(NGINX / "lesson-8-non-idempotent.conf")
    assert "changes nothing" in header and "no CreateLaptop runs twice" in header
    assert not re.search(r"can run twice|now retries|DANGEROUS", (NGINX / "lesson-8-non-idempotent.conf").read_text())


def test_lesson_8_page_quotes_the_configs_grpc_messages() -> None:
    # Every `nginx: ...` message the page shows is one the config really sends.
    conf = (NGINX / "lesson-8.conf").read_text()
    sent = set(re.findall(r'"(nginx: [^"]+)"', conf))
    page = (DOCS / "lessons" / "08-when-a-backend-fails.md").read_text()
    shown = set(re.findall(r"(?:UNAVAILABLE|DEADLINE_EXCEEDED|INTERNAL): (nginx: [^`|]+?)(?:`|  \()", page))
    assert shown and shown <= sent, shown - sent


def test_lesson_3_plaintext_step_says_what_is_seen() -> None:
    # nginx answers the plaintext preface with an HTTP 400 page; grpcio names it. The step must say so
    # (and checks it: the client's line must match).
    step = manifest.get(3).steps[0]
    assert step.expect is not None and step.expect.client_says is not None
    assert "HTTP status 400" in step.expect.client_says.regex
    assert "Trying to connect an http1.x server (HTTP status 400)" in step.why and "400" in step.why
    assert "connection is closed" not in step.why


def test_lesson_4_teaches_that_the_tls_version_decides_nginxs_line() -> None:
    lesson = manifest.get(4)
    aside = [s for s in lesson.steps if s.nginx is not None and s.nginx.name == "lesson-4-tls12.conf"]
    assert aside and not aside[0].checkpoint and not aside[0].expect.ok
    assert "grpc_ssl_protocols TLSv1.2;" in _directives_text(NGINX / "lesson-4-tls12.conf")
    refused = lesson.steps[1]
    assert "one backend" in refused.why  # why the pinned nginx tries only one backend
    page = (DOCS / lesson.doc_page).read_text()
    assert '--8<-- "nginx/lesson-4-tls12.conf"' in page
    for line in ("peer closed connection in SSL handshake", "SSL_do_handshake() failed", "1.23.4"):
        assert line in page


def _directives_text(path: Path) -> str:
    return "\n".join(_directives(path))


def test_lesson_2_shows_the_lectures_fifth_access_log_line() -> None:
    step = manifest.get(2).steps[0]
    # One refresh within the stay, so exactly one more Login after the four calls.
    assert step.client.refresh_seconds is not None and step.client.refresh_seconds < step.client.stay
    assert step.client.stay < 2 * step.client.refresh_seconds
    assert step.expect.access_posts == 5
    assert "--stay" in step.client.args() and "STAY=" in step.client.make_target()
    page = (DOCS / manifest.get(2).doc_page).read_text()
    assert "If the client keeps running" not in page and "five access-log lines" in page


def test_docs_build_before_make_gen_says_what_to_run(tmp_path: Path) -> None:
    # A checkout right after `make setup`: everything but the generated code.
    import shutil
    import subprocess
    import sys

    for name in ("pcbook", "docs", "nginx", "proto", "lessons"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    for name in ("mkdocs.yml", "Makefile", "README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "PCBOOK_DOCS_SOFT"}
    env["PYTHONPATH"] = str(tmp_path)  # ahead of the editable install's finder
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir",
                          str(tmp_path / "site")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "Traceback" not in out and "ImportError" not in out, out
    assert "the generated gRPC code (pcbook/pb/*_pb2.py) is missing: run `make gen`" in out


def test_concepts_table_covers_every_lesson() -> None:
    text = (DOCS / "concepts.md").read_text()
    table = text[text.index("## What the lessons cover"):]
    rows = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert rows == {lesson.number for lesson in manifest.LESSONS}


def test_the_site_and_readme_cite_the_lecture() -> None:
    url = "https://dev.to/techschoolguru/load-balancing-grpc-service-with-nginx-3fio"
    for text in ((DOCS / "index.md").read_text(), (ROOT / "README.md").read_text()):
        assert "Load balancing gRPC service with NGINX" in text and "TECH SCHOOL" in text and url in text


def test_go_interop_is_documented_where_a_learner_looks() -> None:
    page = (DOCS / "go-code.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "go-code.md" in (ROOT / "mkdocs.yml").read_text()
    for text in (page, readme):
        assert "techschool_pcbook" in text and "techschool.pcbook" in text and "techschool/pcbook-go" in text
        assert "PCBOOK_JWT_SECRET=secret" in text and "Ratelaptop" in text and "lifetime" in text
    assert "wire-compatible with the course's Go service" not in readme
    # The Python server's own words quoted on the page are the ones it sends.
    service = "".join(p.read_text() for p in (ROOT / "pcbook" / "service").glob("*.py"))
    for said in ("authorization token is not provided", "access token is invalid: "):
        assert said in page and said in service


def test_make_progress_and_list_say_what_they_do() -> None:
    # `make progress` checks the lessons' exercises (tests/unit: exactly those with one), not
    # every checkpoint; `make list` marks exactly the lessons beyond the tutorial.
    import contextlib
    import io

    from pcbook.workbook import cli

    helps = [line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("progress:")]
    helps.append((DOCS / "index.md").read_text().split("`make progress`", 1)[1].split(".", 1)[0])
    with_exercise = [lesson.number for lesson in manifest.LESSONS if lesson.exercise]
    for text in helps:
        assert "exercise" in text and "every checkpoint" not in text and "lessons pass" not in text, text
    listed = re.search(r"lessons ([\d, -]+)\)", helps[0])
    assert listed, helps[0]
    numbers = [n for part in listed.group(1).split(", ")
               for n in (range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [int(part)])]
    assert numbers == with_exercise, f"`make progress` help lists lessons {numbers}; exercises: {with_exercise}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.cmd_list(None)  # type: ignore[arg-type]
    marked = {int(m) for m in re.findall(r"make lesson-(\d+) .*\[beyond the tutorial\]$", out.getvalue(), re.M)}
    assert marked == {lesson.number for lesson in manifest.LESSONS if not lesson.tutorial}


def test_config_comments_quote_only_what_this_stack_logs() -> None:
    """Issue 26, item 6: a config comment said the backends refuse nginx "with bad certificate"; grpcio
    servers never send that alert (only the lecture's Go servers do). Each config whose lesson step has a
    backend refuse nginx for want of a certificate names the lines that step's check matches."""
    from pcbook.lessons import tutorial

    for conf in sorted(NGINX.rglob("*.conf")):
        comments = "\n".join(line for line in conf.read_text().splitlines() if line.lstrip().startswith("#"))
        for sentence in re.split(r"(?<=[.;])\s", comments):
            if "bad certificate" in sentence:
                assert "Go" in sentence, f"{conf.relative_to(ROOT)}: {sentence!r} (grpcio servers send no alert)"
    for name in ("lesson-4.conf", "exercises/lesson-5.conf"):
        text = (NGINX / name).read_text()
        assert re.search(tutorial.NO_CERT_SERVER.regex, text), f"{name} should name the server's line"


def test_troubleshooting_lists_the_names_the_server_certificate_covers() -> None:
    from pcbook.service import certs

    row = next(line for line in (DOCS / "troubleshooting.md").read_text().splitlines()
               if "Hostname Verification Check failed" in line and line.startswith("|"))
    listed = set(re.findall(r"`([^`]+)`", row.split("|")[2]))
    assert set(certs.SERVER_DNS) | set(certs.SERVER_IPS) <= listed, sorted(set(certs.SERVER_DNS) - listed)
