"""Running a prequential evaluation end to end: load and split a stream, pretrain on its prefix
(unless a checkpoint is given), replay the rest with :func:`model.prequential.run_prequential`,
write the JSON and the plot. ``streamrec evaluate --prequential`` and ``bench/prequential.py``
build a :class:`RunSpec`.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import dataclass, field

from model.data import build_dataset
from model.encoder import EncoderConfig
from model.interactions import Interaction
from model.objectives import ObjectiveConfig
from model.prequential import PREDICTORS, PrequentialConfig, run_prequential
from model.pretrain import TrainConfig, pretrain
from model.recommender import Recommender
from model.replay import events_to_sequences, load_events, split_events

log = logging.getLogger(__name__)


def pretrain_on_events(events: list[Interaction], out_dir: str, ecfg: EncoderConfig | None = None,
                       ocfg: ObjectiveConfig | None = None, tcfg=None) -> Recommender:
    """Pretrain with ``model.pretrain.pretrain`` on ``events`` (the early part of the stream) and
    return the selected checkpoint (``out_dir/best.ckpt``) as a Recommender."""
    cats = {e.item_id: e.category for e in events if e.category is not None}
    ds = build_dataset(events_to_sequences(events), categories=cats)
    ecfg = copy.deepcopy(ecfg) if ecfg is not None else EncoderConfig(dim=64, n_layers=2, max_len=50)
    pretrain(ds, ecfg, ocfg or ObjectiveConfig(), tcfg or TrainConfig(epochs=20, max_minutes=3.0), out_dir)
    path = os.path.join(out_dir, "best.ckpt")
    if not os.path.isfile(path):
        path = os.path.join(out_dir, "last.ckpt")
    return Recommender.from_checkpoint(path)


def plot_windows(result: dict, path: str, title: str = "prequential HR@10") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wins = result["windows"]
    x = [(w["start"] + w["end"]) / 2 for w in wins]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for p, style in zip(PREDICTORS, ("-o", "-s", "-^")):
        ax.plot(x, [w[p] for w in wins], style, ms=3,
                label=f"{p} (overall {result['hr'][p]:.4f})")
    ax.set_xlabel("replayed events")
    ax.set_ylabel(f"HR@{result['k']} per window ({result['primary'].replace('_', ' ')})")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def format_table(results: dict[str, dict]) -> str:
    lines = ["| dataset | events (cold) | protocol | online | frozen | popularity | online/frozen | warm: online / frozen |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['events']:,} ({r['cold_events']:,}) | {r['primary']} | "
                     f"{r['hr']['online']:.4f} | {r['hr']['frozen']:.4f} | {r['hr']['popularity']:.4f} | "
                     f"{r['online_over_frozen']:.2f}× | {r['hr_warm']['online']:.4f} / {r['hr_warm']['frozen']:.4f} |")
    return "\n".join(lines)


@dataclass
class RunSpec:
    """Everything ``evaluate --prequential`` needs (the CLI and bench/prequential.py build one)."""
    data: str
    fmt: str
    out_dir: str
    checkpoint: str | None = None
    pretrain_fraction: float = 0.7
    max_events: int | None = None
    skip_events: int = 0  # after the prefix, before the replay: context only (see run_prequential)
    pretrain_minutes: float = 3.0
    pretrain_epochs: int = 30
    encoder: dict = field(default_factory=lambda: dict(dim=64, n_layers=2, n_heads=1, max_len=50, dropout=0.2))
    pretrain_negatives: int = 0
    preq: PrequentialConfig = field(default_factory=PrequentialConfig)
    name: str = "prequential"


def run(spec: RunSpec) -> dict:
    """Load, split, pretrain on the prefix (unless a checkpoint is given), replay, write
    ``<name>.json`` and ``<name>.png`` into ``out_dir``; returns the result dict."""
    os.makedirs(spec.out_dir, exist_ok=True)
    t0 = time.time()
    events = load_events(spec.data, spec.fmt)
    prefix, rest = split_events(events, spec.pretrain_fraction,
                                spec.skip_events + spec.max_events if spec.max_events else None)
    context, rest = rest[:spec.skip_events], rest[spec.skip_events:]
    log.info("%s: %d events, %d in the pretraining prefix, %d skipped, %d replayed", spec.data,
             len(events), len(prefix), len(context), len(rest))
    if spec.checkpoint:
        rec = Recommender.from_checkpoint(spec.checkpoint)
        pre_info = {"checkpoint": spec.checkpoint}
    else:
        if not prefix:
            raise ValueError("no pretraining prefix: give --checkpoint or a --pretrain-fraction > 0")
        tp = time.time()
        tcfg = TrainConfig(epochs=spec.pretrain_epochs, max_minutes=spec.pretrain_minutes,
                           seed=spec.preq.seed, device=spec.preq.device, progress=spec.preq.progress,
                           patience=5)
        rec = pretrain_on_events(prefix, os.path.join(spec.out_dir, f"{spec.name}-pretrain"),
                                 EncoderConfig(**spec.encoder),
                                 ObjectiveConfig(weights={"next": 1.0}, n_negatives=spec.pretrain_negatives),
                                 tcfg)
        pre_info = {"pretrain_minutes": (time.time() - tp) / 60, "pretrain_best_val_ndcg10": rec.best_val,
                    "encoder": spec.encoder, "pretrain_negatives": spec.pretrain_negatives}
    res = run_prequential(rest, rec, prefix, spec.preq, context)
    res.update({"data": spec.data, "format": spec.fmt, "pretrain_fraction": spec.pretrain_fraction,
                "skipped_events": len(context),
                "stream_events": len(events), "pretrain": pre_info,
                "wall_minutes": (time.time() - t0) / 60})
    with open(os.path.join(spec.out_dir, f"{spec.name}.json"), "w") as f:
        json.dump(res, f, indent=1)
    plot_windows(res, os.path.join(spec.out_dir, f"{spec.name}.png"),
                 f"{spec.name}: prequential HR@{res['k']} ({spec.fmt})")
    return res
