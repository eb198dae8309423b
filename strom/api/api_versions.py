"""ApiVersions (key 18), versions 0-4.

Behaviour: lists every registered API with the versions it serves. Always answered with
response header v0 (kio's schema says so). A request at a version above 4 is answered by
the dispatcher with a v0 body: UNSUPPORTED_VERSION plus the full list, as Kafka does, so
the client can retry at a version it shares with us.
Version notes: v3+ carries client software name/version (logged at debug) and answers the
broker's features (tagged fields): `transaction.version`, supported 0-2 and finalized at
level 2 as a Kafka 4.0 cluster formatted with its defaults, so Transactions V2 clients
(KIP-890 part 2) use EndTxn v5 and Produce v12 (librdkafka 2.0.2 in kcat and 2.16,
kafka-python and aiokafka read past them).
"""

from __future__ import annotations

from strom.api.context import RequestContext
from strom.api.registry import HANDLERS, register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 18


# Kafka's feature name, the levels this broker supports, and the level it runs at
TRANSACTION_VERSION = "transaction.version"
TRANSACTION_VERSION_SUPPORTED = (0, 2)
TRANSACTION_VERSION_FINALIZED = 2
FINALIZED_FEATURES_EPOCH = 1  # the levels never change while a broker runs


def build_response(version: int, error: ErrorCode = ErrorCode.none):
    mod = response_module(API_KEY, version)
    keys = tuple(make(mod.ApiVersion, api_key=s.api_key, min_version=s.min_version,
                      max_version=s.max_version)
                 for s in sorted(HANDLERS.values(), key=lambda s: s.api_key))
    extra = {}
    if version >= 3:
        low, high = TRANSACTION_VERSION_SUPPORTED
        extra = {
            "supported_features": (make(mod.SupportedFeatureKey, name=TRANSACTION_VERSION,
                                        min_version=low, max_version=high),),
            "finalized_features_epoch": FINALIZED_FEATURES_EPOCH,
            "finalized_features": (make(
                mod.FinalizedFeatureKey, name=TRANSACTION_VERSION,
                min_version_level=TRANSACTION_VERSION_FINALIZED,
                max_version_level=TRANSACTION_VERSION_FINALIZED),)}
    return make(response_schema(API_KEY, version), error_code=error, api_keys=keys, **extra)


@register(API_KEY, "api_versions", 0, 4)
async def handle(ctx: RequestContext, request):
    return build_response(ctx.version)
