"""Dispatcher: one request frame in, one response (or none) out.

Two channels for errors, as in Kafka: business failures are error codes inside responses
(the handlers' job); protocol violations (a frame that does not parse, an unknown API key,
a version we do not serve) close the connection. ApiVersions at a version we do not serve
is the exception: it gets a v0 response with UNSUPPORTED_VERSION and our version ranges.
Unexpected exceptions are logged here, once, and close the connection.

Client quotas (strom.security.quotas): handlers record their bytes (Produce, Fetch) and
report a throttle time through `RequestContext.throttled`; with a request_percentage quota
the handler's own time on the loop is measured (`_timed`) and recorded here. The largest
throttle time goes into the response's throttle_time_ms and to the connection, which then
reads nothing for that long.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
import types
from collections.abc import Callable
from typing import Any

from strom.api.api_versions import build_response as api_versions_response
from strom.api.context import BrokerServices, RequestContext
from strom.api.fast_path import FastPath, ParkedFetch
from strom.api.fetch import RawResponse
from strom.api.produce import NO_RESPONSE
from strom.api.registry import CloseConnection as HandlerClose
from strom.api.registry import load_all
from strom.metrics.stats import ApiStats, RequestStats
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import (
    MalformedRequest,
    RequestHeader,
    encode_response,
    parse_request,
    peek_header,
)
from strom.security.quotas import REQUEST

log = logging.getLogger(__name__)

API_VERSIONS = 18
PRODUCE, FETCH = 0, 1


class CloseConnection(Exception):
    """The request was a protocol violation; the reason is logged by the connection."""


class Dispatcher:
    def __init__(self, services: BrokerServices, stats: RequestStats | None = None) -> None:
        self.services = services
        self.handlers = load_all()
        # Kafka's RequestMetrics when the metrics endpoint is on: requests by version and
        # their total time from parse to response (waits for acks=all and min_bytes too)
        self.stats = stats
        self._api_stats = {key: stats.api(key, _request_name(spec.name), spec.max_version)
                           for key, spec in self.handlers.items()} if stats else {}
        self._now = services.clock.monotonic
        # the commonest Produce and Fetch requests, read straight from the frame
        # (strom.api.fast_path)
        self.fast_path: FastPath | None = FastPath(services)

    async def dispatch(self, frame: bytes, client: str, client_host: str, listener: str,
                       appended: Callable[[], None] | None = None,
                       principal: str = "User:ANONYMOUS",
                       throttled: Callable[[int], None] | None = None
                       ) -> bytes | RawResponse | None:
        """The response to `frame` (None: none is sent). `appended` is called by an acks=all
        Produce once its records are appended (see RequestContext.appended); `principal`
        is the authenticated client (see RequestContext.principal); `throttled` is called
        with a throttle time (ms) when the client is over a quota."""
        try:
            api_key, version, correlation_id = peek_header(frame)
        except MalformedRequest as e:
            raise CloseConnection(str(e)) from None
        spec = self.handlers.get(api_key)
        if spec is None:
            raise CloseConnection(f"unknown API key {api_key}")
        if not spec.min_parsed <= version <= spec.max_version:
            if api_key == API_VERSIONS:
                return encode_response(correlation_id, api_versions_response(
                    0, ErrorCode.unsupported_version))
            raise CloseConnection(f"unsupported version {version} of {spec.name} "
                                  f"(served: {spec.min_parsed}-{spec.max_version})")
        fast = self.fast_path
        if fast is not None and api_key <= FETCH and fast.applies():
            api_stats = self._api_stats.get(api_key)
            started = self._now() if api_stats is not None else 0.0
            if api_key == PRODUCE:
                answer = fast.produce(frame)
                if answer is not None:
                    if api_stats is not None:
                        self._record(api_stats, version, api_key, False, started)
                    return None if answer is NO_RESPONSE else answer
            else:
                read = fast.fetch_request(frame)
                if read is not None:
                    try:
                        return await fast.fetch(*read)
                    except Exception:
                        log.exception("Unexpected error handling %s v%d (correlation id %d) "
                                      "from %s", spec.name, version, correlation_id, client)
                        raise CloseConnection("unexpected server error") from None
                    finally:
                        if api_stats is not None:  # a consumer's, as the fast path reads
                            self._record(api_stats, version, api_key, False, started)
        try:
            header, body = parse_request(frame)
        except MalformedRequest as e:
            log.debug("Malformed frame from %s: %s", client, frame[:256].hex())
            raise CloseConnection(f"malformed request: {e}") from None
        quotas = self.services.quotas
        throttles: list[int] = []
        ctx = RequestContext(header, self.services, client_host, listener, appended,
                             principal, throttles.append if quotas is not None else None)
        api_stats = self._api_stats.get(api_key)
        started = self._now() if api_stats is not None else 0.0
        try:
            client_id = header.client_id or ""
            if quotas is not None and quotas.bound(REQUEST, principal, client_id):
                busy = [0.0]
                response: Any = await _timed(spec.handler(ctx, body), busy)
                throttles.append(quotas.record(REQUEST, principal, client_id, busy[0] * 100))
            else:
                response = await spec.handler(ctx, body)
            throttle_ms = max(throttles, default=0)
            if throttle_ms > 0:
                if throttled is not None:
                    throttled(throttle_ms)
                response = _with_throttle(response, throttle_ms)
            if response is NO_RESPONSE:
                return None
            if isinstance(response, (RawResponse, bytes)):  # framed by the handler already
                return response
            return encode_response(correlation_id, response)
        except HandlerClose as e:
            raise CloseConnection(str(e)) from None
        except Exception:
            log.exception("Unexpected error handling %s v%d (correlation id %d) from %s",
                          spec.name, version, correlation_id, client)
            raise CloseConnection("unexpected server error") from None
        finally:
            if api_stats is not None:
                self._record(api_stats, version, api_key, api_key == FETCH and (
                    body.replica_state.replica_id if version >= 15 else body.replica_id) >= 0,
                    started)

    def produce_at_once(self, frame: bytes | bytearray) -> bytes | object | None:
        """A Produce the fast path answers without waiting for anything (strom.api.fast_path):
        its answer, or NO_RESPONSE for acks=0; None for any other frame, with nothing done
        (then `dispatch` serves it as usual). For the connection, which calls it as the
        frame arrives when nothing else of the client's is in progress."""
        version = self._at_once_version(frame, PRODUCE)
        if version is None:
            return None
        fast = self.fast_path
        api_stats = self._api_stats.get(PRODUCE)
        started = self._now() if api_stats is not None else 0.0
        answer = fast.produce(frame)
        if answer is not None and api_stats is not None:
            self._record(api_stats, version, PRODUCE, False, started)
        return answer

    def fetch_at_once(self, frame: bytes | bytearray,
                      answer: Callable[[RawResponse | None], None]
                      ) -> ParkedFetch | RawResponse | None:
        """A consumer's Fetch the fast path serves without a task, as it arrives
        (strom.api.fast_path.FastPath.serve_at_once): its answer when it has one now, else
        the fetch parked, and `answer` is called with its answer (None: an unexpected error,
        logged; the connection is to close) by the append that wakes it or by its max
        wait's timer. None for any other frame, with nothing done (then `dispatch` serves
        it as usual). An unexpected error is raised."""
        version = self._at_once_version(frame, FETCH)
        if version is None:
            return None
        fast = self.fast_path
        read = fast.fetch_request(frame)
        if read is None:
            return None
        api_stats = self._api_stats.get(FETCH)
        if api_stats is None:
            return fast.serve_at_once(read, answer)
        started = self._now()
        respond = answer

        def answer(response: RawResponse | None) -> None:
            self._record(api_stats, version, FETCH, False, started)
            respond(response)
        served = fast.serve_at_once(read, answer)
        if not isinstance(served, ParkedFetch):
            self._record(api_stats, version, FETCH, False, started)
        return served

    def _at_once_version(self, frame: bytes | bytearray, api_key: int) -> int | None:
        """The version of a frame of `api_key` that the fast path may take as it arrives
        (one `dispatch` serves, with a fast path that applies), else None."""
        fast = self.fast_path
        if fast is None or len(frame) < 8 or frame[0] != 0 or frame[1] != api_key or \
                not fast.applies():
            return None
        spec = self.handlers.get(api_key)
        version = frame[2] << 8 | frame[3]
        if spec is None or not spec.min_parsed <= version <= spec.max_version:
            return None
        return version

    def _record(self, api_stats: ApiStats, version: int, api_key: int, follower: bool,
                started: float) -> None:
        """Kafka's RequestMetrics of one request: its count by version, its total time
        (a Fetch's under FetchFollower when a follower sent it, else FetchConsumer)."""
        api_stats.versions[version] += 1
        ms = (self._now() - started) * 1000.0
        if api_key != FETCH:
            api_stats.latency.record(ms)
        else:  # timed once, under FetchFollower or FetchConsumer (Fetch is their sum)
            assert self.stats is not None
            (self.stats.fetch_follower if follower else self.stats.fetch_consumer).record(ms)


