"""``python -m pcbook.workbook.deploy``: the image's entry point (run a role, health and DNS checks) and the
writer of deploy/k8s/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pcbook import paths
from pcbook.workbook import health
from pcbook.workbook.deploy import k8s, render
from pcbook.workbook.deploy.render import ContainerError, compose_names, lesson_from_env, plan, render_upstreams
from pcbook.workbook.deploy.roles import exec_argv, role_port, run_role, wait_dns


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pcbook.workbook.deploy",
        description="Run a lesson's stack in containers (the image's entry point) and write its Kubernetes files.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="exec a role of the lesson: server1, server2, nginx, client, envoy or client-envoy"
                         " (client: flags after -- replace the lesson's)")
    run.add_argument("role")
    run.add_argument("--conf", type=Path, default=None, help="nginx or envoy: an already rendered config to run")
    ready = sub.add_parser("ready", help="exit 0 if the role's port accepts connections (health check)")
    ready.add_argument("role")
    wait = sub.add_parser("wait-dns", help="exit 0 once NAME resolves (Kubernetes init container)")
    wait.add_argument("name")
    wait.add_argument("--timeout", type=float, default=300, help="give up after this many seconds (default 300)")
    rendered = sub.add_parser("render", help="print the lesson's nginx config with the compose service names")
    rendered.add_argument("--conf", type=Path, default=None, help="an nginx config instead of the lesson's")
    manifests = sub.add_parser("k8s", help="write the Kubernetes manifests (default: deploy/k8s/)")
    manifests.add_argument("--out", type=Path, default=k8s.K8S_DIR, help="folder to write into")
    manifests.add_argument("--replicas", type=int, default=k8s.K8S_REPLICAS,
                           help=f"server pods (default {k8s.K8S_REPLICAS})")
    sub.add_parser("k8s-secret", help="print the Secret with the certificates of certs/ (for kubectl apply -f -)")
    sub.add_parser("wheels", help="download the image's wheels into deploy/wheels/ (for PCBOOK_WHEELS=local)")
    for p in (run, ready, rendered, manifests):
        p.add_argument("--lesson", type=int, default=None,
                       help=f"lesson number (default ${render.LESSON_ENV}, else {render.DEFAULT_LESSON})")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `run client ... -- FLAGS`: everything after -- goes to the client unparsed.
    client_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    try:
        number = args.lesson if getattr(args, "lesson", None) is not None else lesson_from_env()
        if args.command == "run":
            p = plan(number)
            if args.role not in p.roles():
                raise ContainerError(f"lesson {number} has no role {args.role!r} (roles: {', '.join(p.roles())})")
            if client_flags and args.role != "client":
                raise ContainerError("only the client takes flags after --")
            if client_flags:
                exec_argv([sys.executable, "-m", "pcbook.client", *client_flags])
            run_role(args.role, p, conf=args.conf)
        elif args.command == "ready":
            return 0 if health.ready(role_port(args.role, plan(number))) else 1
        elif args.command == "wait-dns":
            return 0 if wait_dns(args.name, args.timeout) else 1
        elif args.command == "render":
            p = plan(number)
            source = args.conf or p.conf
            print(render_upstreams(source.read_text(), compose_names(p), source=str(source)), end="")
        elif args.command == "k8s":
            if args.replicas < 1:
                raise ContainerError("--replicas must be at least 1")
            for path in k8s.write(args.out, number, args.replicas):
                print(f"wrote {paths.shown(path)}")
        elif args.command == "wheels":
            from pcbook.stack import dockerd

            dest = paths.ROOT / "deploy" / "wheels"
            try:
                dockerd.fill_wheelhouse(dockerd.image_requirements(), dest)
            except dockerd.DockerUnavailable as e:
                raise ContainerError(str(e)) from None
            print(f"{len(list(dest.glob('*.whl')))} wheels in {paths.shown(dest)}; build with PCBOOK_WHEELS=local")
        elif args.command == "k8s-secret":
            print(k8s.to_yaml([k8s.secret_document()]), end="")
        if args.command != "run":
            return 0
    except ContainerError as e:
        print(str(e), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
        return 1
    return 1  # run returns only when exec failed


if __name__ == "__main__":
    sys.exit(main())
