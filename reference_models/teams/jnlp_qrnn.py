"""JNLP (WikiText-103, LB 0.8232): a 4-layer QRNN language model (team_scores.md §1.3, §2.8).

Architecture from the team's public code (`binhdt95/Jaist-MicroNet-Challenge`, `model.py` ``RNNModel`` with
``rnn_type='QRNN'``, `test.py` ``read_model``, `counting.py` ``QRNN``; README: emsize 300, nhid 1800):

- ``encoder``: embedding 267,735 × 300;
- ``rnns``: 4 QRNN layers 300→1800, 1800→1800, 1800→1800, 1800→300 (the last one's hidden size is emsize
  because the decoder is tied); layer 0 has window 2 (it reads x_{t−1} too: ``save_prev_x``), the others
  window 1; every layer has the output gate;
- ``decoder``: ``Linear(300, 267,735)`` with a bias, its weight tied to the embedding, then the prediction
  step, the maximum over the vocabulary (their counter's ``GlobalMax``).

One QRNN layer (torchqrnn, as `counting.py` transcribes it): Y = Linear(window·in, 3·hidden)(X);
Z, F, O = Y.chunk(3); Z = tanh(Z), F = σ(F), O = σ(O); c_t = f_t·z_t + (1 − f_t)·c_{t−1}; h_t = o_t·c_t.

``forward(tokens)`` is one step of online inference (official_rules.md §1.1: per token, batch of one
sequence): tokens (B, 1) → (logits (B, 1, V), next token (B, 1)). The step reads the recurrent state
c_{t−1} of every layer and layer 0's x_{t−1} from buffers (zero: the start of a stream); the counts do not
depend on the state's values. Written in plain torch ops, so every capture path records the recurrence.
The 80M-float table is built on the meta device by default; ``device="cpu"`` builds real, untrained weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reference_models.baselines.lstm_lm import WT103_VOCAB
from reference_models.registry import register


class QRNNLayer(nn.Module):
    """One QRNN layer, one time step, with the output gate (torchqrnn ``QRNNLayer``, ``output_gate=True``)."""

    def __init__(self, input_size: int, hidden_size: int, window: int = 1,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"window must be 1 or 2, got {window}")
        self.input_size, self.hidden_size, self.window = input_size, hidden_size, window
        self.linear = nn.Linear(window * input_size, 3 * hidden_size, device=device)
        self.register_buffer("prev_c", torch.zeros(1, 1, hidden_size, device=device), persistent=False)
        if window == 2:
            self.register_buffer("prev_x", torch.zeros(1, 1, input_size, device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, input_size) → h (B, 1, hidden_size)."""
        torch._assert(x.shape[1] == 1, "QRNNLayer runs one time step: x must be (batch, 1, features)")
        if self.window == 2:
            x = torch.cat([self.prev_x.expand_as(x), x], dim=-1)  # [x_{t-1}, x_t]
        z, f, o = self.linear(x).chunk(3, dim=-1)
        z, f, o = torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)
        c = f * z + (1 - f) * self.prev_c  # ForgetMult
        return o * c


class TiedDecoder(nn.Module):
    """Softmax layer tied to the embedding, then the prediction step (the maximum over the vocabulary)."""

    def __init__(self, embedding: nn.Embedding, device: str | torch.device | None = None) -> None:
        super().__init__()
        vocab, emsize = embedding.weight.shape
        self.linear = nn.Linear(emsize, vocab, device="meta")  # its own weight is never allocated
        self.linear.weight = embedding.weight
        self.linear.bias = nn.Parameter(torch.zeros(vocab, device=device))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.linear(h)
        return logits, logits.argmax(dim=-1)


class JnlpQRNN(nn.Module):
    """JNLP's QRNN language model, one online step: tokens (B, 1) → (logits (B, 1, V), next token (B, 1))."""

    def __init__(self, vocab_size: int = WT103_VOCAB, emsize: int = 300, nhid: int = 1800, nlayers: int = 4,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, emsize, device=device)
        sizes = [emsize] + [nhid] * (nlayers - 1) + [emsize]  # the last layer's hidden size is emsize (tied)
        self.rnns = nn.ModuleList(
            QRNNLayer(sizes[i], sizes[i + 1], window=2 if i == 0 else 1, device=device) for i in range(nlayers)
        )
        self.decoder = TiedDecoder(self.encoder, device=device)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(tokens)
        for rnn in self.rnns:
            h = rnn(h)
        return self.decoder(h)


@register("jnlp_qrnn", track="wikitext103", rules="jnlp2019", bits=16, input_shape=(1, 1),
          input_dtype="long",
          description="JNLP QRNN LM (4 layers, emsize 300, nhid 1800, tied), WikiText-103")
def jnlp_qrnn(vocab_size: int = WT103_VOCAB, device: str | torch.device = "meta") -> JnlpQRNN:
    """JNLP's model (team_scores.md §2.8), on the meta device unless ``device`` says otherwise."""
    return JnlpQRNN(vocab_size, device=device)