def _request_name(name: str) -> str:
    """Kafka's name of an API in its request metrics: list_offsets -> ListOffsets."""
    return "".join(part.capitalize() for part in name.split("_"))


@types.coroutine
def _timed(coro, busy: list[float]):
    """Run `coro`, adding to busy[0] the seconds its steps ran on the loop (not the time
    it waited): a request's share of the loop, for request_percentage."""
    value: Any = None
    failure: BaseException | None = None
    while True:
        started = time.perf_counter()
        try:
            step = coro.throw(failure) if failure is not None else coro.send(value)
        except StopIteration as done:
            busy[0] += time.perf_counter() - started
            return done.value
        except BaseException:
            busy[0] += time.perf_counter() - started
            raise
        busy[0] += time.perf_counter() - started
        try:
            value, failure = (yield step), None
        except BaseException as e:  # noqa: BLE001 - handed to the coroutine, as await does
            value, failure = None, e


def _with_throttle(response: Any, throttle_ms: int) -> Any:
    """A response entity with throttle_time_ms raised to `throttle_ms` (framed responses
    keep theirs: the handler set it)."""
    if response is NO_RESPONSE or isinstance(response, (RawResponse, bytes)) or \
            not hasattr(response, "throttle_time"):
        return response
    wanted = datetime.timedelta(milliseconds=throttle_ms)
    if response.throttle_time >= wanted:
        return response
    return dataclasses.replace(response, throttle_time=wanted)


__all__ = ["CloseConnection", "Dispatcher", "RequestHeader"]
