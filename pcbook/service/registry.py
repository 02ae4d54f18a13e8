"""A small client of etcd's v3 JSON gateway, standard library only.

etcd serves its gRPC API also as JSON over HTTP (`POST /v3/kv/put`, `/v3/kv/range`, `/v3/lease/grant`,
`/v3/lease/keepalive`, `/v3/lease/revoke`, and `/v3/watch`, which streams one JSON object per event
batch); keys and values travel base64-encoded, 64-bit numbers as strings. The `etcd3` Python package
would need the pure-Python protobuf (it does not import with protobuf 7), which would slow every
pcbook message, so the workbook talks to the gateway with http.client instead.
Not `etcd3gw` either: its watch iterator never ends when etcd dies (the fault lessons' retry needs that end),
a refused connection gives an empty message, and requests + futurist add ~75 ms to each process's import.

    etcd = Etcd("etcd://127.0.0.1:2379/pcbook")
    lease = etcd.grant(3)
    etcd.put("/pcbook/server1", "127.0.0.1:50051", lease=lease.id)
    members = Members(etcd, "/pcbook").start()      # live {name: address}, kept by a watch

What builds on it: `Registration` (a server keeps its key alive under a lease) and `Members` (a
client, nginx_sync or the xDS control plane follows the live set).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from pcbook.service.logs import clean

DEFAULT_PREFIX = "/pcbook"
DEFAULT_TIMEOUT = 2.0


class RegistryError(RuntimeError):
    """etcd cannot be reached, or it refused a request."""


@dataclass(frozen=True)
class RegistryUrl:
    """etcd://HOST:PORT[/prefix]: where etcd listens and under which key prefix the servers live."""

    host: str
    port: int
    prefix: str = DEFAULT_PREFIX

    def __str__(self) -> str:
        return f"etcd://{self.host}:{self.port}{self.prefix}"


def parse_url(text: str) -> RegistryUrl:
    """Parse `etcd://127.0.0.1:2379[/prefix]`; ValueError with one clear line when it is not one."""
    parts = urlsplit(text)
    if parts.scheme != "etcd" or not parts.hostname:
        raise ValueError(f"{text!r} is not a registry URL: expected etcd://HOST:PORT[/prefix],"
                         " for example etcd://127.0.0.1:2379/pcbook")
    try:
        port = parts.port or 2379
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number between 1 and 65535") from None
    prefix = parts.path.rstrip("/") or DEFAULT_PREFIX
    return RegistryUrl(parts.hostname, port, prefix)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int  # seconds granted (etcd may round a very short TTL up)


@dataclass(frozen=True)
class Event:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: str  # "" for a DELETE
    revision: int


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode("utf-8", "replace")


