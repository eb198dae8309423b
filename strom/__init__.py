"""strom: a Kafka-compatible event streaming platform.

`from strom import EmbeddedBroker` (or `EmbeddedCluster`) gives a real broker inside a Python
program (strom.testing.embedded). They are imported on first use, so `import strom` stays
as cheap as before for the broker and the CLI.
"""

__version__ = "0.1.0"

_LAZY = {
    "EmbeddedBroker": "strom.testing.embedded",
    "EmbeddedBrokerError": "strom.testing.embedded",
    "EmbeddedCluster": "strom.testing.embedded",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'strom' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
