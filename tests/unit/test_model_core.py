"""Encoder, vocabulary, metrics and data loaders of model/ (fast, synthetic data only)."""
import gzip
import json
import math

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine

from model.data import DataError, build_dataset, load_dataset, loo_split, loo_train, pad_left, read_sequences
from model.encoder import EncoderConfig, SeqEncoder
from model.metrics import hit_rate, ndcg, ranks_from_scores, summarize
from model.vocab import ItemVocab


# ---- vocabulary -------------------------------------------------------------------------------
def test_vocab_rows_and_growth():
    v = ItemVocab(["a", "b"])
    assert len(v) == 3 and v.row("a") == 1 and v.row("b") == 2 and v.row("zz") is None
    assert v.add("a") == 1                      # existing id keeps its row
    assert v.add("c", category="cat1") == 3     # new id appends
    assert v.ids() == ["a", "b", "c"] and v.item_id(3) == "c" and v.category(3) == "cat1"
    assert v.add(7) == 4 and v.row("7") == 4    # integers become strings
    with pytest.raises(KeyError):
        v.item_id(0)                            # padding has no id
    w = ItemVocab.from_state(v.to_state())
    assert w.ids() == v.ids() and w.category(3) == "cat1" and w.rows_in_category("cat1") == [3]
    w.add("c", category="cat2")                 # a new category moves the row
    w.add("d", category="cat1")
    assert w.rows_in_category("cat1") == [5] and w.rows_in_category("cat2") == [3]


def test_vocab_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    ids = ["a", "ü-ß", "emoji-\U0001f600", "with\nnewline", "x" * 128, "7"]
    v = ItemVocab(ids)
    v.add("ü-ß", category="cat")
    torch.save({"vocab": v.to_state()}, tmp_path / "v.pt")
    w = ItemVocab.from_state(torch.load(tmp_path / "v.pt", weights_only=True)["vocab"])
    assert w.ids() == ids and w.row("with\nnewline") == 4 and w.category(2) == "cat"
    # the list form of checkpoints written before the ids were packed still loads
    legacy = ItemVocab.from_state(json.loads(json.dumps({"ids": ids, "category": {"2": "cat"}})))
    assert legacy.ids() == ids and legacy.category(2) == "cat"


def test_vocab_from_state_reuses_the_rows_it_shares_with_the_served_vocabulary():
    v1 = ItemVocab(["a", "b", "c"])
    served = ItemVocab.from_state(v1.to_state())
    served.add("seen-in-stream")                # a cold-start row the next version lacks
    v2 = ItemVocab(["a", "b", "c", "d", "ü"])    # the next version: v1 plus what the trainer saw
    new = ItemVocab.from_state(v2.to_state(), base=served)
    assert new.reused_rows == 3 and new.ids() == ["a", "b", "c", "d", "ü"]
    assert new.row("seen-in-stream") is None and new.row("ü") == 5 and new.ids()[0] is served.ids()[0]
    assert served.ids() == ["a", "b", "c", "seen-in-stream"] and served.row("d") is None
    # a rollback to a shorter vocabulary reuses its rows too
    back = ItemVocab.from_state(v1.to_state(), base=new)
    assert back.reused_rows == 3 and back.ids() == ["a", "b", "c"] and back.row("d") is None
    # vocabularies that differ early are decoded from scratch
    other = ItemVocab.from_state(ItemVocab(["a", "x", "c", "d"]).to_state(), base=new)
    assert other.reused_rows == 0 and other.ids() == ["a", "x", "c", "d"] and other.row("x") == 2


# ---- encoder ----------------------------------------------------------------------------------
def small_encoder(n_items=11, **kw):
    torch.manual_seed(0)
    cfg = dict(n_items=n_items, dim=16, n_layers=1, n_heads=2, max_len=8, dropout=0.0)
    cfg.update(kw)
    return SeqEncoder(EncoderConfig(**cfg))


