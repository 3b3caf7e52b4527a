"""Checkpoints: one dict, written atomically, loaded with ``weights_only=True``.

Keys: ``model`` (encoder state dict), ``heads`` (the heads' state dict, keyed ``<head>.<weight>``,
or None; see ``model/heads.py``), ``head_names`` (derived from ``heads`` on save), ``stage`` (``pretrain``, ``finetune`` or
``online``), ``task`` (what it was selected for: ``next`` or ``purchase``),
``optimizer`` (state dict or None), ``config`` (EncoderConfig as a dict), ``objectives``
(objective config as a dict), ``vocab`` (ItemVocab state), ``step``, ``best_val``, ``version``,
``popularity`` (item row counts, for the cold-user fallback), ``scenarios`` (the scenario names
of rows 1.. of the encoder's scenario table; absent: none) and ``meta`` (free plain python;
``meta["data"]`` is the fingerprint of the data it was trained on). Only tensors and plain python
types are stored.

Format versions: 2 added ``stage``, ``task`` and ``head_names`` and keyed ``heads`` by head name.
A format-1 file is converted on load (its heads were the purchase heads); any other is refused.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile

import torch

from model.encoder import EncoderConfig
from model.vocab import ScenarioVocab

FORMAT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the expected model (message names the file)."""


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Write ``ckpt`` to ``path`` atomically: a temporary file in the same folder, then os.replace."""
    missing = [k for k in ("stage", "task") if k not in ckpt]
    if missing:
        raise ValueError(f"a checkpoint must say its {' and '.join(missing)}")
    ckpt = {**ckpt, "head_names": _head_names(ckpt.get("heads"))}   # derived here, the one place
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **ckpt}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str, expected: EncoderConfig | dict | None = None,
                    map_location="cpu") -> dict:
    """Load a checkpoint; with ``expected``, refuse one whose architecture differs."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: {e}") from None
    written = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if written == 1:
        ckpt = _from_format_1(ckpt)
    elif isinstance(ckpt, dict) and written != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {written}; this StreamRec reads format "
                              f"{FORMAT_VERSION} (and converts 1)" + (" (it was written by a newer StreamRec)"
                                                          if isinstance(written, int) and written > FORMAT_VERSION
                                                          else ""))
    required = ("model", "config", "vocab", "step", "best_val", "version")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in required):
        raise CheckpointError(f"checkpoint {path} is not a StreamRec checkpoint "
                              f"(needs keys {', '.join(required)})")
    if expected is not None:
        exp = expected if isinstance(expected, EncoderConfig) else EncoderConfig.from_dict(expected)
        got = EncoderConfig.from_dict(ckpt["config"])
        diff = {k: (got.arch()[k], v) for k, v in exp.arch().items() if got.arch()[k] != v}
        if diff:
            desc = ", ".join(f"{k}: checkpoint {a} vs expected {b}" for k, (a, b) in diff.items())
            raise CheckpointError(f"checkpoint {path} has a different architecture ({desc})")
    return ckpt


def scenario_vocab(ckpt: dict) -> ScenarioVocab:
    """The scenario names of a loaded checkpoint, on its encoder's scenario table."""
    return ScenarioVocab(EncoderConfig.from_dict(ckpt["config"]).n_scenarios, ckpt.get("scenarios") or ())


def _head_names(heads: dict | None) -> list[str]:
    return sorted({k.split(".", 1)[0] for k in heads}) if heads else []


def _from_format_1(ckpt: dict) -> dict:
    """Format 1 had one kind of head (the purchase heads, keys unprefixed) and no stage: a file with a
    replay buffer came from the online trainer, any other from pretraining."""
    heads = {f"purchase.{k}": v for k, v in ckpt["heads"].items()} if ckpt.get("heads") else None
    return {**ckpt, "format_version": FORMAT_VERSION, "heads": heads, "head_names": _head_names(heads),
            "stage": "online" if ckpt.get("replay") is not None else "pretrain", "task": "next"}
