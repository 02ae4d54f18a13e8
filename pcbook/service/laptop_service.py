"""LaptopService: the four RPC kinds, with the Go service's rules, statuses and log lines."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import descriptor, message, text_format

from pcbook.pb import laptop_service_pb2 as pb
from pcbook.pb import laptop_service_pb2_grpc as pb_grpc
from pcbook.service.grpc_errors import go_code_name
from pcbook.service.logs import RECEIVED_TEXT, clean, log
from pcbook.service.stores import AlreadyExistsError, ImageStore, LaptopStore, RatingStore

MAX_IMAGE_SIZE = 1 << 20  # 1 MiB


def context_error(context: grpc.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
    """Go's contextError: why the call is over (deadline or cancel), or None if it is still on."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline is exceeded"
    if not context.is_active():
        return grpc.StatusCode.CANCELLED, "request is canceled"
    return None


def _receive(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
    """The stream's next request, None at its end (Go's stream.Recv).

    A client that cancels while the server waits makes grpcio's request iterator raise a bare RpcError,
    or end as if the client had finished sending: either way the call is over, and it is logged as the
    check before the read logs it (not as an unexpected error, nor as "no more data")."""
    try:
        req = next(request_iterator, None)
    except grpc.RpcError:
        _abort_if_done(context)
        raise
    if req is None:  # the end of the stream, or of the call: grpcio ends the iterator on a cancel too
        _abort_if_done(context)
    return req


def _abort_if_done(context: grpc.ServicerContext) -> None:
    err = context_error(context)
    if err is not None:
        log(err[1])
        context.abort(*err)


_FLOATS = (descriptor.FieldDescriptor.TYPE_FLOAT, descriptor.FieldDescriptor.TYPE_DOUBLE)


def non_finite(msg: message.Message, prefix: str = "") -> str | None:
    """The first float field of `msg` (nested messages included) that is NaN or infinite, as
    ``cpu.min_ghz = nan``; None if every number is finite.

    A deliberate difference from the Go service, which stores them: one NaN score would make a
    laptop's average NaN for good, and a NaN price matches no filter.
    """
    for field, value in msg.ListFields():
        name = f"{prefix}{field.name}"
        values = list(value) if field.is_repeated else [value]
        for v in values:
            if field.type in _FLOATS and not math.isfinite(v):
                return f"{name} = {v}"
            if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE and (bad := non_finite(v, f"{name}.")):
                return bad
    return None


MAX_ID = 45  # characters: urn:uuid: and the 36 of a UUID, the longest spelling uuid.UUID takes


def canonical_id(text: str) -> str | None:
    """A laptop id in its one stored form (lower-case, hyphenated), or None if it is not a UUID. Every
    spelling uuid.UUID reads (braces, urn:uuid:, upper case, no hyphens) is the same laptop; a long
    text (uuid.UUID drops any number of hyphens) or one with whitespace is not an id."""
    if len(text) > MAX_ID or not text.isascii() or not text.isprintable() or " " in text:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _fail(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    # Go's logError: every refused call leaves a line in the server's log.
    log(f"rpc error: code = {go_code_name(code)} desc = {message}")
    context.abort(code, message)


class LaptopServicer(pb_grpc.LaptopServiceServicer):
    def __init__(
        self,
        laptop_store: LaptopStore,
        image_store: ImageStore,
        rating_store: RatingStore,
        work_ms: int = 0,
        search_delay_ms: int = 0,
        *,
        work_slots: int = 10,
    ) -> None:
        self.laptop_store = laptop_store
        self.image_store = image_store
        self.rating_store = rating_store
        # Simulated work per CreateLaptop (gives a server a fixed capacity for benchmarks) and per
        # laptop examined by SearchLaptop (makes a cancelled search observable), both default 0.
        self.work_ms = work_ms
        self.search_delay_ms = search_delay_ms
        # The simulated work of at most `work_slots` calls at once: capacity = work_slots / work_ms.
        self._work_slots = threading.BoundedSemaphore(work_slots)

    def CreateLaptop(self, request: pb.CreateLaptopRequest, context: grpc.ServicerContext) -> pb.CreateLaptopResponse:
        laptop = request.laptop
        log(RECEIVED_TEXT + clean(laptop.id))
        if laptop.id:
            canonical = canonical_id(laptop.id)
            if canonical is None:
                _fail(context, grpc.StatusCode.INVALID_ARGUMENT,
                      f"laptop ID is not a valid UUID: {clean(laptop.id)}")
            laptop.id = canonical
        else:
            laptop.id = str(uuid.uuid4())
        bad = non_finite(laptop)
        if bad is not None:
            _fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"laptop has a number that is not finite: {bad}")
        if self.work_ms:
            with self._work_slots:
                time.sleep(self.work_ms / 1000)
        _abort_if_done(context)
        try:
            self.laptop_store.save(laptop)
        except AlreadyExistsError as e:
            _fail(context, grpc.StatusCode.ALREADY_EXISTS, f"cannot save laptop to the store: {e}")
        log(f"saved laptop with id: {laptop.id}")
        return pb.CreateLaptopResponse(id=laptop.id)

    def SearchLaptop(
        self, request: pb.SearchLaptopRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.SearchLaptopResponse]:
        flt = request.filter
        log(f"receive a search-laptop request with filter: {text_format.MessageToString(flt, as_one_line=True)}")
        bad = non_finite(flt)
        if bad is not None:
            _fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"filter has a number that is not finite: {bad}")
        delay = self.search_delay_ms / 1000

        def should_stop() -> bool:
            if delay:
                time.sleep(delay)
            return context_error(context) is not None

        try:
            for laptop in self.laptop_store.search(flt, should_stop):
                yield pb.SearchLaptopResponse(laptop=laptop)
                # Reached once grpcio has sent the message and asks for the next one.
                log(f"sent laptop with id: {laptop.id}")
        finally:
            # Also when grpcio, told of a cancel before it asked for the next laptop, drops this generator
            # (GeneratorExit at the yield): the search ends either way, and the log says why.
            err = context_error(context)
            if err is not None:
                log(f"search stopped: {err[1]}")

    def UploadImage(
        self, request_iterator: Iterator[pb.UploadImageRequest], context: grpc.ServicerContext
    ) -> pb.UploadImageResponse:
        first = _receive(request_iterator, context)
        if first is None:
            _fail(context, grpc.StatusCode.UNKNOWN, "cannot receive image info")
        if first.WhichOneof("data") != "info":
            _fail(context, grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry the image info")
        laptop_id, image_type = first.info.laptop_id, first.info.image_type
        log(f"receive an upload-image request for laptop {clean(laptop_id)} with image type {clean(image_type)}")
        if self.laptop_store.find(canonical_id(laptop_id) or laptop_id) is None:
            _fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"laptop id {clean(laptop_id)} doesn't exist")
        laptop_id = canonical_id(laptop_id) or laptop_id
        chunks: list[bytes] = []
        size = 0
        while True:
            _abort_if_done(context)
            log("waiting to receive more data")
            req = _receive(request_iterator, context)
            if req is None:
                log("no more data")
                break
            chunk = req.chunk_data
            log(f"received a chunk with size: {len(chunk)}")
            size += len(chunk)
            if size > MAX_IMAGE_SIZE:
                _fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"image is too large: {size} > {MAX_IMAGE_SIZE}")
            chunks.append(chunk)
        try:
            image_id = self.image_store.save(laptop_id, image_type, b"".join(chunks))
        except OSError as e:  # the message names the error, never the server's folder
            log(f"cannot save image to {self.image_store.folder}: {e.strerror}")
            _fail(context, grpc.StatusCode.INTERNAL, f"cannot save image to the store: {e.strerror or 'I/O error'}")
        log(f"saved image with id: {image_id}, size: {size}")
        return pb.UploadImageResponse(id=image_id, size=size)

    def RateLaptop(
        self, request_iterator: Iterator[pb.RateLaptopRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.RateLaptopResponse]:
        while True:
            _abort_if_done(context)
            req = _receive(request_iterator, context)
            if req is None:
                log("no more data")
                return
            log(f"received a rate-laptop request: id = {clean(req.laptop_id)}, score = {req.score:.2f}")
            if not math.isfinite(req.score):
                _fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"score must be a finite number, not {req.score}")
            laptop_id = canonical_id(req.laptop_id)
            if laptop_id is None or self.laptop_store.find(laptop_id) is None:
                _fail(context, grpc.StatusCode.NOT_FOUND, f"laptopID {clean(req.laptop_id)} is not found")
            rating = self.rating_store.add(laptop_id, req.score)
            yield pb.RateLaptopResponse(laptop_id=laptop_id, rated_count=rating.count, average_score=rating.average)
