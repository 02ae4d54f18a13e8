"""A client that goes away mid-search stops the server's work."""

from __future__ import annotations

import grpc

from pcbook.pb import filter_message_pb2, laptop_service_pb2_grpc
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.service import laptop_client

LAPTOPS = 20


def test_cancelled_search_stops_server_work(start_server) -> None:  # type: ignore[no-untyped-def]
    # 50 ms of simulated work per laptop examined: the whole search would take a second.
    srv = start_server("--search-delay-ms", "50")
    with laptop_client.connect(f"127.0.0.1:{srv.port}", quiet=True) as conn:
        for _ in range(LAPTOPS):
            conn.laptops.create_laptop()
    start = len(srv.lines)
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = laptop_service_pb2_grpc.LaptopServiceStub(ch)
        call = stub.SearchLaptop(pb.SearchLaptopRequest(filter=filter_message_pb2.Filter(max_price_usd=1e9)))
        first = next(call)
        assert first.laptop.id
        call.cancel()
    srv.wait_for_line(r"search stopped: request is canceled", start=start)
    sent = [line for line in srv.lines[start:] if "sent laptop with id: " in line]
    assert len(sent) < LAPTOPS // 2, "\n".join(srv.lines[start:])
