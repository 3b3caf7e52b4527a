"""One frozen, typed settings object for the whole stream side.

Values come from, in order of priority: command-line flags (``--http-port 8080``), then
``STREAMREC_*`` environment variables (``STREAMREC_HTTP_PORT=8080``), then the defaults below.
An unknown ``STREAMREC_*`` variable or an invalid value is a :class:`SettingsError` whose message
names the variable, never a silent fallback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import StreamRecError

ENV_PREFIX = "STREAMREC_"
EMBEDDED = "embedded"


class SettingsError(StreamRecError, ValueError):
    """A setting is unknown or invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # --- Kafka -------------------------------------------------------------------------------
    bootstrap_servers: str = Field(EMBEDDED, description="Kafka bootstrap servers (host:port[,host:port]) or "
                                   "'embedded' to start the development broker (Tansu, memory-only) on 127.0.0.1:broker_port.")
    broker_port: int = Field(9092, ge=1, le=65535, description="Port of the embedded broker.")
    app_id: str = Field("streamrec", min_length=1, description="Faust app id = consumer group.")
    topic_events: str = Field("events", min_length=1, description="Input events topic.")
    topic_dlq: str = Field("events.dlq", min_length=1, description="Dead-letter topic.")
    topic_suspect: str = Field(
        "events.suspect", min_length=1,
        description="Valid events held back as suspect (a user over the rate limit, or quarantined as "
        "suspicious), with the reason and the original bytes, in the dead-letter record format.")
    topic_recommendations: str = Field("recommendations", min_length=1, description="Output topic.")
    topic_model_updates: str = Field(
        "model-updates", min_length=1, description="Compacted topic announcing model versions."
    )
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of the topics StreamRec creates.")
    replication_factor: int = Field(1, ge=1, le=16, description="Replication of created topics.")
    session_timeout_s: float = Field(6.0, gt=0, description="Consumer group session timeout.")
    rebalance_timeout_s: float = Field(4.0, gt=0, description="Consumer group rebalance timeout.")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str = Field("", description="SASL user name.")
    sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL / SASL_SSL.")
    ssl_certfile: Path | None = Field(None, description="Client certificate for SSL.")
    ssl_keyfile: Path | None = Field(None, description="Client key for SSL.")

    # --- Processing --------------------------------------------------------------------------
    seq_len: int = Field(50, ge=1, le=10_000, description="Items kept per user (most recent).")
    dedupe_window: int = Field(
        256, ge=1, le=100_000,
        description="Recent event_ids remembered per user; a replay within it is applied once.",
    )
    top_k: int = Field(10, ge=1, le=1000, description="Recommendations per record.")
    max_message_bytes: int = Field(
        65_536, ge=64, le=16 * 1024 * 1024, description="Larger input messages go to the DLQ."
    )
    max_future_s: float = Field(86_400.0, ge=0, description="Reject events this far in the future.")
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=60_000, description="Longest wait of the worker consumer's fetch for new records "
        "(Faust hard-codes 1500; the embedded broker always waits it out when it has nothing new).",
    )
    producer_linger_s: float = Field(
        0.005, ge=0, le=1, description="How long the worker's producer waits to fill a batch (Faust "
        "producer_linger). Kafka's default 0 sends one produce request per record under load.",
    )
    ingest_batch_size: int = Field(
        500, ge=1, le=100_000, description="Most events the ingest agent takes at a time; their changelog "
        "records go out together (one per user, one batch per partition) before the events are acknowledged.",
    )
    ingest_batch_window_s: float = Field(
        0.005, gt=0, le=10, description="Longest wait to fill an ingest batch: what has arrived by then is "
        "handled (adds at most this to an event's latency).",
    )
    batch_size: int = Field(256, ge=1, le=100_000, description="Users per recommendation micro-batch.")
    batch_window_s: float = Field(
        0.01, ge=0, le=60, description="Longest wait to fill a micro-batch (0: a batch is what has queued "
        "up while the previous one was served). 10 ms: at 1,000 events/s the worker spent 20-30 percent less CPU "
        "per event than with 0 (encoding and search cost less per user in larger batches; BENCHMARKS.md, "
        "cost), for ~5-10 ms more latency.",
    )
    popularity_half_life_s: float = Field(
        3600.0, gt=0, description="Half-life of the decayed item popularity."
    )
    popularity_capacity: int = Field(
        2000, ge=10, le=1_000_000, description="Items tracked per partition for popularity."
    )
    store: Literal["rocksdb", "memory"] = Field("rocksdb", description="Faust table store.")
    data_dir: Path = Field(Path("./var"), description="Table state (RocksDB) and model store.")
    rocksdb_write_buffer_mb: int = Field(8, ge=1, le=1024, description="RocksDB memtable size per table "
                                         "partition (2 of them at most; all flushed at half of rocksdb_memory_mb).")
    rocksdb_memory_mb: int = Field(
        64, ge=8, le=65_536, description="RocksDB memory of the whole worker: one block cache shared by "
        "every table partition, the memtables charged to it (streams/kafka/table_store.py).",
    )
    gil_switch_interval_ms: float = Field(
        0.5, gt=0, le=100, description="Python's thread switch interval in the worker (Python's default: "
        "5 ms). Serving waits up to this long for the GIL each time a torch or FAISS call returns while "
        "the event loop runs.",
    )
    malloc_mmap_threshold_kb: int = Field(
        128, ge=0, le=32_768, description="glibc malloc: blocks of at least this size get their own mmap "
        "and go back to the OS when freed (0 = glibc's rising default, under which the worker's heap "
        "fragments and its RSS grows; streams/tuning.py).",
    )
    recovery_consistency_check: bool = Field(
        True, description="Faust's check, in table recovery, that a persisted changelog offset is not "
        "past the changelog's end (else the worker stops with ConsistencyError: the broker lost records "
        "that the table state holds). Recovery reads each changelog's end from its records "
        "(streams/kafka/recovery.py), so the check holds on Tansu too, whose reported end offsets are short.",
    )

    # --- Live model (see streams/serving/live_model.py) ---------------------------------------------
    model_checkpoint: Path | None = Field(
        None, description="Pretrained checkpoint to serve first; none: learn from scratch, "
        "serve popularity until the first version.",
    )
    torch_threads: int = Field(
        1, ge=1, le=256,
        description="Intra-op CPU threads of torch in a worker. 1 by default: small serving batches "
        "run ~100x slower when torch's thread pool competes with the event loop for the cores.",
    )
    index_exact_below: int = Field(
        20_000, ge=0, description="Catalogues of fewer items are searched exactly (FAISS flat); larger ones "
        "through IVF with nprobe tuned to recall@10 >= 0.95, which costs about a tenth per query at 75k items "
        "(exact search was most of the worker's CPU per event there: BENCHMARKS.md, cost).",
    )
    train_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the continuous trainer "
        "trains (auto: CUDA when torch sees a device). Serving's encoders stay on the CPU either way.")
    index_backend: Literal["auto", "faiss", "torch"] = Field("auto", description="Item index search: faiss (CPU, "
        "or GPU with faiss-gpu), torch (exact, on CUDA when there is one), auto: torch on CUDA without FAISS GPU.")
    purchase_weight: float = Field(
        0.0, ge=0.0, le=1.0, description="Rank by (1 - w) x the next-item score + w x the next-purchase score "
        "of the purchase heads (a checkpoint fine-tuned with streamrec finetune --task purchase; a model "
        "without them ranks by next-item only). Each record says the weight that made it.",
    )
    serving_processes: bool = Field(
        True, description="Serve from two child processes (blue/green: one loads a new version while "
        "the other serves; streams/serving/processes.py); false: from a thread of the worker process "
        "(less memory, but queries share the GIL with ingestion and model swaps).",
    )
    train: bool = Field(True, description="Run the continuous trainer on the group leader.")
    trainer_process: bool = Field(
        True, description="Run the continuous trainer in a child process at a lower OS priority "
        "(streams/lifecycle/trainer_process.py); false: in threads of the worker process, where its "
        "reader and updates share the GIL with ingestion (the main process then spent ~2x the CPU per event).",
    )
    trainer_priority: Literal["idle", "low"] = Field(
        "idle", description="OS priority of the trainer child. idle (Linux SCHED_IDLE): it runs only on CPU "
        "time nothing else wants, and a waking event loop or serving child takes its core at once; in "
        "`make demo` on the 2-core box the end-to-end p99 was 345-453 ms against 477-1,238 ms at low. "
        "low: nice +10, which keeps it training on a saturated host (elsewhere than Linux, always low).",
    )
    train_threads: int = Field(
        1, ge=1, le=256, description="Intra-op CPU threads of torch in the trainer child (torch's default, "
        "one per core, also took the core the worker's event loop needed; in threads of the worker, "
        "torch_threads applies).",
    )
    model_keep_versions: int = Field(5, ge=1, le=1000, description="Model versions kept in the store.")
    publish_interval_s: float = Field(15.0, gt=0, description="Seconds between published model versions.")
    train_queue_size: int = Field(
        10_000, ge=1, description="Training sequences queued; overflow is dropped and counted."
    )
    replay_capacity: int = Field(20_000, ge=1, description="Sequences kept in the replay buffer.")
    train_lr: float = Field(1e-3, gt=0, le=1, description="Learning rate of the continuous trainer (Adam).")
    promotion_tail: int = Field(
        1000, ge=0, description="Most recent training sequences held back from the trainer: each new "
        "version is scored on them against the version in force and announced only if its HR@10 is "
        "higher (streams/lifecycle/promotion.py); 0: every version is announced.",
    )
    promotion_min_events: int = Field(
        100, ge=1, description="New-item events the held-back tail must hold before a version is judged "
        "(until then the trainer waits, holding the tail).",
    )
    train_objectives: str = Field(
        "next:1", min_length=1, description="Objectives of the continuous trainer with their weights, "
        "name:weight[,name:weight] (next, masked, contrastive, denoising, purchase, adversarial; see "
        "model/objectives.py; purchase trains the purchase heads that STREAMREC_PURCHASE_WEIGHT ranks with).",
    )

    # --- Limits per user (see streams/ingest/guard.py) -------------------------------------------
    rate_limit_per_s: float = Field(
        2.0, ge=0, description="Events per second (event time) a user may send on average; beyond the burst, "
        "events go to the suspect topic instead of into state, popularity and training. 0: no limit.")
    rate_burst: float = Field(60.0, ge=1, description="Events a user may send at once before the rate limit applies.")
    count_cap_per_hour: int = Field(0, ge=0, description="Events of one user that count in popularity and co-visitation "
        "per hour of event time (the rest still enter state and training); set above the heaviest real users. 0: off.")
    suspect_surprise: float = Field(
        3.0, ge=0, description="A user whose recent events fall on the most popular items so often that chance "
        "explains it less than once in 10 ** this is quarantined as a promotion's fake user (with "
        "STREAMREC_SUSPECT_LIFT). 0: no suspicion.")
    suspect_lift: float = Field(
        10.0, ge=1, description="...and only if that share is at least this many times the stream's own share of "
        "events on those items.")
    suspect_top_items: int = Field(
        100, ge=1, description="The most popular items whose share of a user's events is weighed for suspicion.")
    popularity_settle_s: float = Field(
        0.0, ge=0, description="Seconds of event time a count waits before it moves the served popularity and "
        "the quality gate's choice, so that a user quarantined as suspicious meanwhile moves neither (with "
        "STREAMREC_SUSPECT_SURPRISE > 0); 600 holds a promotion at a human pace to a few per cent of its reach, "
        "at the price of popularity and the gate's switches that many seconds late (BENCHMARKS.md, attack). "
        "0: counts land at once.")
    suspect_memory: int = Field(
        50, ge=2, description="Events over which a user's suspicion evidence is weighed (older ones decay).")
    release_key: SecretStr | None = Field(
        None, min_length=16, description="Secret with which `streamrec release` signs the suspect events it sends "
        "back; a worker with the same key takes them without the rate limit. Unset: nothing can be "
        "released. Never logged.")

    # --- Sources and the quality gate (see streams/serving/gate.py) -------------------------------
    serving_gate: bool = Field(
        True, description="Serve each user segment (cold, short, long history) from the source that scores "
        "best test-then-train on the stream (model, co-visitation, the two blended, category popularity, "
        "popularity); false: the model where it has an answer, else popularity.")
    gate_min_evidence: int = Field(
        30, ge=1, description="Events a source and the one serving a segment must be scored on side by side "
        "there before the gate compares them (until then: the one serving, popularity at first).",
    )
    gate_switch_z: float = Field(
        2.0, gt=0, description="Standard errors by which a source must beat the serving one in a segment, on "
        "the decayed events where only one of them hit, for the gate to switch to it (no flapping).",
    )
    gate_half_life_events: float = Field(
        1000.0, gt=0, description="Half-life, in scored events of a segment, of the gate's hit counts (at least).")
    gate_half_life_hits: float = Field(
        20.0, gt=0, description="Where hits are rare the gate's half-life is longer: as many scored events as the "
        "source serving a segment takes for this many hits (a choice between rare hits needs the evidence).")
    gate_sample: int = Field(
        4, ge=1, description="Co-visitation and the category list, where they do not serve a user's segment, are "
        "each listed and scored in 1 record in this many, at random (the gate's choice stays unbiased at a "
        "fraction of the cost).")
    gate_long_from: int = Field(5, ge=1, description="Events from which a user's history counts as long.")
    covisit: bool = Field(
        True, description="Keep the item-to-item co-visitation source from accepted events "
        "(streams/ingest/covisit.py); false: no such source (the gate chooses between the model and popularity).")
    covisit_half_life_s: float = Field(
        86_400.0, gt=0, description="Half-life of the item-to-item co-visitation weights (event time).")
    categories: bool = Field(
        True, description="Keep recent popularity per item category from accepted events that name a category "
        "(streams/ingest/categories.py; same half-life as popularity), a source the gate can serve with the "
        "category of the user's last event; false: no such source.")

    # --- HTTP --------------------------------------------------------------------------------
    http_host: str = Field("127.0.0.1", min_length=1, description="HTTP bind address.")
    http_port: int = Field(6066, ge=1, le=65535, description="HTTP port of the worker.")
    http_token: SecretStr | None = Field(
        None, min_length=1, description="Bearer token that GET /users/... and /metrics require "
        "(`Authorization: Bearer <token>`; 401 without it); unset: open. /health, /recommend and "
        "/openapi.json stay open. Never logged.",
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    @field_validator("train_objectives")
    @classmethod
    def _check_objectives(cls, value: str) -> str:
        objective_weights(value)
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        value = value.strip()
        if value == EMBEDDED:
            return value
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected 'embedded' or host:port[,host:port], got {value!r}")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        """Only the values given: :func:`load_settings` reads the environment it is handed.
        (pydantic-settings would otherwise fill unset fields from ``os.environ`` even in
        ``model_validate``, so ``load_settings(environ={})`` was not isolated from the process.)"""
        return (init_settings,)

    # --- derived -----------------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        return self.bootstrap_servers == EMBEDDED

    @property
    def kafka_servers(self) -> str:
        """The address clients connect to (the embedded broker's when embedded)."""
        return f"127.0.0.1:{self.broker_port}" if self.embedded else self.bootstrap_servers

    @property
    def table_dir(self) -> Path:
        """This worker's RocksDB directory. Two workers on one machine must not share one: each
        would read the other's persisted changelog offsets and Faust stops with ``ConsistencyError:
        The persisted offset ... is higher than the last offset`` (faust-streaming #158). A worker's
        HTTP port is unique on its machine, so it names the directory."""
        host = self.http_host.replace(":", "_").replace("/", "_")
        return self.data_dir / "tables" / f"worker-{host}-{self.http_port}"

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def release_secret(self) -> bytes | None:
        """``release_key`` as bytes (streams/ingest/guard.py), None when unset."""
        return None if self.release_key is None else self.release_key.get_secret_value().encode()

    def kafka_python_security(self) -> dict[str, Any]:
        """Security keyword arguments for kafka-python clients."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options.update(
                ssl_cafile=_opt_str(self.ssl_cafile),
                ssl_certfile=_opt_str(self.ssl_certfile),
                ssl_keyfile=_opt_str(self.ssl_keyfile),
            )
        return options


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


# the objectives of model/objectives.py less "replaced", whose generator's item table the trainer does not grow
ONLINE_OBJECTIVES = ("next", "masked", "contrastive", "denoising", "purchase", "adversarial")


def objective_weights(spec: str) -> dict[str, float]:
    """``"next:1,masked:0.5"`` -> ``{"next": 1.0, "masked": 0.5}``; ValueError names what is wrong.
    The purchase objective trains the purchase heads beside the encoder (model/incremental.py)."""
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, weight = part.strip().partition(":")
        if name not in ONLINE_OBJECTIVES:
            raise ValueError(f"unknown objective {name!r} (the online trainer has {', '.join(ONLINE_OBJECTIVES)})")
        try:
            w = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"objective {name!r} has weight {weight!r}, not a number") from None
        if not w > 0:
            raise ValueError(f"objective {name!r} has weight {w}, must be > 0")
        weights[name] = w
    return weights


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``) and explicit overrides.

    Overrides (command-line flags) win over the environment. Raises :class:`SettingsError`.
    """
    environ = os.environ if environ is None else environ
    fields = Settings.model_fields
    unknown = sorted(
        key for key in environ if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() not in fields
    )
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]} (known: {', '.join(map(env_name, fields))})")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in given:
        if key not in fields:
            raise SettingsError(f"unknown setting {key!r}")
    from_env = {
        key[len(ENV_PREFIX):].lower(): value for key, value in environ.items() if key.startswith(ENV_PREFIX)
    }
    try:
        # model_validate (not Settings()) so that only the mapping given here is read:
        # the function stays pure for tests and flags override the environment.
        return Settings.model_validate({**from_env, **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        source = "flag --" + field.replace("_", "-") if field in given else env_name(field)
        raise SettingsError(f"invalid setting {source}={first.get('input')!r}: {first['msg']}") from None