def test_encoder_shapes_and_left_padding():
    enc = small_encoder().eval()
    items = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    types = (items != 0).long()
    u = enc.encode_sequences(items, types)
    assert u.shape == (2, 16) and u.dtype == torch.float32 and torch.isfinite(u).all()
    assert enc.item_vectors().shape == (11, 16)
    # padding does not change the answer: more left padding gives the same user vector
    u_pad = enc.encode_sequences(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]]), torch.tensor([[0] * 5 + [1] * 3]))
    torch.testing.assert_close(u_pad[0], u[0], atol=1e-5, rtol=1e-5)
    # causal: the last vector depends on earlier items, but earlier positions ignore later items
    h1 = enc(items[1:], types[1:])
    h2 = enc(torch.tensor([[1, 2, 3, 4, 9]]), types[1:])
    torch.testing.assert_close(h1[0, :4], h2[0, :4])
    assert not torch.allclose(h1[0, 4], h2[0, 4])
    # the behaviour type is an input
    u_buy = enc.encode_sequences(items[1:], torch.tensor([[1, 1, 1, 1, 2]]))
    assert not torch.allclose(u_buy[0], u[1])
    # sequences longer than max_len keep the most recent events
    long = torch.arange(1, 11)[None]
    torch.testing.assert_close(enc.encode_sequences(long, torch.ones_like(long)),
                               enc.encode_sequences(long[:, -8:], torch.ones(1, 8, dtype=torch.long)))


def test_encode_sequences_equals_last_position_of_forward():
    # serving computes only the last position in the last block: same vectors as the full pass
    enc = small_encoder(n_layers=3, max_len=12).eval()
    gen = torch.Generator().manual_seed(1)
    items = torch.randint(1, 11, (6, 12), generator=gen)
    items[0, :11] = 0                       # one real item
    items[1, :5] = 0                        # left padding
    types = torch.randint(1, 3, (6, 12), generator=gen) * (items != 0)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_sequences(items, types), enc(items, types)[:, -1],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_serving_encoder_is_optimised_before_its_first_query():
    """TorchScript profiles a graph in its first call and optimises it in the second (~10 ms each
    on the 2-core box, 4-5x a query): serving_encoder makes those calls, so the first queries
    after a model swap do not. A graph without an optimised plan fails get_debug_state()."""
    from model.encoder import _LastHidden, _trace_example

    enc = small_encoder(n_layers=2, max_len=12)
    bare = torch.jit.trace_module(_LastHidden(enc.eval()), {"forward": _trace_example(enc)}, check_trace=False)
    with pytest.raises(RuntimeError):
        bare.get_debug_state()
    plans = enc.serving_encoder().traced.get_debug_state().execution_plans
    assert len(plans) == 1


def test_serving_encoder_matches_encode_sequences_through_growth_and_training():
    enc = small_encoder(n_layers=2, max_len=12)
    encode = enc.serving_encoder()
    assert enc.training                                   # the trace leaves the mode as it was
    enc.eval()
    gen = torch.Generator().manual_seed(2)

    def check(B, T, high=11):
        items = torch.randint(1, high, (B, T), generator=gen)
        items[0, : T - 1] = 0                             # one left-padded row
        types = torch.randint(1, 3, (B, T), generator=gen) * (items != 0)
        with torch.no_grad():
            torch.testing.assert_close(encode(items, types), enc.encode_sequences(items, types),
                                       atol=1e-5, rtol=1e-5)

    for B, T in ((1, 1), (1, 5), (7, 3), (64, 12), (3, 20)):  # T=20 > max_len: most recent 12
        check(B, T)
    enc.grow(5)                                           # new rows: the lookup stays outside the trace
    check(4, 9, high=16)
    opt = torch.optim.Adam(enc.parameters(), lr=0.1)      # in-place updates show in the trace
    enc.train()
    enc(torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)).sum().backward()
    opt.step()
    enc.eval()
    check(5, 6, high=16)


def test_encoder_grow_keeps_trained_rows():
    enc = small_encoder()
    before = enc.item_vectors().detach().clone()
    init = torch.full((3, 16), 0.5)
    enc.grow(3, init)
    W = enc.item_vectors()
    assert W.shape == (14, 16) and enc.cfg.n_items == 14
    torch.testing.assert_close(W[:11].detach(), before)
    torch.testing.assert_close(W[11:].detach(), init)


