"""``streamrec pretrain``, ``streamrec finetune`` and ``streamrec evaluate``: ``register(subparsers)`` adds them.

Also runnable without the streams CLI: ``python -m model.commands pretrain ...``.
Bad arguments (missing file, unknown format or objective, a checkpoint that does not load) end with
a one-line ``streamrec <command>: error: ...`` on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from model.checkpoint import CheckpointError, load_checkpoint, scenario_vocab
from model.data import FORMATS, DataError, load_dataset
from model.encoder import EncoderConfig, SeqEncoder
from model.evaluate import evaluate_model
from model.finetune import ENCODER_MODES, TASKS, FinetuneConfig, finetune, purchase_figures
from model.heads import load_heads
from model.objectives import OBJECTIVES, ObjectiveConfig
from model.prequential import PrequentialConfig
from model.prequential_run import RunSpec, format_table, run
from model.pretrain import LR_SCHEDULES, WINDOWS, TrainConfig, pretrain
from model.replay import STREAM_FORMATS
from model.vocab import ItemVocab

log = logging.getLogger(__name__)


class UsageError(ValueError):
    pass


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="Pretrain the sequence encoder on a dataset file.",
                              description="Pretrain the sequence encoder on a dataset file "
                                          "(leave-one-out; checkpoint chosen on validation NDCG@10).")
    p.add_argument("--data", required=True, help="dataset file (.gz ok)")
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, help="output folder (best.ckpt, last.ckpt, curve.png, history.json)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--ffn-mult", type=int, default=4)
    p.add_argument("--scenarios", type=int, default=None,
                   help="rows of the scenario table, the default scenario's included (jsonl data with a "
                        f"'scenario' field; 0 = no table; default {EncoderConfig.n_scenarios}, or the "
                        "--resume checkpoint's)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                   help="cosine: decay the learning rate to 1%% of --lr by the end (--epochs or --max-minutes)")
    p.add_argument("--windows", default="last", choices=WINDOWS,
                   help="all: also train on history older than --max-len (last: the most recent window only)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="validate and keep as best.ckpt a moving average of the weights, e.g. 0.995 per step "
                        "(0 = off: the trained weights)")
    p.add_argument("--objectives", default="next", help=f"comma list of {','.join(OBJECTIVES)}")
    p.add_argument("--weights", default=None, help="comma list of weights aligned with --objectives (default 1 each)")
    p.add_argument("--negatives", type=int, default=0, help="sampled softmax negatives (0 = full softmax)")
    defaults = ObjectiveConfig()
    p.add_argument("--adv-eps", type=float, default=defaults.adv_eps,
                   help="adversarial: L2 norm of the embedding perturbation per position")
    p.add_argument("--mask-prob", type=float, default=defaults.mask_prob, help="masked: share of items masked")
    p.add_argument("--noise-prob", type=float, default=defaults.noise_prob,
                   help="denoising: share of items replaced by random ones")
    p.add_argument("--replace-prob", type=float, default=defaults.replace_prob,
                   help="replaced: share of items the generator fills")
    p.add_argument("--max-minutes", type=float, default=0.0, help="training time budget (0 = none)")
    p.add_argument("--patience", type=int, default=15, help="validations without improvement before stopping")
    p.add_argument("--eval-every", type=int, default=1, help="epochs between validations")
    p.add_argument("--resume", default=None, help="checkpoint to continue from (same architecture)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    f = subparsers.add_parser("finetune", help="Fine-tune a pretrained checkpoint for a downstream task.",
                              description="Fine-tune the encoder of a checkpoint on a dataset for a task "
                                          "(next: next-item ranking; purchase: purchase propensity and "
                                          "next-purchase ranking); checkpoint chosen on the task's validation score.")
    f.add_argument("--from", dest="checkpoint", required=True, help="pretrained checkpoint")
    f.add_argument("--task", default="next", help=f"one of {', '.join(TASKS)}")
    f.add_argument("--data", required=True, help="dataset file (.gz ok)")
    f.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    f.add_argument("--out", required=True, help="output folder (best.ckpt, last.ckpt, curve.png, history.json)")
    f.add_argument("--encoder", default="train", choices=ENCODER_MODES,
                   help="frozen: train only the task's head and the item table")
    f.add_argument("--encoder-lr-scale", type=float, default=FinetuneConfig().encoder_lr_scale,
                   help="the encoder's learning rate as a share of --lr")
    f.add_argument("--next-weight", type=float, default=1.0, help="purchase task: weight of the next-item loss")
    for flag, kind, default in (("--epochs", int, 100), ("--lr", float, 1e-3), ("--batch-size", int, 128),
                                ("--max-minutes", float, 0.0), ("--patience", int, 10), ("--negatives", int, 0),
                                ("--seed", int, 42)):
        f.add_argument(flag, type=kind, default=default)
    f.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_finetune)

    e = subparsers.add_parser("evaluate", help="Leave-one-out full-ranking evaluation of a checkpoint.",
                              description="Leave-one-out full ranking over the whole catalogue: HR/NDCG@10,@20, "
                                          "with and without filtering seen items, plus a popularity baseline.")
    e.add_argument("--checkpoint", default=None, help="required, except with --prequential")
    e.add_argument("--data", required=True)
    e.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    e.add_argument("--split", default="test", choices=["test", "valid"])
    e.add_argument("--json", default=None, help="also write the metrics to this file")
    # prequential (test-then-train) replay: see model/prequential.py
    e.add_argument("--prequential", action="store_true",
                   help="replay the time-ordered stream (taobao or ml1m): online vs frozen vs popularity HR@10")
    e.add_argument("--pretrain-fraction", type=float, default=0.7,
                   help="prequential: pretrain on this first part of the stream (without --checkpoint)")
    e.add_argument("--pretrain-minutes", type=float, default=3.0, help="prequential: pretraining time budget")
    e.add_argument("--max-events", type=int, default=None, help="prequential: replay at most this many events")
    e.add_argument("--chunk", type=int, default=256, help="prequential: events per predict-then-learn step")
    e.add_argument("--max-len", type=int, default=50, help="prequential: encoder max_len when pretraining")
    e.add_argument("--allow-repeats", default=None, choices=["yes", "no"],
                   help="prequential: count re-consumed items (default: yes for taobao, no for ml1m)")
    e.add_argument("--out", default="runs/prequential", help="prequential: output folder (JSON, PNG, pretraining)")
    e.add_argument("--quiet", action="store_true", help="prequential: no progress bar")
    e.set_defaults(func=cmd_evaluate)


def _guard(name: str, fn, args) -> int:
    try:
        return fn(args)
    except (UsageError, DataError, CheckpointError, FileNotFoundError) as e:
        print(f"streamrec {name}: error: {e}", file=sys.stderr)
        return 2


def _check_data(args) -> None:
    if args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r}; expected one of {', '.join(FORMATS)}")
    if not os.path.isfile(args.data):
        raise UsageError(f"data file not found: {args.data}")


def _objective_weights(objectives: str, weights: str | None) -> dict[str, float]:
    names = [o.strip() for o in objectives.split(",") if o.strip()]
    bad = [o for o in names if o not in OBJECTIVES]
    if bad or not names:
        raise UsageError(f"unknown objectives {bad}; choose from {', '.join(OBJECTIVES)}")
    if weights is None:
        return {o: 1.0 for o in names}
    try:
        ws = [float(w) for w in weights.split(",")]
    except ValueError:
        raise UsageError(f"--weights must be numbers, got {weights!r}") from None
    if len(ws) != len(names):
        raise UsageError(f"--weights has {len(ws)} values for {len(names)} objectives")
    return dict(zip(names, ws))


def cmd_pretrain(args) -> int:
    return _guard("pretrain", _pretrain, args)


def _pretrain(args) -> int:
    _check_data(args)
    weights = _objective_weights(args.objectives, args.weights)
    if args.resume and not os.path.isfile(args.resume):
        raise UsageError(f"checkpoint not found: {args.resume}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    n_scenarios = EncoderConfig.n_scenarios if args.scenarios is None else args.scenarios
    if args.resume:  # new items get new rows after the checkpoint's rows
        ck = load_checkpoint(args.resume)
        ds = load_dataset(args.data, args.format, ItemVocab.from_state(ck["vocab"]), grow=True,
                          scenario_vocab=scenario_vocab(ck))
        if args.scenarios is None:  # a checkpoint saved before scenarios has no table
            n_scenarios = EncoderConfig.from_dict(ck["config"]).n_scenarios
    else:
        ds = load_dataset(args.data, args.format)
    ecfg = EncoderConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads, max_len=args.max_len,
                         dropout=args.dropout, ffn_mult=args.ffn_mult, n_scenarios=n_scenarios)
    try:
        ocfg = ObjectiveConfig(weights=weights, n_negatives=args.negatives, adv_eps=args.adv_eps,
                               mask_prob=args.mask_prob, noise_prob=args.noise_prob, replace_prob=args.replace_prob)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           max_minutes=args.max_minutes, patience=args.patience, eval_every=args.eval_every,
                           seed=args.seed, device=args.device, progress=not args.quiet,
                           lr_schedule=args.lr_schedule, windows=args.windows, ema_decay=args.ema_decay)
    except ValueError as e:
        raise UsageError(str(e)) from None
    summary = pretrain(ds, ecfg, ocfg, tcfg, args.out, resume=args.resume)
    summary.pop("history")
    print(json.dumps(summary))
    return 0


def cmd_finetune(args) -> int:
    return _guard("finetune", _finetune, args)


def _finetune(args) -> int:
    _check_data(args)
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint not found: {args.checkpoint}")
    try:
        fcfg = FinetuneConfig(task=args.task, encoder=args.encoder, encoder_lr_scale=args.encoder_lr_scale,
                              next_weight=args.next_weight, n_negatives=args.negatives)
        tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_minutes=args.max_minutes,
                           patience=args.patience, seed=args.seed, device=args.device, progress=not args.quiet)
    except ValueError as e:
        raise UsageError(str(e)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ck = load_checkpoint(args.checkpoint)
    ds = load_dataset(args.data, args.format, ItemVocab.from_state(ck["vocab"]), grow=True,
                      scenario_vocab=scenario_vocab(ck))
    summary = finetune(ds, args.checkpoint, fcfg, tcfg, args.out)
    summary.pop("history")
    print(json.dumps(summary))
    return 0


def cmd_evaluate(args) -> int:
    return _guard("evaluate", _evaluate, args)


def _evaluate(args) -> int:
    _check_data(args)
    if getattr(args, "prequential", False):
        return _prequential(args)
    if not args.checkpoint:
        raise UsageError("--checkpoint is required (except with --prequential)")
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint not found: {args.checkpoint}")
    ck = load_checkpoint(args.checkpoint)
    enc = SeqEncoder.from_state(EncoderConfig.from_dict(ck["config"]), ck["model"])
    ds = load_dataset(args.data, args.format, vocab=ItemVocab.from_state(ck["vocab"]),
                      scenario_vocab=scenario_vocab(ck))
    res = evaluate_model(enc, ds, args.split)
    res.update(checkpoint=args.checkpoint, stage=ck["stage"], task=ck["task"])
    if "purchase" in ck["head_names"]:
        res["purchase"] = purchase_figures(enc, load_heads(ck["heads"], ["purchase"], enc.cfg), ds, args.split)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


def _prequential(args) -> int:
    if args.format not in STREAM_FORMATS:
        raise UsageError(f"--prequential reads {' or '.join(STREAM_FORMATS)} streams, not {args.format!r}")
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint not found: {args.checkpoint}")
    if not 0.0 <= args.pretrain_fraction < 1.0:
        raise UsageError("--pretrain-fraction must be in [0, 1)")
    if not args.checkpoint and args.pretrain_fraction <= 0:
        raise UsageError("--prequential without --checkpoint needs --pretrain-fraction > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    allow = args.allow_repeats == "yes" if args.allow_repeats else args.format == "taobao"
    spec = RunSpec(args.data, args.format, args.out, checkpoint=args.checkpoint,
                   pretrain_fraction=args.pretrain_fraction, max_events=args.max_events,
                   pretrain_minutes=args.pretrain_minutes,
                   encoder=dict(dim=64, n_layers=2, n_heads=1, max_len=args.max_len, dropout=0.2),
                   preq=PrequentialConfig(chunk=args.chunk, progress=not args.quiet,
                                          primary="allow_repeats" if allow else "exclude_seen"),
                   name=f"prequential_{args.format}")
    res = run(spec)
    print(format_table({args.format: res}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="streamrec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
