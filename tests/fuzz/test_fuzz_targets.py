"""The short, seeded fuzz run (targets in strom.testing.fuzz; the long run is bench/fuzz.py).

Derandomized hypothesis, no example database, no deadline: the same inputs on every run,
so a failure here is a regression, not luck. Budget: well under two minutes on 2 cores.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom.protocol import bounds, messages
from strom.testing import fuzz

pytestmark = pytest.mark.timeout(300)

SETTINGS = dict(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = fuzz.DispatchHarness(str(tmp_path_factory.mktemp("fuzz-broker")))
    yield h
    h.close()


SEEDS = fuzz.request_seeds()
API_KEYS = sorted({k for k, _v, _f in SEEDS})


def test_every_served_version_has_a_valid_seed_that_is_answered(harness):
    assert len(SEEDS) == len(fuzz.served_versions())
    for _key, _version, frame in SEEDS:
        assert harness.run(frame) in ("response", "none", "waited")


@pytest.mark.parametrize("api_key", API_KEYS, ids=messages.api_name)
def test_dispatch_mutated_requests(harness, api_key):
    seeds = [f for k, _v, f in SEEDS if k == api_key]

    @settings(max_examples=80, **SETTINGS)
    @given(st.sampled_from(seeds), st.binary(min_size=3, max_size=24))
    def run(seed, ops):
        # mutate the body, keeping the header's api key and version most of the time
        frame = seed[:4] + fuzz.mutate(seed[4:], ops) if ops[0] % 4 else fuzz.mutate(seed, ops)
        harness.run(frame)

    run()


@pytest.mark.parametrize("api_key", [k for k in API_KEYS if k not in fuzz.MAY_WAIT and k != 0],
                         ids=messages.api_name)
def test_dispatch_generated_requests(harness, api_key):
    versions = [v for k, v, _f in SEEDS if k == api_key]

    @settings(max_examples=15, **SETTINGS)
    @given(st.data())
    def run(data):
        version = data.draw(st.sampled_from(versions))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            request = data.draw(st.from_type(messages.request_schema(api_key, version)))
        frame = messages.encode_request(3, "fuzz", request)[4:]
        bounds.check_request(frame, type(request))  # never refuses a valid request
        harness.run(frame)

    run()


@settings(max_examples=1000, **SETTINGS)
@given(st.binary(max_size=2), st.lists(st.sampled_from([f for _k, _v, f in SEEDS]), max_size=4),
       st.binary(max_size=30))
def test_framing(chunking, frames, ops):
    stream = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    fuzz.framing_target((chunking or b"\0")[:1] + fuzz.mutate(stream, ops))


BATCHES = fuzz.batch_seeds()


@settings(max_examples=1000, **SETTINGS)
@given(st.integers(0, 255), st.sampled_from(BATCHES), st.binary(max_size=30))
def test_batch_validation(config, batch, ops):
    fuzz.batch_target(bytes([config]) + fuzz.mutate(batch, ops))


@settings(max_examples=250, **SETTINGS)
@given(st.binary(min_size=1, max_size=33))
def test_segment_recovery(data):
    fuzz.recovery_target(data)

