"""The ``streamrec`` command line.

Every subcommand that talks to Kafka takes the settings as flags (``--http-port 8080``) on top of
``STREAMREC_*`` environment variables; see :mod:`streams.settings`. Each command imports its module
when it runs, on purpose: ``streamrec produce`` or ``--help`` need not import torch and Faust.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from model import commands as model_commands

from ..errors import StreamRecError
from ..ingest.guard import SUSPECT_REASONS
from ..settings import Settings, SettingsError, env_name, load_settings

log = logging.getLogger("streamrec")


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (flags override STREAMREC_* environment variables)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, dest=f"setting__{name}", default=None, metavar=name.split("_")[-1].upper(),
                           help=f"{field.description} [{env_name(name)}, default {field.default}]")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {k[len("setting__"):]: v for k, v in vars(args).items() if k.startswith("setting__")}
    return load_settings(overrides)


def _setup_logging(level: str, kafka_level: int = logging.WARNING) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # kafka-python logs every refused connection at ERROR; client commands report failures themselves.
    logging.getLogger("kafka").setLevel(kafka_level)


def cmd_broker(args: argparse.Namespace) -> int:
    from ..kafka.broker import EmbeddedBroker

    settings = settings_from(args)
    _setup_logging(settings.log_level)
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with EmbeddedBroker(settings.broker_port) as broker:
        print(f"embedded broker listening on {broker.bootstrap} (Ctrl-C to stop)", flush=True)
        while not stop["now"] and broker.process and broker.process.poll() is None:
            time.sleep(0.2)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import run_worker

    settings = settings_from(args)
    _setup_logging(settings.log_level)
    return run_worker(settings)


def cmd_produce(args: argparse.Namespace) -> int:
    from .produce import produce_file

    settings = settings_from(args)
    _setup_logging("warning", logging.CRITICAL)
    sent = produce_file(settings, Path(args.file), fmt=args.format, rate=args.rate, limit=args.limit,
                        progress=not args.quiet)
    print(f"sent {sent} events to {settings.topic_events}")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from .consume import consume

    settings = settings_from(args)
    _setup_logging("warning", logging.CRITICAL)
    consume(settings, topic=args.topic or settings.topic_recommendations, limit=args.limit,
            timeout_s=args.timeout, from_beginning=args.from_beginning)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from .release import release

    settings = settings_from(args)
    _setup_logging("warning", logging.CRITICAL)
    done = release(settings, set(args.user), reason=args.reason, idle_s=args.timeout)
    print(f"released {done.sent} events of {len(set(args.user))} users from {settings.topic_suspect} to "
          f"{settings.topic_events}" + (f"; {done.truncated} cut at the size limit not sent" if done.truncated else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    settings = settings_from(args)
    return run_demo(settings, data=Path(args.data), duration_s=args.duration, rate=args.rate,
                    limit=args.limit)


def cmd_rollback(args: argparse.Namespace) -> int:
    from ..lifecycle.model_store import ModelStore
    from ..lifecycle.updates import UpdatePublisher

    settings = settings_from(args)
    _setup_logging("warning", logging.CRITICAL)
    update = ModelStore(settings.model_dir, settings.model_keep_versions).update_for(args.version, rollback=True)
    publisher = UpdatePublisher(settings)
    try:
        publisher.publish(update)
    finally:
        publisher.close()
    print(f"announced version {update.version} ({update.path}) on {settings.topic_model_updates}")
    return 0


DEFAULT_TAOBAO = "../shared/data/taobao-userbehavior-sample/flink_ecommerce-time-slice/UserBehavior.csv.gz"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str,
            settings: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if settings:
            _add_settings_flags(p)
        return p

    add("broker", cmd_broker, "Run the embedded Kafka-protocol broker (Tansu) for development.")
    add("worker", cmd_worker, "Run a stream worker (starts the embedded broker when bootstrap is 'embedded').")
    p = add("produce", cmd_produce, "Replay an event file into the events topic.")
    p.add_argument("file", help="Taobao UserBehavior CSV, ML-1M 'user item' lines or JSON lines (.gz ok)")
    p.add_argument("--format", choices=["auto", "taobao", "ml1m", "jsonl"], default="auto")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many events (0: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = add("consume", cmd_consume, "Print recommendation records.")
    p.add_argument("--topic", default=None, help="topic to read (default: recommendations)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many records (0: never)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)")
    p.add_argument("--from-beginning", action="store_true")
    p = add("release", cmd_release, "Send users' suspect events back to events, signed: taken without the limits; "
            "a quarantined user is trusted from then on.")
    p.add_argument("--user", action="append", required=True, help="a user id to release (repeat for more)")
    p.add_argument("--reason", default=None, choices=SUSPECT_REASONS,
                   help="release only the records held back for this reason (default: any)")
    p.add_argument("--timeout", type=float, default=5.0, help="stop reading the suspect topic after this many idle seconds")
    p = add("demo", cmd_demo, "Broker + worker + Taobao replay + live view, then a summary.")
    p.add_argument("--data", default=DEFAULT_TAOBAO, help="Taobao UserBehavior CSV(.gz) to replay")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of replay at most")
    p.add_argument("--rate", type=float, default=1000.0, help="events per second")
    p.add_argument("--limit", type=int, default=0, help="events at most (0: whole file)")
    p = add("rollback", cmd_rollback, "Serve an older model version again (re-announces it on model-updates).")
    p.add_argument("version", type=int, help="a version kept in the model store")
    model_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SettingsError, CliError, StreamRecError, FileNotFoundError) as exc:
        print(f"streamrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

