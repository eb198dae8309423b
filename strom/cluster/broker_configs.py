"""Dynamic broker configs: /config/brokers/<id> and /config/brokers/<default>.

As Kafka's DynamicBrokerConfig: a broker's effective configuration is its own dynamic
configs over the cluster-wide dynamic default over server.properties over Kafka's defaults
(`BrokerConfig.layers`). Both nodes hold `{"version":1,"config":{...}}` (strings, as Kafka
writes them) and are written through the MetadataStore by whichever broker receives the
AlterConfigs; every broker watches its own node and the default's (as topic configs are
followed), re-reads them on a change and tells its listeners (the replica manager rebuilds
every partition's TopicConfig, so topics without an override follow a new default at once).

Which keys may be set dynamically follows Kafka (`DYNAMIC_KEYS`); the rest are refused as
Kafka refuses them ("Cannot update these configs dynamically").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from strom.cluster import model
from strom.cluster.store import MetadataStore, NodeExistsError, NoNodeError
from strom.config import BROKER_KEYS, TOPIC_SYNONYMS, BrokerConfig, ConfigError, parse_value
from strom.tasks import spawn

log = logging.getLogger(__name__)

# Kafka's dynamically updatable broker configs that strom knows: the first broker synonym
# of each topic config (DynamicLogConfig: log.retention.ms is dynamic, log.retention.hours
# and .minutes are read-only), the cleaner's (LogCleaner), the thread pools', the
# connection quotas' and the producer state's.
DYNAMIC_KEYS: frozenset[str] = frozenset(
    {synonyms[0] for synonyms in TOPIC_SYNONYMS.values()} | {
        "log.cleaner.threads", "log.cleaner.dedupe.buffer.size",
        "log.cleaner.io.buffer.load.factor", "log.cleaner.io.buffer.size",
        "log.cleaner.io.max.bytes.per.second", "log.cleaner.backoff.ms",
        "message.max.bytes",
        "num.io.threads", "num.network.threads", "num.replica.fetchers",
        "num.recovery.threads.per.data.dir",
        "max.connections", "max.connections.per.ip", "max.connections.per.ip.overrides",
        "producer.id.expiration.ms",
    })

# Which of those change the running broker at once (the listeners of DynamicBrokerConfigs
# registered by server/broker.py) and which apply at the next start: docs/configuration.md.


def resource_text(broker: int | None) -> str:
    """The resource as Kafka names it in its error messages."""
    return f"ConfigResource(type=BROKER, name='{'' if broker is None else broker}')"


def validate_broker_configs(broker: int | None, configs: Mapping[str, str | None]
                            ) -> dict[str, Any]:
    """Parse a broker resource's new dynamic configs (all of them, so nothing is
    half-applied); raise ConfigError with Kafka's message for an unknown or read-only key
    or a bad value."""
    prefix = f"Invalid config value for resource {resource_text(broker)}: "
    unknown = sorted(k for k in configs if k not in BROKER_KEYS)
    if unknown:
        raise ConfigError(f"{prefix}Unknown broker configs: {', '.join(unknown)}")
    static = sorted(k for k in configs if k not in DYNAMIC_KEYS)
    if static:
        raise ConfigError(f"{prefix}Cannot update these configs dynamically: "
                          f"Set({', '.join(static)})")
    parsed: dict[str, Any] = {}
    for name, raw in configs.items():
        if raw is None:
            continue
        try:
            parsed[name] = parse_value(BROKER_KEYS[name], raw)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
    return parsed


class DynamicBrokerConfigs:
    """Keeps `config.dynamic_broker` / `config.dynamic_default` equal to the store's nodes."""

    def __init__(self, broker_id: int, store: MetadataStore, config: BrokerConfig) -> None:
        self.broker_id = broker_id
        self.store = store
        self.config = config
        self.listeners: list[Callable[[], None]] = []
        # the stored strings (AlterConfigs works on these)
        self.stored: dict[int | None, dict[str, str]] = {None: {}, broker_id: {}}
        self._reload_pending = False
        self._tasks: set = set()

    async def start(self) -> None:
        await self.reload()
        for broker in (self.broker_id, None):
            self.store.watch_data(model.broker_config_path(broker), self._on_change)

    def on_change(self, callback: Callable[[], None]) -> None:
        self.listeners.append(callback)

    def _on_change(self, _path: str) -> None:
        if self._reload_pending:
            return
        self._reload_pending = True

        async def run() -> None:
            self._reload_pending = False
            await self.reload()

        spawn(run(), "reload dynamic broker configs", self._tasks)

    async def read(self, broker: int | None) -> dict[str, str]:
        node = await self.store.get(model.broker_config_path(broker))
        return model.decode_topic_config(node[0]) if node and node[0] else {}

    async def reload(self) -> None:
        layers: dict[int | None, dict[str, Any]] = {}
        for broker in (self.broker_id, None):
            stored = await self.read(broker)
            self.stored[broker] = stored
            parsed = {}
            for name, raw in stored.items():
                try:
                    parsed.update(validate_broker_configs(broker, {name: raw}))
                except ConfigError as e:
                    log.warning("Ignoring the stored dynamic broker config %s: %s", name, e)
            layers[broker] = parsed
        changed = (layers[self.broker_id] != self.config.dynamic_broker
                   or layers[None] != self.config.dynamic_default)
        self.config.dynamic_broker = layers[self.broker_id]
        self.config.dynamic_default = layers[None]
        if changed:
            log.info("Dynamic broker configs: broker %s, cluster default %s",
                     self.stored[self.broker_id], self.stored[None])
            for callback in self.listeners:
                try:
                    callback()
                except Exception:
                    log.exception("Applying the dynamic broker configs failed")

    async def write(self, broker: int | None, configs: dict[str, str]) -> None:
        """Replace a broker resource's dynamic configs (already validated)."""
        path = model.broker_config_path(broker)
        data = model.encode_topic_config(configs)
        try:
            await self.store.set(path, data)
        except NoNodeError:
            try:
                await self.store.create(path, data)
            except NodeExistsError:
                await self.store.set(path, data)
        if broker in (self.broker_id, None):
            await self.reload()