def test_encoder_from_state_holds_the_state_and_refuses_an_incomplete_one():
    enc = small_encoder()
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    again = SeqEncoder.from_state(enc.cfg, state)
    for name, value in again.state_dict().items():
        assert value.device.type == "cpu" and torch.equal(value, enc.state_dict()[name])
    assert all(p.requires_grad for p in again.parameters())
    x = torch.tensor([[0, 3, 4], [5, 6, 7]])
    enc.eval(), again.eval()
    torch.testing.assert_close(again.encode_sequences(x, (x > 0).long()), enc.encode_sequences(x, (x > 0).long()))
    del state["ln_f.weight"]
    with pytest.raises(RuntimeError, match="ln_f.weight"):
        SeqEncoder.from_state(enc.cfg, state)


def test_planted_rule_is_learned():
    """next item = a fixed permutation of the current one: HR@1 must be near 1 after brief training."""
    from model.objectives import Batch, ObjectiveConfig, compute_losses
    rng = np.random.default_rng(0)
    n = 30
    succ = rng.permutation(n) + 1                     # item i -> succ[i-1]
    def seq(L):
        s = [int(rng.integers(1, n + 1))]
        for _ in range(L - 1):
            s.append(int(succ[s[-1] - 1]))
        return np.array(s)
    enc = small_encoder(n_items=n + 1, dim=32, max_len=10)
    opt = torch.optim.Adam(enc.parameters(), lr=5e-3)
    ocfg = ObjectiveConfig()
    for _ in range(150):
        seqs = [seq(int(rng.integers(3, 11))) for _ in range(32)]
        x = torch.from_numpy(pad_left([s[:-1] for s in seqs], 10))
        y = torch.from_numpy(pad_left([s[1:] for s in seqs], 10))
        loss = compute_losses(enc, None, Batch(x, (x > 0).long(), y, (y > 0).long()), ocfg)["total"]
        opt.zero_grad(); loss.backward(); opt.step()
    enc.eval()
    test = [seq(int(rng.integers(2, 9))) for _ in range(200)]
    x = torch.from_numpy(pad_left([s[:-1] for s in test], 10))
    with torch.no_grad():
        scores = enc.encode_sequences(x, (x > 0).long()) @ enc.item_vectors().T
    scores[:, 0] = -math.inf
    ranks = ranks_from_scores(scores, [s[-1] for s in test])
    assert hit_rate(ranks, 1) > 0.95


# ---- metrics ----------------------------------------------------------------------------------
def test_metrics_hand_computed():
    ranks = np.array([0, 1, 4, 10, 25])
    assert hit_rate(ranks, 1) == pytest.approx(1 / 5)
    assert hit_rate(ranks, 10) == pytest.approx(3 / 5)
    assert hit_rate(ranks, 20) == pytest.approx(4 / 5)
    expected = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(6)) / 5
    assert ndcg(ranks, 10) == pytest.approx(expected)
    assert ndcg(ranks, 11) == pytest.approx(expected + 1 / math.log2(12) / 5)
    s = summarize(ranks, ks=(10,))
    assert set(s) == {"HR@10", "NDCG@10"}
    assert hit_rate([], 10) == 0.0 and ndcg([], 10) == 0.0


def test_ranks_from_scores_ties_and_exclusion():
    scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.2],
                       [0.3, 0.3, 0.3, 0.3, 0.3]])
    assert ranks_from_scores(scores, [2, 0]).tolist() == [2, 4]       # ties count against the target
    assert ranks_from_scores(scores, [1, 4]).tolist() == [0, 4]
    exclude = np.zeros_like(scores, dtype=bool)
    exclude[0, [1, 3]] = True
    exclude[1, [0, 1, 2]] = True
    assert ranks_from_scores(scores, [2, 0], exclude).tolist() == [0, 2]  # target never excluded