def prefix_end(prefix: str) -> bytes:
    """The range_end that makes a range/watch cover every key starting with `prefix`."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # every key
    raw[-1] += 1
    return bytes(raw)


def _kv(raw: dict) -> KeyValue:
    return KeyValue(_unb64(raw.get("key")), _unb64(raw.get("value")), int(raw.get("mod_revision", 0)),
                    int(raw.get("lease", 0)))


class Etcd:
    """One etcd endpoint; every method is one HTTP request (watch: one long-lived one)."""

    def __init__(self, url: RegistryUrl | str, timeout: float = DEFAULT_TIMEOUT):
        self.url = parse_url(url) if isinstance(url, str) else url
        self.timeout = timeout

    def _post(self, path: str, body: dict, timeout: float | None = None) -> dict:
        conn = http.client.HTTPConnection(self.url.host, self.url.port, timeout=timeout or self.timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise RegistryError(f"cannot reach etcd at {self.url.host}:{self.url.port}: {reason}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            raise RegistryError(f"etcd answered {path} with {data[:80]!r}") from None
        if reply.status != 200 or "error" in answer:
            message = answer.get("message") or answer.get("error") or data[:120].decode("utf-8", "replace")
            raise RegistryError(f"etcd refused {path}: {message}")
        return answer.get("result", answer)  # streaming endpoints wrap their one answer in "result"

    def put(self, key: str, value: str, *, lease: int = 0) -> int:
        """Store key=value (attached to `lease` if given); returns the new revision."""
        body: dict = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self._post("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key: str) -> int:
        """Delete one key; returns how many were deleted (0 or 1)."""
        return int(self._post("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def range_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the revision they were read at."""
        answer = self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [_kv(raw) for raw in answer.get("kvs", [])], int(answer["header"]["revision"])

    def grant(self, ttl: int) -> Lease:
        answer = self._post("/v3/lease/grant", {"TTL": int(ttl)})
        return Lease(int(answer["ID"]), int(answer.get("TTL", ttl)))

    def keepalive(self, lease: int) -> int:
        """Renew `lease`; returns its TTL, 0 when etcd no longer has it (expired or revoked)."""
        return int(self._post("/v3/lease/keepalive", {"ID": str(lease)}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        """Revoke `lease`, deleting its keys at once (a lease already gone is not an error)."""
        try:
            self._post("/v3/lease/revoke", {"ID": str(lease)})
        except RegistryError as exc:
            if "not found" not in str(exc):
                raise

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return Watch(self, prefix, start_revision)


class Watch:
    """A streaming watch on a prefix: iterate to get batches of events; close() from any thread."""

    def __init__(self, etcd: Etcd, prefix: str, start_revision: int):
        self._conn = http.client.HTTPConnection(etcd.url.host, etcd.url.port, timeout=etcd.timeout)
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision)}}
        try:
            self._conn.request("POST", "/v3/watch", json.dumps(body), {"Content-Type": "application/json"})
            self._reply = self._conn.getresponse()
            if self._conn.sock is not None:
                self._conn.sock.settimeout(None)  # events may be minutes apart
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise RegistryError(f"cannot watch {prefix} on etcd: {exc}") from None
        self._closed = False

    def __iter__(self) -> Iterator[list[Event]]:
        decoder = json.JSONDecoder()
        buffer = ""
        while not self._closed:
            try:
                chunk = self._reply.read1(65536)
            except Exception:  # noqa: BLE001 - a closed or broken stream, whatever http.client raises
                chunk = b""
            if not chunk:
                if self._closed:
                    return
                raise RegistryError("the watch stream from etcd ended")
            buffer += chunk.decode("utf-8", "replace")
            while True:
                buffer = buffer.lstrip()
                try:
                    message, end = decoder.raw_decode(buffer)
                except ValueError:
                    break  # an incomplete object: read more
                buffer = buffer[end:]
                result = message.get("result", {})
                if "error" in message or result.get("canceled"):
                    raise RegistryError(f"etcd ended the watch: {message}")
                events = result.get("events", [])
                if events:
                    yield [Event(e.get("type", "PUT"), _unb64(e["kv"].get("key")), _unb64(e["kv"].get("value")),
                                 int(e["kv"].get("mod_revision", 0))) for e in events]

    def close(self) -> None:
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread
            except OSError:
                pass
        self._conn.close()


def member_name(prefix: str, key: str) -> str:
    return key[len(prefix) + 1:] if key.startswith(prefix + "/") else key


