"""SCRAM credentials in the metadata store, at Kafka's path and in Kafka's form:

    /config/users/<user>   {"version":1,"config":{"SCRAM-SHA-256":"salt=..,stored_key=..,
                                                   server_key=..,iterations=4096"}}

The same znode holds the user's client quotas (`producer_byte_rate`, ...): a change of
credentials rewrites only the SCRAM keys, by compare-and-set, and keeps every other key.
Credentials are read from the store at each authentication, so a change applies to the next
login on every broker, with no cache to follow."""

from __future__ import annotations

import json
from urllib.parse import quote

from strom.cluster.store import BadVersionError, MetadataStore, NodeExistsError
from strom.security.scram import HASHES, ScramCredential

USER_CONFIGS = "/config/users"


def user_path(user: str) -> str:
    # Kafka's Sanitizer: URL-encoding, so a user name is one znode
    return f"{USER_CONFIGS}/{quote(user, safe='')}"


class ScramCredentials:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def _read(self, user: str) -> tuple[dict[str, str], int]:
        node = await self.store.get(user_path(user))
        if node is None:
            return {}, -1
        try:
            return dict(json.loads(node[0]).get("config", {})), node[1]
        except (ValueError, AttributeError):
            return {}, node[1]

    async def lookup(self, user: str, mechanism: str) -> ScramCredential | None:
        text = (await self._read(user))[0].get(mechanism)
        if text is None:
            return None
        try:
            return ScramCredential.from_text(text)
        except ValueError:
            return None

    async def describe(self, user: str) -> dict[str, int]:
        """mechanism -> iterations of the user's credentials."""
        configs = (await self._read(user))[0]
        out = {}
        for mechanism in HASHES:
            if mechanism in configs:
                try:
                    out[mechanism] = ScramCredential.from_text(configs[mechanism]).iterations
                except ValueError:
                    continue
        return out

    async def users(self) -> list[str]:
        from urllib.parse import unquote

        names = [unquote(n) for n in await self.store.get_children(USER_CONFIGS)]
        return [n for n in names if await self.describe(n)]

    async def alter(self, user: str, upserts: dict[str, ScramCredential],
                    deletions: set[str]) -> None:
        """Set and remove credentials of one user (compare-and-set, retried on a race)."""
        path = user_path(user)
        while True:
            configs, version = await self._read(user)
            for mechanism in deletions:
                configs.pop(mechanism, None)
            for mechanism, credential in upserts.items():
                configs[mechanism] = credential.to_text()
            data = json.dumps({"version": 1, "config": configs}).encode()
            try:
                if version < 0:
                    await self.store.create(path, data)
                else:
                    await self.store.set(path, data, version)
                return
            except (BadVersionError, NodeExistsError):
                continue
