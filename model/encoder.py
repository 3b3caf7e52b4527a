"""SASRec-style causal transformer encoder for item sequences.

Reads top to bottom: the config, one transformer block, then the encoder.

Conventions used everywhere in ``model/``:
- item row 0 is padding; sequences are LEFT-padded so the last column is the most recent event;
- behaviour types: 0 = pad, 1 = click, 2 = purchase (``TYPE_IDS``);
- the user vector is the hidden state at the last position; a score is the inner product of a
  user vector and an item vector (``item_vectors()`` is the shared input/output item table);
- scenarios (``model.vocab.ScenarioVocab`` rows, 0 = default): ``scenarios[b, t]`` is the
  scenario of the event that position t predicts, the next one; at the last position it is the
  scenario a recommendation is asked for. Its embedding is added to position t's input, so the
  blocks can learn a different next-item rule per scenario; the default row is zero.

Serving and the index use only ``encode_sequences`` and ``item_vectors``; training code uses
``forward`` (hidden states at every position) and ``embed`` (so the adversarial objective can
perturb the input embeddings).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD = 0
TYPE_IDS = {"click": 1, "purchase": 2}
WARM_UP_CALLS = 2  # TorchScript: the first call profiles the graph, the second optimises it


@dataclass
class EncoderConfig:
    n_items: int = 1          # rows of the item table, padding row 0 included (grows online)
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = 200
    dropout: float = 0.2      # embeddings, residual branches and feed-forward
    attn_dropout: float = 0.0 # on attention weights (off by default: costly on CPU)
    n_types: int = 3          # 0 = pad, 1 = click, 2 = purchase
    ffn_mult: int = 4         # feed-forward hidden size = ffn_mult * dim
    n_scenarios: int = 8      # rows of the scenario table, the default's included (<= 1: no table)

    # fields that define the shapes of the weights (n_items is growable, dropout is training-only)
    ARCH_FIELDS = ("dim", "n_layers", "n_heads", "max_len", "n_types", "ffn_mult", "n_scenarios")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {sorted(unknown)}")
        return cls(**{"n_scenarios": 0, **d})   # a config saved before scenarios had no table

    def arch(self) -> dict:
        return {k: getattr(self, k) for k in self.ARCH_FIELDS}


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        assert cfg.dim % cfg.n_heads == 0, "dim must be divisible by n_heads"
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_mult * cfg.dim), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ffn_mult * cfg.dim, cfg.dim),
        )
        self.attn_dropout = cfg.attn_dropout
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        # (B, T, C) -> (B, H, T, C/H)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ffn(self.ln2(x)))

    def forward_last(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """``forward(x, attn_mask)[:, -1:]`` without computing the other positions' outputs:
        keys and values for every position, the query, projection and feed-forward for the last
        one only (serving needs nothing else). ``attn_mask`` (B, 1, 1, T) is the last query's row."""
        B, T, C = x.shape
        h = self.ln1(x)
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(h[:, -1:], w[:C], b[:C])                                     # (B, 1, C)
        k, v = F.linear(h, w[C:], b[C:]).split(C, dim=2)                          # (B, T, C) each
        q = q.view(B, 1, self.n_heads, C // self.n_heads).transpose(1, 2)
        k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x[:, -1:] + self.proj(y.transpose(1, 2).reshape(B, 1, C))
        return x + self.ffn(self.ln2(x))


class SeqEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, item_table: torch.Tensor | None = None):
        """``item_table``: the item embedding's weights (n_items, dim), taken as they are (see
        ``from_state``); by default the table is drawn at random like the other weights."""
        super().__init__()
        self.cfg = cfg
        self.item_emb = (nn.Embedding(cfg.n_items, cfg.dim, padding_idx=PAD) if item_table is None else
                         nn.Embedding.from_pretrained(item_table, freeze=False, padding_idx=PAD))
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.type_emb = nn.Embedding(cfg.n_types, cfg.dim, padding_idx=0)
        self.mask_emb = nn.Parameter(torch.zeros(cfg.dim))  # [MASK] input for Cloze/augmentation
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.dim)
        for module in self.modules():
            if module is not self.item_emb or item_table is None:
                self._init(module)
        # drawn aside, so that an encoder trains on the same random numbers with or without a table
        self.scen_emb = None
        if cfg.n_scenarios > 1:
            with torch.random.fork_rng(devices=[]):
                self.scen_emb = nn.Embedding(cfg.n_scenarios, cfg.dim, padding_idx=0)
                self._init(self.scen_emb)

    @classmethod
    def from_state(cls, cfg: "EncoderConfig", state: dict[str, torch.Tensor]) -> "SeqEncoder":
        """An encoder holding ``state`` (a ``state_dict``) without first drawing a random item
        table that the state replaces: for 100k items that draw was a quarter of a worker's model
        swap (~50 ms on the 2-core box, cProfile of ``LiveModel.load``). The other weights are
        small; they are drawn and then replaced."""
        table = state.get("item_emb.weight")
        if table is None or tuple(table.shape) != (cfg.n_items, cfg.dim):
            raise RuntimeError(f"item_emb.weight of shape {(cfg.n_items, cfg.dim)} is missing from the state")
        enc = cls(cfg, item_table=table)
        enc.load_state_dict(state, assign=True)  # strict: every weight must be in ``state``
        return enc

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    # ---- training-side API -------------------------------------------------------------------
    def embed(self, items: torch.Tensor, types: torch.Tensor, masked: torch.Tensor | None = None,
              item_vecs: torch.Tensor | None = None, scenarios: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings (B, T, D) of left-padded items/types (B, T); padding rows are zero.
        ``masked`` (B, T) bool: positions whose item is replaced by the [MASK] embedding.
        ``item_vecs``: ``item_emb(items)`` when the caller has looked them up already.
        ``scenarios`` (B, T): the scenario each position predicts for (none: the default)."""
        T = items.shape[1]
        if T > self.cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len {self.cfg.max_len}")
        # right-aligned positions: the most recent event always has position max_len - 1
        pos = torch.arange(self.cfg.max_len - T, self.cfg.max_len, device=items.device)
        e = self.item_emb(items) if item_vecs is None else item_vecs
        if masked is not None:
            e = torch.where(masked.unsqueeze(-1), self.mask_emb.to(e.dtype), e)
        x = e * math.sqrt(self.cfg.dim) + self.pos_emb(pos)[None] + self.type_emb(types)
        if scenarios is not None and self.scen_emb is not None:
            x = x + self.scen_emb(scenarios)
        return x * (items != PAD).unsqueeze(-1)

    def forward(self, items: torch.Tensor, types: torch.Tensor, x: torch.Tensor | None = None,
                causal: bool = True, scenarios: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, T, D) at every position; ``x`` overrides the input embeddings (and
        ``scenarios``); ``causal=False`` attends both ways (the bidirectional objectives)."""
        if x is None:
            x = self.embed(items, types, scenarios=scenarios)
        mask = self.attention_mask(items, causal)
        h = self.emb_drop(x)
        for block in self.blocks:
            h = block(h, mask[:, None])                                          # (B, 1, T, T)
        return self.ln_f(h)

    @staticmethod
    def attention_mask(items: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """(B, T, T) bool, True where query t may attend to key s: real items only (and, when
        causal, not later ones); a padding query attends to itself only (no NaN rows)."""
        B, T = items.shape
        mask = (items != PAD)[:, None, :].expand(B, T, T)
        if causal:
            mask = mask & torch.ones(T, T, dtype=torch.bool, device=items.device).tril()[None]
        return mask | torch.eye(T, dtype=torch.bool, device=items.device)[None]

    # ---- serving-side API --------------------------------------------------------------------
    def encode_sequences(self, item_rows: torch.Tensor, types: torch.Tensor,
                         item_vecs: torch.Tensor | None = None,
                         scenarios: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors (B, D): hidden state at the last (most recent) position; equal to
        ``forward(item_rows, types, scenarios=scenarios)[:, -1]`` (no dropout: call it in eval
        mode), but the last block computes that position only, about a third less work for two
        blocks."""
        T, keep = item_rows.shape[1], self.cfg.max_len
        if T > keep:  # keep the most recent max_len events
            item_rows, types = item_rows[:, -keep:], types[:, -keep:]
            item_vecs = None if item_vecs is None else item_vecs[:, -keep:]
            scenarios = None if scenarios is None else scenarios[:, -keep:]
        mask = self.attention_mask(item_rows)[:, None]                          # (B, 1, T, T)
        h = self.emb_drop(self.embed(item_rows, types, item_vecs=item_vecs, scenarios=scenarios))
        for block in self.blocks[:-1]:
            h = block(h, mask)
        return self.ln_f(self.blocks[-1].forward_last(h, mask[:, :, -1:]))[:, -1]

    @torch.no_grad()
    def serving_encoder(self) -> Callable[..., torch.Tensor]:
        """``encode_sequences`` for inference, as one TorchScript call after the item lookup.

        Why: every torch op called from Python releases the GIL and must take it back, and a
        thread that wants it back while another thread runs Python waits up to the interpreter's
        switch interval (5 ms). Eager encoding makes ~40 such calls (``bench/encode_gil.py``
        measures both ways, alone and beside a thread running Python).

        The trace shares this encoder's weights (in-place updates and ``load_state_dict`` show),
        runs in eval mode (no dropout), and leaves the item-table lookup outside, so ``grow``
        keeps it valid (the trace holds on to the item table it was made with: memory, not
        results). It is bound to the device the encoder is on now: trace again after moving it.
        Sequences longer than ``max_len`` keep their most recent events; ``encode(items, types,
        scenarios=None)`` (no scenarios: the default everywhere)."""
        was_training = self.training
        self.eval()
        try:
            example = _trace_example(self)
            with warnings.catch_warnings():  # shape checks that the trace fixes are handled in encode()
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                body = torch.jit.trace_module(_LastHidden(self), {"forward": example}, check_trace=False)
            # TorchScript profiles a graph in its first call and optimises it in the second: ~10 ms
            # each for the 2-layer encoder on the 2-core box, 4-5x a query. Spend them here, under
            # no_grad as serving calls it, not in the first queries after a model swap.
            with torch.no_grad():
                for _ in range(WARM_UP_CALLS):
                    body(*example)
        finally:
            self.train(was_training)
        max_len = self.cfg.max_len

        def encode(item_rows: torch.Tensor, types: torch.Tensor,
                   scenarios: torch.Tensor | None = None) -> torch.Tensor:
            if scenarios is None:
                scenarios = torch.zeros_like(item_rows)
            if item_rows.shape[1] > max_len:
                item_rows, types, scenarios = (t[:, -max_len:] for t in (item_rows, types, scenarios))
            return body(self.item_emb(item_rows), item_rows, types, scenarios)

        encode.traced = body  # the TorchScript module (tests look at its execution plan)
        return encode

    def item_vectors(self) -> torch.Tensor:
        """Item table (N, D), padding row 0 included (the caller drops it)."""
        return self.item_emb.weight

    # ---- online growth -----------------------------------------------------------------------
    @torch.no_grad()
    def grow(self, n_new_rows: int, init: torch.Tensor | None = None) -> None:
        """Append ``n_new_rows`` item rows, keeping every trained row; ``init`` (n_new, D) optional."""
        if n_new_rows <= 0:
            return
        old = self.item_emb.weight
        new = torch.empty(n_new_rows, self.cfg.dim, device=old.device, dtype=old.dtype)
        if init is None:
            nn.init.normal_(new, std=0.02)
        else:
            new.copy_(init)
        # from_pretrained takes the grown table as it is: nn.Embedding(n, dim) would first fill all
        # n rows with random values (half the cost of growing a 100k-item table) to overwrite them.
        emb = nn.Embedding.from_pretrained(torch.cat([old, new], 0), freeze=False, padding_idx=PAD)
        self.item_emb = emb
        self.cfg.n_items = emb.num_embeddings


class _LastHidden(nn.Module):
    """``encode_sequences`` from looked-up item vectors: what ``serving_encoder`` traces."""

    def __init__(self, encoder: SeqEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, item_vecs: torch.Tensor, items: torch.Tensor, types: torch.Tensor,
                scenarios: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_sequences(items, types, item_vecs=item_vecs, scenarios=scenarios)


def _trace_example(encoder: SeqEncoder) -> tuple[torch.Tensor, ...]:
    """Two sequences, one left-padded; T=2 so no size is a constant 1 in the trace."""
    device = encoder.item_emb.weight.device
    items = torch.tensor([[0, 1], [1, 1]], device=device).clamp(max=encoder.cfg.n_items - 1)
    types = (items != PAD).long()
    return encoder.item_emb(items).detach(), items, types, torch.zeros_like(items)
