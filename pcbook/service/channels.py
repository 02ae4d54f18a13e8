"""Build client channels: insecure or TLS, with an optional load-balancing policy and health checking."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import grpc

from pcbook.service import tls

LB_POLICIES = ("pick_first", "round_robin")
STATUS_CODES = tuple(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK)
# The retry policy's shape (lesson 14): up to 4 attempts, 50 ms then 100 ms, 200 ms between them (+ jitter).
RETRY_ATTEMPTS = 4
RETRY_BACKOFF = {"initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2}


def retry_policy(codes: Sequence[str], attempts: int = RETRY_ATTEMPTS) -> dict[str, Any]:
    """The service config's retryPolicy: retry a call that failed with one of `codes` (grpc.StatusCode names)."""
    unknown = [c for c in codes if c not in STATUS_CODES]
    if unknown or not codes:
        raise ValueError(f"retryable codes must be some of {', '.join(STATUS_CODES)}, not {list(codes)}")
    return {"maxAttempts": attempts, **RETRY_BACKOFF, "retryableStatusCodes": list(codes)}


def service_config(lb_policy: str | None = None, health_check: bool = False, *, retry: Sequence[str] = (),
                   wait_for_ready: bool = False) -> str | None:
    """The JSON service config for a policy and client-side health checking, or None for defaults.

    With ``health_check`` the client watches the server's grpc.health.v1 status ("" = the whole
    server) and sends no calls to a backend that is NOT_SERVING. ``retry`` (status code names): every
    method gets retry_policy(retry); ``wait_for_ready``: every call waits for a connection (until its
    deadline) instead of failing at once when none is READY.
    """
    if lb_policy is not None and lb_policy not in LB_POLICIES:
        raise ValueError(f"lb_policy must be one of {LB_POLICIES}, not {lb_policy!r}")
    config: dict[str, Any] = {}
    if lb_policy is not None:
        config["loadBalancingConfig"] = [{lb_policy: {}}]
    if health_check:
        config["healthCheckConfig"] = {"serviceName": ""}
    method: dict[str, Any] = {}
    if retry:
        method["retryPolicy"] = retry_policy(retry)
    if wait_for_ready:
        method["waitForReady"] = True
    if method:
        config["methodConfig"] = [{"name": [{}], **method}]  # an empty name: every method of every service
    return json.dumps(config) if config else None


class ServiceConfigError(ValueError):
    """A service config file that cannot be read, or is not a JSON object; the message says where."""


def load_service_config(path: str | os.PathLike[str]) -> str:
    """A service config file as the JSON string grpcio takes (its "grpc.service_config" channel option).

    Lines starting with // are comments (the exercise's TODOs) and are dropped; JSON itself has none. What
    is left must be one JSON object; grpcio validates its fields when the channel is made (a bad one fails
    every call with INVALID_ARGUMENT and its own words: `errors validating service config: [...]`)."""
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as err:
        raise ServiceConfigError(f"cannot read {os.fspath(path)}: {getattr(err, 'strerror', None) or err}") from None
    return parse_service_config(text, os.fspath(path))


def parse_service_config(text: str, source: str) -> str:
    """load_service_config's parsing, of a file's `text` (`source` names it in an error)."""
    # Each comment line becomes an empty one, so that a JSON error's line number is the file's.
    kept = "\n".join("" if line.lstrip().startswith("//") else line for line in text.splitlines())
    try:
        config = json.loads(kept)
    except json.JSONDecodeError as err:
        raise ServiceConfigError(f"{source}:{err.lineno}:{err.colno}: not JSON: {err.msg}") from None
    if not isinstance(config, dict):
        raise ServiceConfigError(f"{source}: a service config is a JSON object ({{...}}), not "
                                 f"{type(config).__name__}")
    return json.dumps(config)


def target_host(target: str) -> str:
    """The host of the first address of a target: ``ipv4:127.0.0.1:1,127.0.0.1:2`` -> ``127.0.0.1``."""
    rest = target
    for scheme in ("ipv4:", "ipv6:", "dns:///", "dns:"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    first = rest.split(",", 1)[0]
    if first.startswith("["):  # [::1]:50051
        return first[1 : first.index("]")]
    return first.rsplit(":", 1)[0] if first.count(":") == 1 else first


def make_channel(
    address: str,
    *,
    tls_enabled: bool = False,
    certs_dir: str | os.PathLike[str] | None = None,
    client_cert: bool = True,
    lb_policy: str | None = None,
    health_check: bool = False,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
    retry: Sequence[str] = (),
    wait_for_ready: bool = False,
    config_json: str | None = None,
) -> grpc.Channel:
    """A channel to ``address`` (``host:port`` or a gRPC target such as ``ipv4:a:1,b:2``).

    With ``tls_enabled`` the server certificate is checked against the CA of ``make cert`` and the
    client certificate is shown (mutual TLS) unless ``client_cert=False``. For a multi-address target
    the name checked against the certificate is the first address's host (override: ``server_name``),
    because gRPC would otherwise check the whole target string. Raises tls.CertificateFileError.
    ``retry``, ``wait_for_ready``: see service_config(). ``config_json``: a whole service config instead
    (load_service_config's, from a learner's file).
    """
    opts: list[tuple[str, Any]] = list(options)
    config = config_json or service_config(lb_policy, health_check, retry=retry, wait_for_ready=wait_for_ready)
    if config is not None:
        opts.append(("grpc.service_config", config))
    if not tls_enabled:
        return grpc.insecure_channel(address, options=opts)
    credentials = tls.client_credentials(certs_dir, with_client_cert=client_cert)
    name = server_name
    if name is None and ("," in address or address.startswith(("ipv4:", "ipv6:"))):
        name = target_host(address)
    if name is not None:
        opts.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(address, credentials, options=opts)
