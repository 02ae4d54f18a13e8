"""nginx fed by the registry: render the upstream's servers from etcd and reload nginx on each change.

    python -m pcbook.discovery.nginx_sync --registry etcd://127.0.0.1:2379/pcbook --nginx-prefix PREFIX

The pattern of consul-template and confd: nginx itself knows nothing of etcd. Its config includes a
file (`upstream pcbook_services { include upstream.conf; }`, see nginx/lesson-11.conf); this
watcher keeps that file equal to the registry's live set, checks the result with `nginx -t` and
sends `nginx -s reload`, with the same binary, prefix and config the runner started nginx with
(stack.nginx.nginx_argv). A reload starts new workers with the new list; the old workers finish the
calls they have and close their client connections (HTTP/2 GOAWAY), and clients reconnect to the
new workers.

What that costs, measured in lesson 11 step 2 (`make lesson-11`, three runs, 40 calls/s): a new
server's first call 0.19-0.31 s after its registration (watch, `nginx -t`, reload, new workers);
no call lost on a join, on a graceful stop (the reload happens during the server's drain) or on a
reload; a SIGKILLed server stays in the list until its lease expires (2.5-3.3 s), but nginx retries a
refused connection on the next server (grpc_next_upstream error), so only the call in flight on it
failed (1, a 502: nginx never retries a call it has sent).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pcbook.service.endpoints import Endpoint, Screen, check_name
from pcbook.service.logs import fatal, log
from pcbook.service.registry import Etcd, Members, RegistryUrl, parse_url
from pcbook.stack.nginx import (
    NGINX_ENV,
    NginxConfigError,
    NginxError,
    check_config,
    find_nginx,
    nginx_argv,
    nginx_version,
)
from pcbook.stack.procs import child_env

UPSTREAM_FILE = "upstream.conf"
# nginx refuses an upstream block with no server; an empty registry becomes one that is marked down,
# so nginx answers 502 (no live upstreams) instead of failing to reload.
EMPTY = "server 127.0.0.1:9 down;  # no server is registered\n"


def render_upstream(members: dict[str, Endpoint]) -> str:
    """The upstream block's body: one `server host:port;` per registered server, in name order. Only
    parsed parts go in (endpoints.Screen checked both the name and the address): a registry value
    cannot add a line or a directive to nginx's config."""
    if not members:
        return EMPTY
    return "".join(f"server {endpoint};  # {check_name(name)}\n" for name, endpoint in sorted(members.items()))


class NginxSync:
    """Keeps PREFIX/upstream.conf equal to the registry and reloads the nginx running from PREFIX."""

    def __init__(self, registry: RegistryUrl | str, prefix: Path, *, binary: Path | None = None,
                 file_name: str = UPSTREAM_FILE, say: Callable[[str], None] = log, allow_remote: bool = False):
        self.registry = parse_url(registry) if isinstance(registry, str) else registry
        self.prefix = Path(prefix)
        self.binary = binary or find_nginx()
        self.version = nginx_version(self.binary)
        self.file = self.prefix / file_name
        self.say = say
        self.reloads = 0
        self.screen = Screen(say, allow_remote=allow_remote)
        self.members = Members(Etcd(self.registry), on_change=self.apply,
                               on_error=lambda line: self.say(f"registry: {line}"))

    def apply(self, raw: dict[str, str]) -> bool:
        """Write the list, `nginx -t`, `nginx -s reload`; False (old file back) when nginx rejects it.
        A bad registry entry is left out (one line names it) and the others are written."""
        members = self.screen(raw)
        text = render_upstream(members)
        listed = ", ".join(f"{name}={addr}" for name, addr in sorted(members.items())) or "none"
        try:
            old = self.file.read_text()
        except FileNotFoundError:
            old = None
        if text == old:
            self.say(f"registry: {len(members)} server(s) ({listed}); {self.file.name} is up to date")
            return True
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.file)
        conf = self.prefix / "nginx.conf"
        try:
            check_config(self.binary, self.prefix, conf, self.version)
        except NginxConfigError as err:
            if old is not None:
                self.file.write_text(old)
            self.say(f"nginx rejected the new upstream list, kept the old one: {err}")
            return False
        argv = nginx_argv(self.binary, self.prefix, conf.read_text()) + ["-s", "reload"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env(NGINX_ENV))
        if out.returncode != 0:
            self.say(f"nginx -s reload failed: {(out.stderr + out.stdout).strip()}")
            return False
        self.reloads += 1
        self.say(f"upstream pcbook_services: {len(members)} server(s) ({listed}); nginx reloaded")
        return True

    def start(self) -> NginxSync:
        self.members.start()
        return self

    def close(self) -> None:
        self.members.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pcbook.discovery.nginx_sync",
                                description="Render nginx's upstream from etcd and reload nginx on each change.")
    p.add_argument("--registry", required=True, metavar="etcd://HOST:PORT[/prefix]", help="where the servers register")
    p.add_argument("--nginx-prefix", required=True, type=Path,
                   help="the prefix folder of the running nginx (holds nginx.conf and logs/nginx.pid)")
    p.add_argument("--file", default=UPSTREAM_FILE, help=f"the file nginx.conf includes (default {UPSTREAM_FILE})")
    p.add_argument("--allow-remote", action="store_true",
                   help="accept registered servers outside loopback (each is logged); the lessons use 127.0.0.1")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        args.registry = parse_url(args.registry)
    except ValueError as err:
        p.error(f"--registry: {err}")
    if not (args.nginx_prefix / "nginx.conf").is_file():
        p.error(f"--nginx-prefix: no nginx.conf in {args.nginx_prefix}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        sync = NginxSync(args.registry, args.nginx_prefix, file_name=args.file, allow_remote=args.allow_remote)
    except NginxError as err:
        fatal(str(err))
    log(f"watching {args.registry} for nginx at {args.nginx_prefix}")
    sync.start()
    while not stop.wait(0.5):
        pass
    sync.close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
