"""A client on a SASL listener that never completes authentication, sending a byte now and
then (so the idle timer alone would never fire), is closed after connections.max.idle.ms
with a log line naming it; authenticated clients on the same broker are not affected."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from strom.testing.broker import BrokerProcess
from strom.testing.security import SecureListeners
from strom.testing.wire import KafkaSocket, Reader, nbytes, request, string

pytestmark = pytest.mark.timeout(120)

HANDSHAKE, AUTHENTICATE = 17, 36
IDLE_MS = 3000


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    listeners = SecureListeners.make(tmp_path_factory.mktemp("certs"))
    overrides = listeners.overrides()
    overrides["connections.max.idle.ms"] = str(IDLE_MS)
    broker = BrokerProcess(overrides=overrides, port=listeners.plaintext)
    broker.start()
    try:
        yield listeners, broker
    finally:
        broker.close()


def test_slow_sasl_client_is_closed(secure):
    listeners, broker = secure
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:
        r = Reader(s.roundtrip(request(HANDSHAKE, 1, 1, string("PLAIN"))))
        assert r.i32() == 1 and r.i16() == 0
        frame = request(AUTHENTICATE, 1, 2, nbytes(b"\0alice\0alice-secret"))
        closed = False
        for byte in frame[:-1]:  # a byte a second, never the whole frame (~30 s)
            try:
                s.send(bytes([byte]))
            except OSError:
                closed = True
                break
            if s.wait_closed(timeout=1.0):
                closed = True
                break
        assert closed
    assert "SASL authentication not completed within connections.max.idle.ms" in \
        broker.log_text()
    conf = listeners.confluent("SASL_PLAINTEXT", "PLAIN")
    assert AdminClient(conf).list_topics(timeout=30).brokers
