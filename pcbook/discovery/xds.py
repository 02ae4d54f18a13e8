"""Look-aside balancing: a small xDS control plane whose endpoints come from the etcd registry.

    python -m pcbook.discovery.xds serve --registry etcd://127.0.0.1:2379/pcbook --port 18000
    python -m pcbook.discovery.xds bootstrap --server 127.0.0.1:18000 --out .run/xds-bootstrap.json
    GRPC_XDS_BOOTSTRAP=.run/xds-bootstrap.json python -m pcbook.measure.driver --address xds:///pcbook ...

A gRPC client that dials `xds:///pcbook` reads the bootstrap file, opens one ADS stream (Aggregated
Discovery Service, state of the world) to this control plane and asks for, in turn:

- LDS `pcbook`: a Listener whose api_listener is an HttpConnectionManager with the route config
  inline (RDS inline: every call to cluster `pcbook`) and the router filter (grpc rejects an HCM
  without it);
- CDS `pcbook`: a Cluster of type EDS (endpoints from the same ADS stream), lb_policy ROUND_ROBIN, HTTP/2
  to the backends (Envoy, lesson 13's other client, needs it said; grpc's clients ignore it);
- EDS `pcbook`: the ClusterLoadAssignment, built from the registry: one locality per server.

Weights: grpc's ROUND_ROBIN ignores per-endpoint weights (measured: 3:1 endpoint weights give an
even split), but balances between localities by their weight (weighted_target). So each server is
its own locality and its weight is that locality's weight. Draining: the server's endpoint is sent
with health_status DRAINING, which grpc leaves out of the picker (calls in flight finish).

The operator's knobs live in etcd too, next to the registry: `<prefix>-lb/weight/<name>` = "3" and
`<prefix>-lb/drain/<name>` (any value). Each change of the registry or of a knob is pushed to every
client at once. Every push and every ACK/NACK is logged on its own line. A client's request that
carries the nonce of our last response is an ACK (version_info is the version we sent) or a NACK
(error_detail set); one without a nonce is a new subscription; one with an older nonce is stale.
Answering an ACK with a response would make the client ACK again: a loop.

Measured (the steps of lesson 12, `make lesson-12`, three runs): a push is ACKed 4-9 ms after the etcd change; a
new server's first call 0.015-0.10 s after its registration; 3:1 locality weights gave 0.78-0.80 of
the calls to the heavier server (N = 200), 3:1 endpoint weights exactly 0.5; draining lost 0 calls; a
SIGKILL lost the 1 call in flight.

When the control plane dies, grpc clients keep the last resources they accepted and go on calling;
they reconnect with backoff and subscribe again, and the restarted control plane answers from the
registry (measured: 0 failed calls over 3.4-4.2 s without a control plane; a server registered
meanwhile got its first call 2.4-3.1 s after the restart, the client's reconnect backoff). It waits
for its first read of the registry before it serves: answering a reconnecting client with an empty
endpoint list would empty that client's picker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, wrappers_pb2

from pcbook.service.endpoints import Endpoint, Screen, ip_only
from pcbook.service.logs import clean, fatal, log
from pcbook.service.registry import Etcd, Members, RegistryUrl, parse_url

SERVICE = "pcbook"
DEFAULT_PORT = 18000
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SHORT = {LDS: "LDS", CDS: "CDS", EDS: "EDS"}
ORDER = (LDS, CDS, EDS)


@dataclass(frozen=True)
class Backend:
    name: str
    host: str
    port: int
    weight: int = 1
    draining: bool = False

    def __str__(self) -> str:
        state = " DRAINING" if self.draining else ""
        return f"{self.name}={self.host}:{self.port} w{self.weight}{state}"


MAX_WEIGHT = 1000  # grpc sums the locality weights in 32 bits; a knob beyond this is a typo or an attack
_WEIGHT = re.compile(r"[0-9]{1,4}")


def weight_of(knobs: dict[str, str], name: str) -> tuple[int, str | None]:
    """The weight/<name> knob (default 1) and, when the knob is not 1-MAX_WEIGHT, why it was ignored."""
    text = knobs.get(f"weight/{name}", "1")
    if _WEIGHT.fullmatch(text) and 0 < int(text) <= MAX_WEIGHT:
        return int(text), None
    return 1, f"weight/{name} = '{clean(text, 40)}' is not a number from 1 to {MAX_WEIGHT}; using 1"


class KnobFileError(ValueError):
    """A file of knobs (knobs_from_file) with a line that is not one; the message names the line."""


MAX_KNOBS = 32  # lines of a knobs file: more is not a lesson's exercise
_KNOB = re.compile(r"(weight|drain)/([A-Za-z0-9][A-Za-z0-9_.-]{0,62})")


def knobs_from_file(text: str, prefix: str, source: str) -> list[tuple[str, str]]:
    """The (etcd key, value) pairs of a knobs file: one `KEY VALUE` per line as `etcdctl put` takes them,
    `#` lines are comments. Only the operator's knobs are accepted (`<prefix>-lb/weight/<name>`,
    `<prefix>-lb/drain/<name>`), with a short printable value: the file is a learner's, and what it says
    goes into the registry every server and client of the lesson reads. The control plane still judges
    each value (weight_of)."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{source}:{number}"
        if len(words) != 2:
            raise KnobFileError(f"{where}: expected `KEY VALUE`, got {clean(line.strip(), 60)!r}")
        key, value = words
        knob = key.removeprefix(prefix + "-lb/") if key.startswith(prefix + "-lb/") else None
        if knob is None or not _KNOB.fullmatch(knob):
            raise KnobFileError(f"{where}: {clean(key, 60)!r} is not a knob: {prefix}-lb/weight/<server> or "
                                f"{prefix}-lb/drain/<server>")
        if len(value) > 16 or not value.isprintable():
            raise KnobFileError(f"{where}: the value {clean(value, 20)!r} is not a short word")
        pairs.append((key, value))
        if len(pairs) > MAX_KNOBS:
            raise KnobFileError(f"{source}: more than {MAX_KNOBS} knobs")
    return pairs


