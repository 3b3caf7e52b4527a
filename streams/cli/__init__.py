"""The ``streamrec`` command line: broker, worker, produce, consume, demo, rollback, and the
model commands (pretrain, evaluate, ...) of ``model.commands``."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
