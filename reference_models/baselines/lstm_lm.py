"""The WikiText-103 normalisation baseline: a 1-layer LSTM language model (official_rules.md §1.2).

§1.2: "1-layer LSTM, 2048 hidden units, tied 512-d embedding/softmax, 2048→512 projection
(arXiv:1803.10049)", **159M** params and **318M** ops per token; "318M = 2 × 159M, i.e. one multiply-add per
parameter per token" [INF]. Layout here: embedding 267,735 × 512 → ``nn.LSTM(512, 2048)`` → ``Linear(2048,
512)`` projection → decoder ``Linear(512, 267,735)`` whose weight *is* the embedding table (tied, stored once).

Weights (vocabulary V = 267,735, §1.1):

- embedding / tied decoder weight  V·512            = 137,080,320
- LSTM W_ih 4·2048·512 + W_hh 4·2048·2048          =  20,971,520
- projection 2048·512                              =   1,048,576
- without any bias                                 = 159,100,416  (159.1M)

The published "159M" does not say which biases the model has; any choice rounds to 159M. Chosen here, as
torch lays the layers out: the LSTM's two bias vectors b_ih + b_hh (2·4·2048 = 16,384), the projection's
bias (512) and the softmax bias (V = 267,735): 159,100,416 + 284,631 = **159,385,047** parameters.

Multiply-adds per token are the same 159,100,416 (every weight once: the tied table is read by the
decoder, the embedding lookup costs nothing), so 2 × MACs = 318,200,832 ≈ **318M** under ``flops``.

The table alone is 137M floats (548 MB): the factory builds on the meta device by default (no values, no
memory); ``device="cpu"`` builds real, untrained weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reference_models.registry import register

#: WikiText-103 word-level vocabulary (official_rules.md §1.1).
WT103_VOCAB = 267_735


class LstmLanguageModel(nn.Module):
    """Embedding → 1-layer LSTM → linear projection → decoder tied to the embedding.

    ``forward(tokens)``: token ids (B, T), batch first → logits (B, T, V) over the vocabulary.
    """

    def __init__(self, vocab_size: int = WT103_VOCAB, emsize: int = 512, hidden: int = 2048,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emsize, device=device)
        self.lstm = nn.LSTM(emsize, hidden, num_layers=1, batch_first=True, device=device)
        self.projection = nn.Linear(hidden, emsize, device=device)
        self.decoder = nn.Linear(emsize, vocab_size, device="meta")  # its own weight is never allocated
        self.decoder.weight = self.embedding.weight  # tied: one table, stored once
        self.decoder.bias = nn.Parameter(torch.zeros(vocab_size, device=device))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embedding(tokens))
        return self.decoder(self.projection(h))


@register("wt103_lstm_baseline", track="wikitext103", rules="flops", input_shape=(1, 1), input_dtype="long",
          description="WikiText-103 normalisation baseline: 1-layer LSTM 2048, tied 512-d embedding, "
          "2048→512 projection (159M params, 318M ops per token)")
def wt103_lstm_baseline(vocab_size: int = WT103_VOCAB, device: str | torch.device = "meta") -> LstmLanguageModel:
    """The §1.2 baseline LSTM, on the meta device unless ``device`` says otherwise."""
    return LstmLanguageModel(vocab_size, device=device)