def backends_from(members: dict[str, Endpoint], knobs: dict[str, str],
                  say: Callable[[str], None] = lambda _line: None) -> list[Backend]:
    """The registry's parsed {name: endpoint} (endpoints.Screen) with the operator's weight/<name> and
    drain/<name> keys applied."""
    out = []
    for name, endpoint in sorted(members.items()):
        weight, why = weight_of(knobs, name)
        if why:
            say(why)
        out.append(Backend(name, endpoint.host, endpoint.port, weight, f"drain/{name}" in knobs))
    return out


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def listener(service: str = SERVICE) -> listener_pb2.Listener:
    route_config = route_pb2.RouteConfiguration(name=f"{service}-route", virtual_hosts=[
        route_components_pb2.VirtualHost(name=service, domains=["*"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=""),
            route=route_components_pb2.RouteAction(cluster=service))])])
    manager = hcm_pb2.HttpConnectionManager(route_config=route_config, http_filters=[
        hcm_pb2.HttpFilter(name="router", typed_config=_any(router_pb2.Router()))])
    return listener_pb2.Listener(name=service, api_listener=api_listener_pb2.ApiListener(api_listener=_any(manager)))


HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def cluster(service: str = SERVICE) -> cluster_pb2.Cluster:
    """The service's EDS cluster. HTTP/2 to the backends is explicit: Envoy (lesson 13) speaks HTTP/1.1 to
    a cluster without it and every call fails (`reset reason: protocol error`); grpc's clients ignore it."""
    options = upstream_http_pb2.HttpProtocolOptions
    h2 = options(explicit_http_config=options.ExplicitHttpConfig(
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
    return cluster_pb2.Cluster(
        name=service, type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())),
        typed_extension_protocol_options={HTTP_PROTOCOL_OPTIONS: _any(h2)})


WEIGHTS = ("locality", "endpoint")


def load_assignment(backends: list[Backend], service: str = SERVICE,
                    weights: str = "locality") -> endpoint_pb2.ClusterLoadAssignment:
    """weights="locality": one locality per server, weighted by the server's weight (honoured by grpc).
    weights="endpoint": one locality, the weight on each endpoint (ignored by ROUND_ROBIN: to show it)."""
    endpoints = []
    for b in backends:
        status = health_check_pb2.DRAINING if b.draining else health_check_pb2.HEALTHY
        endpoints.append(endpoint_components_pb2.LbEndpoint(
            health_status=status, load_balancing_weight=wrappers_pb2.UInt32Value(value=b.weight),
            endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=b.host, port_value=b.port)))))
    if weights == "endpoint":
        localities = [endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(zone="all"), lb_endpoints=endpoints,
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1))] if endpoints else []
    else:
        localities = [endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(zone=b.name), lb_endpoints=[e],
            load_balancing_weight=wrappers_pb2.UInt32Value(value=b.weight)) for b, e in zip(backends, endpoints,
                                                                                           strict=True)]
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=service, endpoints=localities)


@dataclass
class _Subscription:
    names: set[str] = field(default_factory=set)
    nonce: str = ""  # of our last response on this type
    version: str = ""  # of our last response on this type


