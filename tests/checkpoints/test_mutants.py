"""Every directive a lesson teaches is load-bearing: a checkpoint fails on each one-directive mutant.

For each lesson's checkpoint config, every mutant deletes one directive that is not logging or
boilerplate, or swaps grpc:// and grpcs:// in one grpc_pass. Each mutant runs the lesson's checkpoint
steps only (stopping at the first step that differs), and the checkpoint must fail. A directive that
really is optional for a checkpoint is listed in ALLOWED, and its config says why in a comment.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pcbook.paths import ENVOY_DIR
from pcbook.stack import nginx
from pcbook.workbook import manifest
from pcbook.workbook.runner import run_checkpoints

# Logging and process boilerplate: what they change is not what a checkpoint proves.
BOILERPLATE = frozenset({"worker_processes", "error_log", "access_log", "log_format"})
# What a checkpoint cannot notice, by lesson: a directive (its first words) or a whole block (its header,
# e.g. "location @grpc_internal"). Each config says why in a comment next to it.
ALLOWED: dict[int, tuple[str, ...]] = {
    # The tutorial's 10 are kept for lesson 8, which shows what they cost; a checkpoint's few calls fit.
    **{n: ("worker_connections",) for n in (2, 3, 4, 5, 6)},
    8: (
        "worker_connections",  # the checkpoint's 24 calls fit in the default 512 too
        "grpc_next_upstream error timeout",  # nginx's default, written out
        "error_page 500", "error_page 504", "location @grpc_internal", "location @grpc_deadline_exceeded",
        "default_type application/grpc",  # grpcio reads a trailers-only answer without it
    ),
    9: (
        "worker_connections",
        "grpc_read_timeout 1s",  # no checkpoint call is quiet outside RateLaptop's location
        "grpc_send_timeout 1h", "client_body_timeout 1h",  # the quiet stream's 1.5 s is within the 60 s defaults
    ),
    10: (
        "worker_connections",  # 32 calls in flight fit in the default 512
        "keepalive_requests",  # the ratio holds with a reconnect every 1000 calls
        "listen 127.0.0.1:8105", "grpc_pass grpc://one_server",  # `make bench`'s baseline, not the checkpoint's
    ),
    11: ("worker_connections",),  # the story's 2 calls in flight fit in the default 512
    14: (
        "worker_connections",  # 8 connections and their calls fit in the default 512
        # grpcio makes an HTML 502 UNAVAILABLE too (lesson 8), so the client's retryPolicy acts on either:
        "error_page 502", "location @grpc_unavailable", "default_type application/grpc",
        "add_header grpc-message", "default",
        # on 8143 a refused connection after the kill: the retry steps' client retries it either way
        "grpc_next_upstream off",
    ),
}
LESSONS = [lesson.number for lesson in manifest.LESSONS if lesson.checkpoint_nginx_config]


@dataclass(frozen=True)
class Mutant:
    name: str  # what was changed, for the failure message
    statement: str  # the directive's words, e.g. "grpc_pass grpcs://pcbook_services"
    block: str  # the header of the block it is in, e.g. "location @grpc_internal" ("" at the top)
    text: str

    def allowed(self, lesson: int) -> bool:
        return any(self.statement.startswith(a) or self.block == a for a in ALLOWED.get(lesson, ()))


def mutants(text: str) -> Iterator[Mutant]:
    """One-directive mutants of a config: each simple directive deleted, each grpc(s):// swapped."""
    stmts = nginx.statements(text)
    headers = [" ".join(s.words) for s in stmts if s.opens_block]  # block n (1, 2, ...) opens with headers[n-1]
    for stmt in stmts:
        if not stmt.words or stmt.opens_block:
            continue
        line = text.count("\n", 0, stmt.start) + 1
        shown = " ".join(stmt.words)
        block = headers[stmt.block_id - 1] if stmt.block_id else ""
        if stmt.words[0] not in BOILERPLATE:
            yield Mutant(f"line {line}: without `{shown};`", shown, block, text[:stmt.start] + text[stmt.end:])
        if stmt.words[0] == "grpc_pass":
            for old, new in (("grpcs://", "grpc://"), ("grpc://", "grpcs://")):
                if stmt.words[1].startswith(old):
                    swapped = text[:stmt.start] + text[stmt.start:stmt.end].replace(old, new, 1) + text[stmt.end:]
                    yield Mutant(f"line {line}: {old} swapped for {new}", f"{shown} (swapped)", block, swapped)
                    break


def test_mutants_are_generated_from_every_kind_of_directive() -> None:
    text = (manifest.get(5).checkpoint_config or Path()).read_text()
    names = [m.name for m in mutants(text)]
    assert any("without `ssl_verify_client on;`" in n for n in names)
    assert any("without `server 0.0.0.0:50052;`" in n for n in names)
    assert any("grpcs:// swapped for grpc://" in n for n in names)
    assert not any("error_log" in n or "access_log" in n for n in names)


