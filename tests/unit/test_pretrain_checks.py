"""What pretraining and checkpoint loading refuse, reset or convert, with messages that say why: a
dataset with nothing to train on, a checkpoint of another format (format 1 is converted), a resume
onto other data (its best validation score was measured on another validation split) or onto new
items (the heads with an item table grow with the encoder's)."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint
from model.data import DataError, build_dataset, fingerprint
from model.encoder import EncoderConfig
from model.objectives import ObjectiveConfig
from model.pretrain import TrainConfig, pretrain


def walks(users: int, length: int, offset: int = 0) -> dict:
    return {f"u{u}": [(str((u + offset + k) % 20 + 1), "click") for k in range(length)] for u in range(users)}


def train(ds, out, resume=None):
    return pretrain(ds, EncoderConfig(dim=8, n_layers=1, max_len=8), ObjectiveConfig(),
                    TrainConfig(epochs=1, progress=False), str(out), resume=resume)


def test_a_dataset_with_no_trainable_window_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nothing to train on"):
        train(build_dataset({f"u{u}": [("1", "click")] for u in range(5)}), tmp_path)


def test_a_checkpoint_of_another_format_is_refused_by_name(tmp_path):
    summary = train(build_dataset(walks(30, 6)), tmp_path)
    assert summary["steps"] > 0
    path = tmp_path / "last.ckpt"
    ck = torch.load(path, weights_only=True)
    assert ck["format_version"] == FORMAT_VERSION
    load_checkpoint(str(path))
    for written, says in ((FORMAT_VERSION + 1, "newer StreamRec"), (None, "format version None")):
        ck["format_version"] = written
        torch.save(ck, path)
        with pytest.raises(CheckpointError, match=f"{path}.*{says}"):
            load_checkpoint(str(path))


def test_resuming_on_other_data_does_not_carry_the_best_validation_score_over(tmp_path):
    same, other = build_dataset(walks(30, 6)), build_dataset(walks(30, 6, offset=3))
    assert fingerprint(same) == fingerprint(build_dataset(walks(30, 6))) != fingerprint(other)
    train(same, tmp_path / "a")
    ckpt = tmp_path / "a" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["best_val"] = 1.0  # a score no epoch can beat
    torch.save(state, ckpt)
    again = train(same, tmp_path / "b", resume=str(ckpt))  # same data: the best so far stands
    assert again["best_val_ndcg10"] == 1.0 and not (tmp_path / "b" / "best.ckpt").exists()
    moved = train(other, tmp_path / "c", resume=str(ckpt))  # other data: measured afresh on its own split
    assert moved["best_val_ndcg10"] == moved["history"][-1]["val_ndcg10"] < 1.0
    assert (tmp_path / "c" / "best.ckpt").exists()


def test_a_format_1_checkpoint_is_converted_on_load(tmp_path):
    train(build_dataset(walks(30, 6)), tmp_path)
    path = tmp_path / "last.ckpt"
    ck = torch.load(path, weights_only=True)
    assert ck["stage"] == "pretrain" and ck["task"] == "next" and ck["head_names"] == []
    old = {k: v for k, v in ck.items() if k not in ("stage", "task", "head_names")}
    old.update(format_version=1, heads={"propensity.0.weight": torch.zeros(2)})
    torch.save(old, path)
    got = load_checkpoint(str(path))
    assert got["format_version"] == FORMAT_VERSION and got["stage"] == "pretrain"
    assert got["head_names"] == ["purchase"] and list(got["heads"]) == ["purchase.propensity.0.weight"]
    torch.save({**old, "replay": {"items": []}}, path)   # the online trainer's
    assert load_checkpoint(str(path))["stage"] == "online"


def test_objective_settings_are_flags_and_land_in_the_checkpoint(tmp_path):
    from model import commands
    data = tmp_path / "d.txt"
    data.write_text("".join(f"{u} {(u + k) % 20 + 1}\n" for u in range(20) for k in range(6)))
    rc = commands.main(["pretrain", "--data", str(data), "--format", "ml1m", "--out", str(tmp_path / "o"),
                        "--epochs", "1", "--dim", "8", "--layers", "1", "--max-len", "8", "--quiet",
                        "--objectives", "next,adversarial,denoising,replaced", "--adv-eps", "0.25",
                        "--noise-prob", "0.3"])
    assert rc == 0
    ck = load_checkpoint(str(tmp_path / "o" / "last.ckpt"))
    assert ck["objectives"]["adv_eps"] == 0.25 and ck["objectives"]["noise_prob"] == 0.3
    assert ck["head_names"] == ["replaced"] and set(ck["objectives"]["weights"]) == {"next", "adversarial",
                                                                                    "denoising", "replaced"}


def test_resuming_with_the_replaced_objective_on_new_items_grows_its_generator(tmp_path):
    from model.heads import load_heads
    from model.vocab import ItemVocab
    ecfg = EncoderConfig(dim=8, n_layers=1, max_len=8)
    cfg = ObjectiveConfig(weights={"next": 1.0, "replaced": 1.0})
    pretrain(build_dataset(walks(30, 6)), ecfg, cfg, TrainConfig(epochs=1, progress=False), str(tmp_path / "a"))
    first = load_checkpoint(str(tmp_path / "a" / "last.ckpt"))
    vocab = ItemVocab.from_state(first["vocab"])
    more = {**walks(30, 6), **{f"n{u}": [(str(100 + (u + k) % 5), "click") for k in range(6)] for u in range(10)}}
    for s in more.values():
        for item, _ in s:
            vocab.add(item)
    grown = build_dataset(more, vocab)
    pretrain(grown, EncoderConfig(dim=8, n_layers=1, max_len=8), cfg, TrainConfig(epochs=1, progress=False),
             str(tmp_path / "b"), resume=str(tmp_path / "a" / "last.ckpt"))
    second = load_checkpoint(str(tmp_path / "b" / "last.ckpt"))
    n_old = first["heads"]["replaced.generator.item_emb.weight"].shape[0]
    table = second["heads"]["replaced.generator.item_emb.weight"]
    assert table.shape[0] == len(vocab) > n_old
    heads = load_heads(second["heads"], second["head_names"], EncoderConfig.from_dict(second["config"]))
    assert heads["replaced"].generator.item_emb.weight.shape[0] == len(vocab)