class _Stream:
    """One client's ADS stream: its subscriptions and the responses waiting to be sent."""

    def __init__(self, peer: str):
        self.peer = peer
        self.node = ""
        self.subs: dict[str, _Subscription] = {}
        self.out: queue.SimpleQueue[discovery_pb2.DiscoveryResponse | None] = queue.SimpleQueue()

    @property
    def who(self) -> str:
        return self.node or self.peer


class ControlPlane(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS servicer: one snapshot of LDS/CDS/EDS, pushed to every stream when it changes."""

    def __init__(self, service: str = SERVICE, say: Callable[[str], None] = log, weights: str = "locality"):
        self.service = service
        self.weights = weights
        self.say = say
        self._lock = threading.RLock()
        self._streams: list[_Stream] = []
        self._nonces = itertools.count(1)
        self._versions: dict[str, int] = dict.fromkeys(ORDER, 0)
        self._resources: dict[str, list[tuple[str, any_pb2.Any]]] = {t: [] for t in ORDER}
        self._summary = ""
        self.pushes = 0
        self.acks = 0
        self.nacks = 0
        self.set_backends([], announce=False)

    # the snapshot ---------------------------------------------------------------------------------

    def set_backends(self, backends: list[Backend], *, announce: bool = True) -> None:
        """New endpoints (and the fixed listener and cluster): push each type whose content changed."""
        fresh = {LDS: [(self.service, _any(listener(self.service)))],
                 CDS: [(self.service, _any(cluster(self.service)))],
                 EDS: [(self.service, _any(load_assignment(backends, self.service, self.weights)))]}
        with self._lock:
            changed = [t for t in ORDER if fresh[t] != self._resources[t]]
            for type_url in changed:
                self._resources[type_url] = fresh[type_url]
                self._versions[type_url] += 1
            self._summary = ", ".join(map(str, backends)) or "no endpoint"
            if announce and EDS in changed:
                self.say(f"endpoints v{self._versions[EDS]}: {self._summary}")
            for stream in self._streams:
                for type_url in changed:
                    if type_url in stream.subs:
                        self._send(stream, type_url)

    def _send(self, stream: _Stream, type_url: str) -> None:
        sub = stream.subs[type_url]
        wanted = [res for name, res in self._resources[type_url] if not sub.names or name in sub.names]
        version = str(self._versions[type_url])
        nonce = str(next(self._nonces))
        sub.nonce, sub.version = nonce, version
        stream.out.put(discovery_pb2.DiscoveryResponse(version_info=version, resources=wanted, type_url=type_url,
                                                       nonce=nonce))
        self.pushes += 1
        detail = f": {self._summary}" if type_url == EDS else ""
        self.say(f"push {SHORT.get(type_url, type_url)} v{version} to {stream.who} (nonce {nonce}){detail}")

    # the protocol ---------------------------------------------------------------------------------

    def _on_request(self, stream: _Stream, req: discovery_pb2.DiscoveryRequest) -> None:
        if req.node.id:
            stream.node = clean(req.node.id)  # the client's text, in our log lines
        kind = SHORT.get(req.type_url) or clean(req.type_url)
        names = set(req.resource_names)
        with self._lock:
            sub = stream.subs.get(req.type_url)
            if sub is None or not req.response_nonce:
                stream.subs[req.type_url] = _Subscription(names)
                self.say(f"request {kind} {clean(str(sorted(names)), 200) if names else '*'} from {stream.who}")
                if req.type_url in self._resources:
                    self._send(stream, req.type_url)
                return
            if req.response_nonce != sub.nonce:
                return  # answers a response we have since replaced; the newer one is on its way
            if req.HasField("error_detail"):
                self.nacks += 1
                self.say(f"NACK {kind} v{sub.version} from {stream.who} (nonce {sub.nonce}, keeps"
                         f" v{clean(req.version_info or 'none')}): {clean(req.error_detail.message, 300)}")
            else:
                self.acks += 1
                self.say(f"ACK {kind} v{clean(req.version_info)} from {stream.who} (nonce {sub.nonce})")
            if names != sub.names:  # the same nonce with other names: a change of subscription
                sub.names = names
                self._send(stream, req.type_url)

    def StreamAggregatedResources(self, request_iterator: Iterator[discovery_pb2.DiscoveryRequest],
                                  context: grpc.ServicerContext) -> Iterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream(context.peer())
        with self._lock:
            self._streams.append(stream)

        def read() -> None:
            try:
                for req in request_iterator:
                    self._on_request(stream, req)
            except grpc.RpcError:
                pass  # the client went away
            finally:
                stream.out.put(None)

        threading.Thread(target=read, name="ads-reader", daemon=True).start()
        context.add_callback(lambda: stream.out.put(None))
        try:
            while (response := stream.out.get()) is not None:
                yield response
        finally:
            with self._lock:
                self._streams.remove(stream)
            self.say(f"stream from {stream.who} closed")


class RegistryFeed:
    """Feeds a ControlPlane from etcd: the servers under <prefix> and the knobs under <prefix>-lb."""

    def __init__(self, plane: ControlPlane, registry: RegistryUrl, *, allow_remote: bool = False):
        self.plane = plane
        etcd = Etcd(registry)
        self._lock = threading.Lock()
        self._screen = Screen(plane.say, allow_remote=allow_remote, dialable=ip_only)  # grpc's EDS: IP literals
        self._said: set[str] = set()  # knob lines already said
        on_error: Callable[[str], None] = lambda line: plane.say(f"registry: {line}")  # noqa: E731
        self.servers = Members(etcd, registry.prefix, on_change=lambda _m: self._update(), on_error=on_error)
        self.knobs = Members(etcd, registry.prefix + "-lb", on_change=lambda _m: self._update(), on_error=on_error)

    def start(self, timeout: float = 10, *, follow: bool = True) -> None:
        """Start both watches and return after the first read of each (TimeoutError otherwise).
        follow=False: stop watching after that first read (a control plane that never pushes an update)."""
        self.servers.start()
        self.knobs.start()
        self.servers.wait(lambda _m: True, timeout)
        self.knobs.wait(lambda _m: True, timeout)
        self._update()
        if not follow:
            self.close()

    def _update(self) -> None:
        with self._lock:
            if self.servers.changes and self.knobs.changes:
                self.plane.set_backends(backends_from(self._screen(self.servers.snapshot()), self.knobs.snapshot(),
                                                      self._say_once))

    def _say_once(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self.plane.say(line)

    def close(self) -> None:
        self.servers.close()
        self.knobs.close()


def bootstrap(server: str, node_id: str | None = None) -> dict:
    """The xDS bootstrap a grpc client reads from GRPC_XDS_BOOTSTRAP: where the control plane is."""
    return {"xds_servers": [{"server_uri": server, "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": node_id or f"pcbook-client-{os.getpid()}", "locality": {"zone": "local"}}}


def write_bootstrap(path: Path, server: str, node_id: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bootstrap(server, node_id), indent=2) + "\n")
    return path


def serve(registry: RegistryUrl, port: int, host: str = "127.0.0.1", service: str = SERVICE,
          weights: str = "locality", follow: bool = True, allow_remote: bool = False) -> int:
    plane = ControlPlane(service, weights=weights)
    feed = RegistryFeed(plane, registry, allow_remote=allow_remote)
    try:
        feed.start(follow=follow)
    except TimeoutError:
        feed.close()
        fatal(f"cannot read the registry {registry}: is etcd running?")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="ads"),
                         options=[("grpc.so_reuseport", 0)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(plane, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        feed.close()
        fatal(f"cannot listen on {host}:{port}: address already in use; choose another --port")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    server.start()
    log(f"xDS control plane for xds:///{service} listening on {host}:{bound}, endpoints from {registry}")
    while not stop.wait(0.5):
        pass
    feed.close()
    server.stop(0.5).wait()
    log("control plane stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pcbook.discovery.xds", description="A small xDS control plane.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve ADS with endpoints from the registry")
    s.add_argument("--registry", required=True, metavar="etcd://HOST:PORT[/prefix]")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"ADS port (default {DEFAULT_PORT})")
    s.add_argument("--service", default=SERVICE, help="the name clients dial as xds:///NAME (default pcbook)")
    s.add_argument("--weights", choices=WEIGHTS, default="locality",
                   help="where a server's weight goes: its own locality's weight (default, honoured by grpc's"
                        " round robin) or its endpoint in one shared locality (ignored by round robin)")
    s.add_argument("--allow-remote", action="store_true",
                   help="accept registered servers outside loopback (each is logged); the lessons use 127.0.0.1")
    s.add_argument("--no-follow", action="store_true",
                   help="read the registry once and never push an update (a wrong setup the checkpoints must catch)")
    b = sub.add_parser("bootstrap", help="write the bootstrap file grpc clients read from GRPC_XDS_BOOTSTRAP")
    b.add_argument("--server", default=f"127.0.0.1:{DEFAULT_PORT}", help="the control plane's host:port")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--node-id", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.command == "bootstrap":
        print(write_bootstrap(args.out, args.server, args.node_id))
        return 0
    try:
        registry = parse_url(args.registry)
    except ValueError as err:
        p.error(f"--registry: {err}")
    if not 0 < args.port < 65536:
        p.error("--port must be between 1 and 65535")
    return serve(registry, args.port, service=args.service, weights=args.weights, follow=not args.no_follow,
                 allow_remote=args.allow_remote)


if __name__ == "__main__":
    sys.exit(main())