@pytest.mark.timeout(1800)  # a lesson's mutants run one after the other; the print says how long each took
@pytest.mark.parametrize("number", LESSONS)
def test_every_mutant_of_the_checkpoint_config_fails_the_checkpoint(number: int, tmp_path: Path) -> None:
    full = manifest.get(number)
    conf = full.checkpoint_nginx_config
    assert conf is not None
    # Only the checkpoint steps that run this config can notice a change to it (lesson 10's other
    # checkpoint steps measure bench-hop.conf): the others are left out, to keep the test fast.
    steps = tuple(s for s in full.checkpoint_steps if s.nginx and s.nginx.path == conf)
    lesson = dataclasses.replace(full, steps=steps)
    text = conf.read_text()
    survivors, killed = [], 0
    t0 = time.monotonic()
    every = list(mutants(text))
    judged = [m for m in every if not m.allowed(number)]
    allowed = len(every) - len(judged)
    paths = []
    for i, mutant in enumerate(judged):
        paths.append(tmp_path / f"mutant-{i}.conf")
        paths[-1].write_text(mutant.text)
    # All on one stack: the servers start once, nginx once per config. The control (the lesson's own
    # config) runs first and last, in the same conditions, so a mutant's failure is its own: not a busy
    # port, nor a stack that an earlier mutant left in a state where nothing passes.
    control, *results, control_after = run_checkpoints(lesson, [conf, *paths, conf])
    assert control.checkpoint_passed, control.checkpoint_line()
    assert control_after.checkpoint_passed, "after the mutants: " + control_after.checkpoint_line()
    for mutant, result in zip(judged, results, strict=True):
        if result.checkpoint_passed:
            survivors.append(mutant.name)
        else:
            killed += 1
            assert "already in use" not in (result.error or ""), result.error
            print(f"  {mutant.name}: {result.checkpoint_line()[:200]}")
    elapsed = time.monotonic() - t0
    print(f"lesson {number}: {killed} mutants killed, {allowed} allowed, {len(survivors)} survived, {elapsed:.1f} s")
    assert killed > 0
    # Each allowance is used (a stale one would hide a future directive) and explained in the config.
    comments = "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    for entry in ALLOWED.get(number, ()):
        assert any(m.allowed(number) and (m.statement.startswith(entry) or m.block == entry) for m in mutants(text)), \
            f"ALLOWED[{number}] lists {entry!r}, which {conf.name} does not have"
        words = entry.split()
        assert any(w in comments for w in (words[-1], words[0])), f"{conf.name} must say why {entry!r} is optional"
    assert not survivors, f"{conf.name}: the checkpoint of lesson {number} passes with " + "; ".join(survivors)


# -- Envoy's configs (lesson 13) -------------------------------------------------------------------------
# The keys each Envoy config teaches: a mutant deletes one of them (each place it occurs), or one route.
ENVOY_TAUGHT: dict[str, tuple[str, ...]] = {
    "lesson-13-round-robin.yaml": ("lb_policy", "typed_extension_protocol_options", "codec_type", "access_log"),
    "lesson-13-mtls.yaml": ("require_client_certificate", "validation_context", "tls_certificates",
                            "transport_socket", "alpn_protocols"),
    "lesson-13-routes.yaml": (),  # its routes, one at a time
    "lesson-13-health.yaml": ("health_checks", "grpc_health_check", "no_traffic_interval", "unhealthy_threshold",
                              "healthy_threshold", "interval"),
    "lesson-13-retries.yaml": ("retry_policy", "retry_on", "num_retries", "per_try_timeout", "retry_host_predicate",
                               "circuit_breakers"),
    "lesson-13-xds.yaml": ("ads_config", "cds_config", "validate_clusters", "retry_policy", "retry_host_predicate"),
}
# What a checkpoint cannot notice, as (config, key), each with its reason; the config says why next to the key.
ENVOY_ALLOWED: dict[tuple[str, str], str] = {
    ("lesson-13-round-robin.yaml", "lb_policy"): "ROUND_ROBIN is Envoy's default, written out",
    ("lesson-13-round-robin.yaml", "codec_type"): "the default AUTO tells h2c from HTTP/1.1 by the client's preface",
    ("lesson-13-retries.yaml", "num_retries"): "the default 1 does: previous_hosts sends it to the live server",
    ("lesson-13-retries.yaml", "per_try_timeout"): "nothing the checkpoint provokes hangs",
    # Round robin mostly sends the next try to the other server anyway, and num_retries 2 covers the rest: the
    # checkpoint passed without it in 1 of 3 runs (measured), so it cannot be relied on to fail.
    ("lesson-13-retries.yaml", "retry_host_predicate"): "round robin and a second retry mostly reach server1",
    # Envoy's default of 3 retries in flight overflowed once in 4 runs (1 call lost): not every run.
    ("lesson-13-retries.yaml", "circuit_breakers"): "the default 3 retries in flight overflow only sometimes",
}


