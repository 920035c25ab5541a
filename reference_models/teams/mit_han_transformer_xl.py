"""MIT-HAN-Lab's WikiText-103 entry (team_scores.md §2.5) as a one-token STEP model for online inference.

Source: `mit-han-lab/neurips-micronet` at commit 9668d5b~1, `quantized_model.py` (``Decoder``, ``Transformer``,
``AdaptiveEmbedding``, ``ProjectedAdaptiveLogSoftmax``, ``ExplicitQuantize``) in the configuration the submitted
notebooks `micronet_challenge-wikitext_103-{1,2,3}.ipynb` print: 8 pre-LN decoder layers, d = 256, 8 heads of 24,
attention over C = 97 positions (the current one and 96 cached) with a learned ``pos_emb`` (24 × 97) per layer,
FFN 256→768→256, adaptive input and softmax with bins of 3500 / 21500 / 242735 words (bin dims 256 / 64 / 4, output
tables tied to the input ones, own biases), a trainable cache of 2000 hidden states and 57 activation
quantisers (7 per layer and one before the softmax, ``Transformer.quant``).

One forward reads one token plus the state a streaming run carries: the keys and values of the 96 previous
positions of every layer and the 2000 cached hidden states; so every count is per token (official_rules.md
§1.1). It returns the three bins' probabilities (head softmax over 3500 words + 2 cluster logits, the tails
over 21500 and 242735 words: all computed for every token, as the notebook counts them), the cache's attention
weights over its 2000 entries, the cache mixing weight λ, and the next state. Mixing the cache distribution
into the word distribution (a scatter over the cached token ids) is left to the caller.

The input embedding reads one table per token, chosen by the token's bin: ``paths()`` gives the three ways
through the model and ``route(tokens)`` the bin of each token. The published bin counts on the test set are
``TOKEN_BIN_COUNTS`` (team_scores.md §2.5; the notebooks' ``token_bin_counts``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_models.registry import register

N_LAYERS, D_MODEL, N_HEAD, D_HEAD, D_INNER = 8, 256, 8, 24, 768
N_SEQ = 96  # cached positions per layer; attention spans N_SEQ + 1 = 97
BIN_SIZES = (3500, 21500, 242735)  # words per vocabulary bin (team_scores.md §2.5 "cutoffs")
BIN_STARTS = (0, 3500, 25000)  # first token id of each bin (n_vocab = 267735)
BIN_DIMS = (256, 64, 4)
N_CACHE = 2000
#: Test-set tokens per input-embedding bin (team_scores.md §2.5, notebook cell 4 ``token_bin_counts``).
TOKEN_BIN_COUNTS = (198232, 35479, 11858)
BIN_FRACTIONS = {f"bin{i}": n / sum(TOKEN_BIN_COUNTS) for i, n in enumerate(TOKEN_BIN_COUNTS)}


class ExplicitQuantize(nn.Module):
    """Fake quantiser of `quantized_model.py`: clamp to ±``max_abs``, round to multiples of ``inv_scale``.
    Its two range values are buffers (the notebook's storage cell counts them, team_scores.md §2.5)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)
        self.register_buffer("max_abs", torch.tensor(1.0))
        self.register_buffer("inv_scale", torch.tensor(2.0 / (2 ** self.bits - 1)))

    def forward(self, x: Tensor) -> Tensor:
        """Quantised ``x``."""
        # the activation is the first operand of the first op: torch.export's whole-module capture takes the
        # first tensor flowing in as the quantised value (a leading ``-max_abs`` would make it the buffer)
        x = torch.maximum(torch.minimum(x, self.max_abs), -self.max_abs)
        return torch.round(x / self.inv_scale) * self.inv_scale


class Decoder(nn.Module):
    """One pre-LN layer for one new position: ``x + out(attn)``, then ``+ fc(ln2(·))``."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.quant_ln1 = ExplicitQuantize(bits)
        self.qkv = nn.Linear(D_MODEL, N_HEAD * 3 * D_HEAD)
        self.quant_qkv = ExplicitQuantize(bits)
        self.pos_emb = nn.Parameter(torch.randn(D_HEAD, N_SEQ + 1) * 0.02)
        self.quant_attn = ExplicitQuantize(bits)
        self.quant_attnv = ExplicitQuantize(bits)
        self.out = nn.Linear(N_HEAD * D_HEAD, D_MODEL, bias=False)
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.quant_ln2 = ExplicitQuantize(bits)
        # the team's fc.1 is a fused ReLU + quantiser; here the ReLU and its quantiser are two modules
        self.fc = nn.Sequential(nn.Linear(D_MODEL, D_INNER), nn.ReLU(), ExplicitQuantize(bits),
                                nn.Linear(D_INNER, D_MODEL), ExplicitQuantize(bits))

    def forward(self, x: Tensor, kv: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` [1, 256]; ``kv`` [heads, 96, 48] (keys then values of the previous positions, oldest first).
        Returns the layer output and the next ``kv``."""
        qkv = self.quant_qkv(self.qkv(self.quant_ln1(self.ln1(x)))).reshape(N_HEAD, 1, 3 * D_HEAD)
        q, kv_new = qkv[..., :D_HEAD], qkv[..., D_HEAD:]
        kv_all = torch.cat((kv, kv_new), dim=1)  # [heads, 97, 48], the current position last
        k, v = kv_all[..., :D_HEAD], kv_all[..., D_HEAD:]
        qk = torch.matmul(q, k.transpose(1, 2))  # [heads, 1, 97]
        qe = torch.matmul(q.reshape(N_HEAD, D_HEAD), self.pos_emb).reshape(N_HEAD, 1, N_SEQ + 1)
        attn = (qk + qe) * D_HEAD ** -0.5
        attn = self.quant_attn(F.softmax(attn, dim=-1))
        attnv = self.quant_attnv(torch.matmul(attn, v))  # [heads, 1, 24]
        x = x + self.out(attnv.reshape(1, N_HEAD * D_HEAD))
        x = x + self.fc(self.quant_ln2(self.ln2(x)))
        return x, kv_all[:, 1:]


class MitHanTransformerXL(nn.Module):
    """The step model (module docstring). ``forward(token, kv=None, cache_keys=None)``: ``token`` [1, 1] long;
    ``kv`` [8, heads, 96, 48] and ``cache_keys`` [2000, 256] (zeros when omitted: an empty history). A token
    is looked up in its own bin's table (``route``); ``forward`` on the full model routes the given token."""

    def __init__(self, bits: int = 9) -> None:
        super().__init__()  # no ``bits`` attribute here: a module with one is read as a quantiser
        self.embed = nn.Module()
        self.embed.layers = nn.ModuleList(
            nn.Embedding(size, dim) for size, dim in zip(BIN_SIZES, BIN_DIMS, strict=True))
        self.embed.projections = nn.ModuleList(nn.Linear(dim, D_MODEL, bias=False) for dim in BIN_DIMS[1:])
        self.layers = nn.ModuleList(Decoder(bits) for _ in range(N_LAYERS))
        self.quant = ExplicitQuantize(bits)
        self.loss = nn.Module()
        self.loss.clusters = nn.Linear(D_MODEL, len(BIN_SIZES) - 1)
        self.loss.layers = nn.ModuleList(nn.Linear(dim, size) for size, dim in zip(BIN_SIZES, BIN_DIMS, strict=True))
        self.loss.projections = nn.ModuleList(nn.Linear(D_MODEL, dim, bias=False) for dim in BIN_DIMS[1:])
        for emb, out in zip(self.embed.layers, self.loss.layers, strict=True):
            nn.init.normal_(emb.weight, 0, 0.02)
            out.weight = emb.weight  # tied output tables
        self.loss.cache_theta_inv_softplus = nn.Parameter(torch.tensor(math.log(math.expm1(1.0))))
        self.loss.cache_lambda_inv_sigmoid = nn.Parameter(torch.tensor(math.log(0.1 / 0.9)))
        self.bin: int | None = None  # set on the copies ``paths()`` returns

    # ------------------------------------------------------------------ routing
    def route(self, tokens: Tensor) -> Tensor:
        """Bin index (into ``list(paths())``) of every token."""
        return torch.bucketize(tokens, torch.tensor(BIN_STARTS[1:], device=tokens.device), right=True)

    def paths(self) -> dict[str, nn.Module]:
        """``{"bin0", "bin1", "bin2"}``: the whole step model with the input embedding of that bin; the copies
        share this model's parameters, buffers and module names."""
        out = {}
        for i in range(len(BIN_SIZES)):
            path = copy.copy(self)  # shallow: the parameter, buffer and module tables are shared
            path.bin = i
            out[f"bin{i}"] = path
        return out

    exit_paths = paths

    # ------------------------------------------------------------------ forward
    def embed_token(self, token: Tensor, b: int) -> Tensor:
        """Input embedding of a token of bin ``b``, scaled by √d (`AdaptiveEmbedding.forward`)."""
        if b == 0:
            e = self.embed.layers[0](token)
        else:
            e = self.embed.projections[b - 1](self.embed.layers[b](token - BIN_STARTS[b]))
        return e.reshape(1, D_MODEL) * math.sqrt(D_MODEL)

    def forward(self, token: Tensor, kv: Tensor | None = None, cache_keys: Tensor | None = None) -> tuple:
        """``(head_prob [1, 3502], tail1_prob [1, 21500], tail2_prob [1, 242735], cache_weights [1, 2000],
        cache_lambda, next_kv, next_cache_keys)``."""
        b = self.bin if self.bin is not None else int(self.route(token).reshape(-1)[0])
        if kv is None:
            kv = torch.zeros(N_LAYERS, N_HEAD, N_SEQ, 2 * D_HEAD)
        if cache_keys is None:
            cache_keys = torch.zeros(N_CACHE, D_MODEL)
        x = self.embed_token(token, b)
        next_kv = []
        for i, layer in enumerate(self.layers):
            x, layer_kv = layer(x, kv[i])
            next_kv.append(layer_kv)
        x = self.quant(x)
        loss = self.loss
        head = torch.cat((loss.layers[0](x), loss.clusters(x)), dim=1)
        probs = [F.softmax(head, dim=-1)]
        for i in (1, 2):
            probs.append(F.softmax(loss.layers[i](loss.projections[i - 1](x)), dim=-1))
        theta = F.softplus(loss.cache_theta_inv_softplus)
        cache_weights = F.softmax(theta * torch.matmul(x, cache_keys.t()), dim=-1)
        cache_lambda = torch.sigmoid(loss.cache_lambda_inv_sigmoid)
        next_cache = torch.cat((cache_keys[1:], x), dim=0)
        return (*probs, cache_weights, cache_lambda, torch.stack(next_kv), next_cache)


STEP_INPUT_SHAPES = [(1, 1), (N_LAYERS, N_HEAD, N_SEQ, 2 * D_HEAD), (N_CACHE, D_MODEL)]
STEP_INPUT_DTYPES = ["long", "float32", "float32"]


@register(
    "mit_han_transformer_xl",
    track="wikitext103",
    rules="mit_han2019",
    bits=9,
    input_shape=STEP_INPUT_SHAPES,
    input_dtype=STEP_INPUT_DTYPES,
    path_fractions=BIN_FRACTIONS,
    description="MIT-HAN-Lab WikiText-103 Transformer-XL step model (8×256, adaptive softmax, cache 2000)",
)
def mit_han_transformer_xl(bits: int = 9) -> MitHanTransformerXL:
    """MIT-HAN-Lab's model (team_scores.md §2.5): 9-bit for submissions 1 and 2, 8-bit for submission 3."""
    return MitHanTransformerXL(bits)