# ---- data -------------------------------------------------------------------------------------
def test_loaders_and_leave_one_out(tmp_path):
    ml = tmp_path / "ml.txt.gz"
    with gzip.open(ml, "wt") as f:
        f.write("1 5\n1 3\n1 9\n1 2\n2 3\n2 5\n10 1\n")
    ds = load_dataset(str(ml), "ml1m")
    assert ds.users == ["1", "2", "10"] and ds.vocab.ids() == ["1", "2", "3", "5", "9"]
    assert [ds.vocab.item_id(r) for r in ds.items[0]] == ["5", "3", "9", "2"]
    train, _ = loo_train(ds)
    assert [len(t) for t in train] == [2, 2, 1]       # users with < 3 events are not held out
    va, te = loo_split(ds, "valid"), loo_split(ds, "test")
    assert va.user_idx.tolist() == [0] and ds.vocab.item_id(int(va.targets[0])) == "9"
    assert len(va.inputs[0]) == 2 and len(te.inputs[0]) == 3 and ds.vocab.item_id(int(te.targets[0])) == "2"

    tb = tmp_path / "ub.csv"
    tb.write_text("7,100,c1,pv,20\n7,101,c2,buy,10\n8,100,c1,cart,5\n")
    seqs = read_sequences(str(tb), "taobao")
    assert seqs["7"] == [("101", "purchase"), ("100", "click")]      # sorted by timestamp
    tds = load_dataset(str(tb), "taobao")
    assert tds.vocab.category(tds.vocab.row("101")) == "c2"

    jl = tmp_path / "ev.jsonl"
    jl.write_text("\n".join(json.dumps(e) for e in [
        {"user_id": "u", "item_id": "b", "type": "purchase", "ts": 2},
        {"user_id": "u", "item_id": "a", "type": "click", "ts": 1},
        {"user_id": 5, "item_id": 6, "type": "click"}]))
    assert read_sequences(str(jl), "jsonl") == {"u": [("a", "click"), ("b", "purchase")], "5": [("6", "click")]}

    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3,nope,4\n")
    with pytest.raises(DataError, match="bad.csv:1"):
        read_sequences(str(bad), "taobao")
    with pytest.raises(DataError, match="not found"):
        read_sequences(str(tmp_path / "missing"), "ml1m")
    with pytest.raises(DataError, match="unknown format"):
        read_sequences(str(jl), "csv")


def test_pad_left_truncates_to_most_recent():
    out = pad_left([np.array([1, 2, 3]), np.array([4])], 2)
    assert out.tolist() == [[2, 3], [0, 4]]
    ds = build_dataset({"u": [("x", "click"), ("y", "purchase")]})
    assert ds.types[0].tolist() == [1, 2]


# ---- pretraining windows and learning-rate schedule --------------------------------------------
def test_training_windows_cover_every_target_once():
    from model.pretrain import iter_batches, training_windows
    assert list(training_windows([1, 5], 3)) == [(1, 1, 5)]                 # 1 event: nothing to learn
    assert list(training_windows([9], 3, all_windows=True)) == [(0, 5, 9), (0, 2, 6), (0, 0, 3)]
    rng = np.random.default_rng(0)
    items = [np.arange(1, n + 1) * 10 + k for k, n in enumerate([1, 2, 7, 23, 40])]
    types = [np.ones(len(s), dtype=np.int64) for s in items]
    for all_windows, expected in ((False, {t for s in items[1:] for t in s[-5:][1:]}),
                                  (True, {t for s in items for t in s[1:]})):
        seen = []
        for b in iter_batches(items, types, 4, 3, rng, all_windows):
            real = b.targets[b.targets != 0].tolist()
            seen += real
            # a target follows its input: the same sequence, one step later
            assert ((b.targets - b.items)[b.targets != 0] == 10).all()
        assert sorted(seen) == sorted(expected), all_windows                  # each target exactly once


def test_cosine_schedule_and_progress():
    from model.pretrain import TrainConfig, progress
    t = TrainConfig(lr=1e-3, lr_schedule="cosine", min_lr_ratio=0.01, epochs=10, max_minutes=2.0)
    assert t.lr_at(0.0) == pytest.approx(1e-3)
    assert t.lr_at(0.5) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert t.lr_at(1.0) == pytest.approx(1e-5) == t.lr_at(3.0)
    assert TrainConfig(lr=1e-3).lr_at(0.9) == 1e-3                           # constant is the default
    assert progress(t, epochs_done=5, seconds=30) == 0.5                     # epochs further than time
    assert progress(t, epochs_done=1, seconds=90) == 0.75                    # time further than epochs
    assert progress(TrainConfig(epochs=4), epochs_done=1, seconds=1e6) == 0.25  # no time budget
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="windows"):
        TrainConfig(windows="random")