def envoy_mutants(name: str, text: str) -> Iterator[tuple[str, str]]:
    """(what was deleted, the config without it): each taught key at each place, and each route."""
    import yaml

    doc = yaml.safe_load(text)

    def places(node: object, path: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield (*path, key)
                yield from places(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield (*path, i)
                yield from places(value, (*path, i))

    for path in list(places(doc)):
        last, parent = path[-1], path[-2] if len(path) > 1 else None
        if last in ENVOY_TAUGHT[name] or (isinstance(last, int) and parent == "routes"):
            copy = yaml.safe_load(text)
            node = copy
            for part in path[:-1]:
                node = node[part]
            del node[last]
            shown = ".".join(str(p) for p in path[-3:])
            yield shown, yaml.safe_dump(copy, sort_keys=False)


def test_envoy_mutants_are_generated_for_every_taught_key() -> None:
    lesson = manifest.get(13)
    names = {s.envoy.name for s in lesson.checkpoint_steps if s.envoy}
    assert names == set(ENVOY_TAUGHT)
    health_conf = lesson.step("health-envoy").envoy.path.read_text()
    health = [m for m, _ in envoy_mutants("lesson-13-health.yaml", health_conf)]
    assert any(m.endswith("health_checks") for m in health) and any("no_traffic_interval" in m for m in health)
    routes = [m for m, _ in envoy_mutants("lesson-13-routes.yaml", lesson.step("routes").envoy.path.read_text())]
    assert len(routes) == 2
    # Each allowance is used and explained in its config, on the key's own line.
    for (conf, key), _reason in ENVOY_ALLOWED.items():
        text = (ENVOY_DIR / conf).read_text()
        assert any(m.endswith(key) for m, _ in envoy_mutants(conf, text)), f"{conf} has no {key} to allow"
        assert any(line.strip().startswith(f"{key}:") and "#" in line for line in text.splitlines()), \
            f"{conf} must say why {key} is optional, in a comment on its line"


@pytest.mark.timeout(1800)
def test_every_envoy_mutant_fails_the_checkpoint(tmp_path: Path) -> None:
    from pcbook.stack import envoy as envoy_stack
    from pcbook.workbook.runner import run_lesson

    lesson = manifest.get(13)
    binary = envoy_stack.find_envoy()
    folder = envoy_stack.new_run_folder(tmp_path / "validate")
    rejected, steps, owner = [], [], {}
    judged = 0
    for name in ENVOY_TAUGHT:
        uses = [s for s in lesson.checkpoint_steps if s.envoy and s.envoy.name == name]
        for i, (what, text) in enumerate(envoy_mutants(name, uses[0].envoy.path.read_text())):
            label = f"{name}: {what}"
            if any(name == conf and what.endswith(key) for conf, key in ENVOY_ALLOWED):
                continue
            judged += 1
            path = tmp_path / f"{Path(name).stem}-m{i}.yaml"
            path.write_text(text)
            try:
                envoy_stack.check_config(binary, folder, path, uses[0].envoy.admin_port)
            except envoy_stack.EnvoyConfigError:
                rejected.append(label)  # the stage refuses it with one line: the checkpoint fails
                continue
            for step in uses:
                key = f"{step.key}-{Path(name).stem.split('-')[-1]}-m{i}"
                owner[key] = label
                steps.append(dataclasses.replace(step, key=key, envoy=dataclasses.replace(step.envoy, conf=path)))
    # The lesson's own configs first and last, in the same conditions: a mutant's failure is its own.
    control = lesson.checkpoint_steps
    last = tuple(dataclasses.replace(s, key=f"{s.key}-again") for s in control)
    # A mutant whose Envoy does not come up ends a replay with one line (the stage's error), as `make check-13`
    # would: it failed, and the replay goes on from the step after it.
    remaining, outcomes, errors = [*control, *steps, *last], {}, {}
    while remaining:
        result = run_lesson(dataclasses.replace(lesson, steps=tuple(remaining)), echo=None)
        outcomes |= {o.key: o for o in result.steps}
        if result.error is None:
            break
        broken = remaining[len(result.steps)]
        errors[broken.key] = result.error
        remaining = remaining[len(result.steps) + 1:]
    assert not {s.key for s in (*control, *last)} & errors.keys(), errors
    assert all(outcomes[s.key].passed for s in (*control, *last)), [o.diffs for o in outcomes.values() if o.diffs][:3]
    said = {k: o.diffs for k, o in outcomes.items() if not o.passed} | {k: [e] for k, e in errors.items()}
    failed = {owner[k] for k in said if k in owner}
    survivors = sorted(set(owner.values()) - failed)
    for label in sorted(failed):
        diffs = next(d for k, d in said.items() if owner.get(k) == label)
        print(f"  {label}: {'; '.join(diffs)[:160]}")
    print(f"lesson 13: {len(failed)} mutants failed the checkpoint ({len(errors)} of them: Envoy did not come up), "
          f"{len(rejected)} refused by Envoy, {len(survivors)} survived, {len(ENVOY_ALLOWED)} allowed")
    assert judged and not survivors, "the checkpoint of lesson 13 passes with: " + "; ".join(survivors)
