"""Benchmark: a 7B-parameter LLaMA-like model built under ``torch.device("meta")`` scored with ``scorer.score``.

Usage: ``python benchmarks/bench_meta_7b.py [--capture auto|fx|export|dispatch] [--layers 32] [--seq 128]
[--allow-unknown]``

The config is LLaMA-7B's (Touvron et al. 2023, table 2): 32 layers, d_model 4096, 32 heads, SwiGLU MLP of
width 11008, RMSNorm, vocabulary 32000, untied output head; no rotary embedding. RMSNorm is written out as
``x * rsqrt(mean(x²) + eps) * w`` and attention as ``softmax(q·kᵀ·scale)·v``. The weights are on the meta device
(6.7B float32 weights would be 27 GB), so the scorer must never make a tensor of a weight's size: it prints the
wall time of ``score()`` and the process's peak resident memory (``resource.getrusage``), before and after.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from scorer import score


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.heads, -1).transpose(1, 2)
        k = self.k(x).view(B, T, self.heads, -1).transpose(1, 2)
        v = self.v(x).view(B, T, self.heads, -1).transpose(1, 2)
        scale = q.shape[-1] ** -0.5
        att = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(d, hidden, bias=False)
        self.up = nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.attn_norm = RMSNorm(d)
        self.attn = Attention(d, heads)
        self.mlp_norm = RMSNorm(d)
        self.mlp = SwiGLU(d, hidden)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, vocab: int = 32000, d: int = 4096, layers: int = 32, heads: int = 32, hidden: int = 11008):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def expected_params(vocab: int = 32000, d: int = 4096, layers: int = 32, hidden: int = 11008) -> int:
    """Per block 4·d² (q, k, v, o) + 3·d·hidden (SwiGLU) + 2·d (two RMSNorm weights); embedding and head
    vocab·d each; the final norm d."""
    return layers * (4 * d * d + 3 * d * hidden + 2 * d) + 2 * vocab * d + d


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Build the model on meta, score it once, print time, memory and totals."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--capture", default="auto")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--allow-unknown", action="store_true", help="count ops without a rule as zero")
    args = ap.parse_args()
    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = Llama(layers=args.layers)
    t_build = time.perf_counter() - t0
    idx = torch.zeros(1, args.seq, dtype=torch.long)
    t0 = time.perf_counter()
    rep = score(model, example_inputs=(idx,), capture=args.capture, allow_unknown=args.allow_unknown)
    t_score = time.perf_counter() - t0
    want = expected_params(layers=args.layers)
    print(f"capture={rep.capture} layers={args.layers} seq={args.seq}")
    print(f"build on meta: {t_build:.2f} s   score(): {t_score:.2f} s")
    print(f"peak RSS: {rss_start:.0f} MB after imports, {peak_rss_mb():.0f} MB after scoring")
    print(f"params: {rep.totals['params']:,.0f} (expected {want:,}, unique {sum(p.numel() for p in model.parameters()):,})")
    print(f"mults: {rep.totals['mults']:,.0f}  adds: {rep.totals['adds']:,.0f}")
    if rep.unknown:
        print(f"WARNING: {len(rep.unknown)} op(s) without a rule counted as zero: "
              + ", ".join(sorted({u['target'] for u in rep.unknown})))


if __name__ == "__main__":
    main()
