"""Every use of a private name of Faust, mode or aiokafka, fenced in one place and checked at start-up.

Written against faust-streaming 0.15.3, mode-streaming 0.7.1 and aiokafka 0.14.0 (pinned in
``pyproject.toml``). A private name can be renamed or removed in any release, and then an override
becomes a silent no-op or an ``AttributeError`` deep inside a rebalance. So :data:`OVERRIDES` lists
each one with what it expects (the parameters of a method, or the function whose source assigns an
instance attribute), and :func:`check` - called by ``streams.wiring.create`` before a worker starts -
stops with a :class:`FaustPatchError` naming the first one that no longer holds.

The modules here:

- :mod:`.transport`: the worker consumer's fetch wait (``AIOKafkaConsumer._fetch_max_wait_ms``,
  hard-coded to 1500 ms by Faust);
- :mod:`.recovery`: table recovery reading each changelog's real end (``Recovery._build_highwaters``,
  ``TableManager._recovery``);
- :mod:`.internals`: the current event of a batch (``faust.streams._current_event``), the RocksDB
  databases of a table (``Store._dbs_for_actives``, ``Store._db_for_partition``), and the aiokafka
  producer behind Faust's (``Producer._ensure_producer``, ``AIOKafkaProducer._partition``).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from ...errors import StreamRecError

WRITTEN_AGAINST = "faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0"


class FaustPatchError(StreamRecError):
    """A private Faust/mode/aiokafka name that StreamRec overrides or reads is gone or changed."""


@dataclass(frozen=True)
class Override:
    """One private name: ``owner`` (``module`` or ``module:Class``) and ``name`` on it.

    ``params``: the parameter names a method must have (None: not checked). ``assigned_in``: for an
    instance attribute, the method of ``owner`` whose source must assign ``self.<name>``.
    ``kind``: what the attribute must be (checked with isinstance), for module attributes."""

    owner: str
    name: str
    used_by: str
    params: tuple[str, ...] | None = None
    assigned_in: str | None = None
    kind: str | None = None

    def __str__(self) -> str:
        return f"{self.owner}.{self.name}"

    def resolve_owner(self):
        module_name, _, cls_name = self.owner.partition(":")
        obj = importlib.import_module(module_name)
        for part in filter(None, cls_name.split(".")):
            obj = getattr(obj, part)
        return obj

    def problem(self) -> str | None:
        """Why this override no longer holds, or None."""
        try:
            owner = self.resolve_owner()
        except (ImportError, AttributeError) as exc:
            return f"{self.owner} cannot be imported: {exc}"
        if self.assigned_in is not None:
            method = getattr(owner, self.assigned_in, None)
            if method is None:
                return f"{self.owner}.{self.assigned_in} no longer exists"
            try:
                source = inspect.getsource(method)
            except (OSError, TypeError):
                return f"the source of {self.owner}.{self.assigned_in} cannot be read"
            if f"self.{self.name}" not in source:
                return f"{self.owner}.{self.assigned_in} no longer sets self.{self.name}"
            return None
        if not hasattr(owner, self.name):
            return f"{self} no longer exists"
        value = getattr(owner, self.name)
        if self.kind is not None and type(value).__name__ != self.kind:
            return f"{self} is a {type(value).__name__}, expected a {self.kind}"
        if self.params is not None:
            try:
                have = tuple(inspect.signature(value).parameters)
            except (TypeError, ValueError):
                return f"{self} is not a function"
            if have != self.params:
                return f"{self} takes ({', '.join(have)}), expected ({', '.join(self.params)})"
        return None


_AIOKAFKA_DRIVER = "faust.transport.drivers.aiokafka"

OVERRIDES: tuple[Override, ...] = (
    Override("aiokafka:AIOKafkaConsumer", "_fetch_max_wait_ms", "transport: the worker's fetch wait",
             assigned_in="__init__"),
    Override(f"{_AIOKAFKA_DRIVER}:AIOKafkaConsumerThread", "_create_worker_consumer",
             "transport: the worker's fetch wait", params=("self", "transport")),
    Override(f"{_AIOKAFKA_DRIVER}:Consumer", "_new_consumer_thread", "transport: the worker's fetch wait",
             params=("self",)),
    Override("faust.tables.recovery:Recovery", "_build_highwaters", "recovery: changelog ends",
             params=("self", "consumer", "tps", "destination", "title")),
    Override("faust.tables.recovery:Recovery", "_highwater_logtable", "recovery: changelog ends",
             params=("self", "highwaters", "title")),
    Override("faust.tables.manager:TableManager", "_recovery", "recovery: changelog ends",
             assigned_in="__init__"),
    Override("faust.streams", "_current_event", "ingest: batches of current events", kind="ContextVar"),
    Override("faust.stores.rocksdb:Store", "_dbs_for_actives", "table sizes (RocksDB estimates)",
             params=("self",)),
    Override("faust.stores.rocksdb:Store", "_db_for_partition", "co-visitation restored from user states",
             params=("self", "partition")),
    Override(f"{_AIOKAFKA_DRIVER}:Producer", "_ensure_producer", "direct writes: the aiokafka producer",
             params=("self",)),
    Override("aiokafka:AIOKafkaProducer", "_partition", "direct writes: the partitioner",
             params=("self", "topic", "partition", "key", "value", "serialized_key", "serialized_value")),
)


def check(overrides: tuple[Override, ...] = OVERRIDES) -> None:
    """Raise :class:`FaustPatchError` naming the first override that no longer holds."""
    for override in overrides:
        problem = override.problem()
        if problem is not None:
            raise FaustPatchError(
                f"private name {override} (used by {override.used_by}) does not match the version "
                f"installed: {problem}. StreamRec was written against {WRITTEN_AGAINST}; install "
                f"those versions (pyproject.toml pins them) or update streams/kafka/faust_patches.")