class Members:
    """The live set under a prefix, {name: value}, kept current by a watch in a background thread.

    A read of the prefix gives the start; the watch then starts at the next revision, so no change
    falls between the two. When etcd cannot be reached the last set is kept and the thread tries
    again (read + watch) every `retry` seconds. `on_change(members)` runs on that thread after
    each change.
    """

    def __init__(self, etcd: Etcd, prefix: str | None = None, *,
                 on_change: Callable[[dict[str, str]], None] | None = None, retry: float = 0.5,
                 on_error: Callable[[str], None] | None = None):
        self.etcd = etcd
        self.prefix = (prefix if prefix is not None else etcd.url.prefix).rstrip("/")
        self.on_change = on_change
        self.on_error = on_error
        self.retry = retry
        self.changes = 0  # how many times the set changed (the first read counts as one)
        self._members: dict[str, str] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._thread = threading.Thread(target=self._loop, name=f"members{self.prefix}", daemon=True)

    def start(self) -> Members:
        self._thread.start()
        return self

    def snapshot(self) -> dict[str, str]:
        with self._cond:
            return dict(self._members)

    def wait(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> dict[str, str]:
        """Block until predicate(members) holds; raise TimeoutError at the deadline."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.changes > 0 and predicate(self._members), timeout):
                raise TimeoutError(f"registry {self.prefix}: still {self._members} after {timeout:g} s")
            return dict(self._members)

    def close(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def __enter__(self) -> Members:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _publish(self, members: dict[str, str]) -> None:
        with self._cond:
            if members == self._members and self.changes:
                return
            self._members = dict(members)
            self.changes += 1
            self._cond.notify_all()
        if self.on_change is not None:
            self.on_change(dict(members))

    def _loop(self) -> None:
        failing = ""
        while not self._stop.is_set():
            try:
                kvs, revision = self.etcd.range_prefix(self.prefix + "/")
                members = {member_name(self.prefix, kv.key): kv.value for kv in kvs}
                self._publish(members)
                self._watch = self.etcd.watch(self.prefix + "/", revision + 1)
                if self._stop.is_set():
                    self._watch.close()
                    return
                failing = ""
                for events in self._watch:
                    for event in events:
                        name = member_name(self.prefix, event.key)
                        if event.kind == "DELETE":
                            members.pop(name, None)
                        else:
                            members[name] = event.value
                    self._publish(dict(members))
            except RegistryError as exc:
                if self._stop.is_set():
                    return
                if str(exc) != failing and self.on_error is not None:
                    self.on_error(f"{exc}; keeping the last set ({len(self._members)} members), retrying")
                failing = str(exc)
            except Exception as exc:  # noqa: BLE001 - no value and no handler may end the watch
                if self._stop.is_set():
                    return
                line = f"the watch stopped on {type(exc).__name__}: {clean(str(exc), 200)}"
                if line != failing and self.on_error is not None:
                    self.on_error(f"{line}; reading the registry again")
                failing = line
            finally:
                if self._watch is not None:
                    self._watch.close()
                    self._watch = None
            self._stop.wait(self.retry)


class Registration:
    """A key kept alive under a lease: a server's `<prefix>/<name> = host:port`.

    A keepalive every ttl/3 s renews the lease; if etcd lost it (etcd restarted, or this process was
    paused past the TTL) the key is put again under a new lease. `close()` revokes the lease, which
    deletes the key at once: watchers see the server leave without waiting for the TTL.
    """

    def __init__(self, etcd: Etcd, key: str, value: str, *, ttl: int = 3,
                 log: Callable[[str], None] = print):
        self.etcd = etcd
        self.key = key
        self.value = value
        self.ttl = ttl
        self.log = log
        self.lease: Lease | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="registration", daemon=True)

    def start(self) -> Lease:
        """Grant a lease and put the key (RegistryError if etcd cannot be reached); then keep it alive."""
        self.lease = self._register()
        self._thread.start()
        return self.lease

    def _register(self) -> Lease:
        lease = self.etcd.grant(self.ttl)
        self.etcd.put(self.key, self.value, lease=lease.id)
        return lease

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(max(0.2, self.ttl / 3)):
            try:
                assert self.lease is not None
                if self.etcd.keepalive(self.lease.id) == 0:
                    self.lease = self._register()
                    self.log(f"etcd had lost the lease; registered {self.key} = {self.value} again"
                             f" (lease {self.lease.id:x})")
                elif failing:
                    self.log(f"etcd is reachable again; lease {self.lease.id:x} kept alive")
                failing = False
            except RegistryError as exc:
                if not failing:
                    self.log(f"cannot renew the lease: {exc}; retrying")
                failing = True

    def close(self, revoke: bool = True) -> float:
        """Stop the keepalives and revoke the lease; returns when etcd has deleted the key (time.time())."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if revoke and self.lease is not None:
            self.etcd.revoke(self.lease.id)
        return time.time()
