"""A zoo of small but real model families, written the way their reference libraries write them (timm,
transformers, torchvision, the PyTorch word-language-model example, torch.ao.quantization), in plain torch.

Each builder returns ``(model, example_inputs)`` with batch 1 and sizes small enough that one score takes well
under a second. ``ZOO`` maps a family name to its builder. Used by tests/test_zoo.py (issue 8, "Done when").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------- ViT (timm)


class PatchEmbed(nn.Module):
    """timm.layers.PatchEmbed: a strided Conv2d, flattened to tokens."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # B, N, C


class Attention(nn.Module):
    """timm.models.vision_transformer.Attention: fused qkv, F.scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    """timm.layers.Mlp: fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm ViT block: pre-LayerNorm attention and MLP, each with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm VisionTransformer: patch embed, learned class token and position embedding, blocks, final norm,
    head on the class token."""

    def __init__(self, img_size=16, patch_size=4, in_chans=3, num_classes=10, embed_dim=32, depth=2, num_heads=4):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches + 1, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit() -> tuple[nn.Module, tuple]:
    return VisionTransformer(), (torch.randn(1, 3, 16, 16),)


# --------------------------------------------------------------------------------------------- Swin (timm v1)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def get_relative_position_index(win_h: int, win_w: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += win_h - 1
    relative[:, :, 1] += win_w - 1
    relative[:, :, 0] *= 2 * win_w - 1
    return relative.sum(-1)  # Wh*Ww, Wh*Ww


class WindowAttention(nn.Module):
    """timm Swin v1 WindowAttention: relative-position bias table indexed by a registered index buffer, the
    shifted-window mask added to the logits, manual ``q @ k.transpose(-2, -1)`` and softmax."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_area = window_size * window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window_size - 1) ** 2, num_heads) * 0.02)
        self.register_buffer(
            "relative_position_index", get_relative_position_index(window_size, window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _get_rel_pos_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).contiguous()
        return bias.unsqueeze(0)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = q @ k.transpose(-2, -1) * self.scale
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


class SwinTransformerBlock(nn.Module):
    """timm Swin v1 block: (shifted) window attention with the ``attn_mask`` buffer, then an MLP."""

    def __init__(self, dim: int, input_resolution: int, num_heads: int, window_size: int, shift_size: int):
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)
        if shift_size > 0:
            H = W = input_resolution
            img_mask = torch.zeros((1, H, W, 1))
            cnt = 0
            for h in (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None)):
                for w in (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None)):
                    img_mask[:, h, w, :] = cnt
                    cnt += 1
            mask_windows = window_partition(img_mask, window_size).view(-1, window_size * window_size)
            attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)
        else:
            attn_mask = None
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def forward(self, x):
        B, H, W, C = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        x_windows = window_partition(x, self.window_size).view(-1, self.window_size * self.window_size, C)
        attn_windows = self.attn(x_windows, mask=self.attn_mask)
        attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
        x = window_reverse(attn_windows, self.window_size, H, W)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    """Two Swin blocks, regular then shifted windows, on B, H, W, C tokens."""

    def __init__(self, dim=16, resolution=8, num_heads=2, window_size=4):
        super().__init__()
        self.blocks = nn.Sequential(
            SwinTransformerBlock(dim, resolution, num_heads, window_size, 0),
            SwinTransformerBlock(dim, resolution, num_heads, window_size, window_size // 2),
        )

    def forward(self, x):
        return self.blocks(x)


def swin() -> tuple[nn.Module, tuple]:
    return SwinStage(), (torch.randn(1, 8, 8, 16),)


# ------------------------------------------------------------------------------------------ BERT (transformers)


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab_size: int = 2):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)), persistent=False)

    def forward(self, input_ids, token_type_ids):
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.num_attention_heads = num_heads
        self.attention_head_size = hidden // num_heads
        self.all_head_size = hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(0.1)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask):
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_scores = attention_scores + attention_mask
        attention_probs = self.dropout(nn.functional.softmax(attention_scores, dim=-1))
        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        new_context_layer_shape = context_layer.size()[:-2] + (self.all_head_size,)
        return context_layer.view(new_context_layer_shape)


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """transformers' original BERT gelu: ``x * 0.5 * (1 + erf(x / sqrt(2)))``."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class BertLayer(nn.Module):
    def __init__(self, hidden: int, num_heads: int, intermediate: int):
        super().__init__()
        self.attention = BertSelfAttention(hidden, num_heads)
        self.attention_output = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, hidden_states, attention_mask):
        attn = self.attention_output(self.attention(hidden_states, attention_mask))
        attention_output = self.attention_norm(attn + hidden_states)
        layer_output = self.output(gelu_erf(self.intermediate(attention_output)))
        return self.output_norm(layer_output + attention_output)


class BertModel(nn.Module):
    """transformers BertModel: embeddings, extended attention mask ``(1 - mask) * -10000``, layers, tanh
    pooler on the first token."""

    def __init__(self, vocab_size=50, hidden=32, num_layers=2, num_heads=4, intermediate=64, max_positions=16):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_positions)
        self.layer = nn.ModuleList([BertLayer(hidden, num_heads, intermediate) for _ in range(num_layers)])
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask, token_type_ids):
        extended_attention_mask = attention_mask[:, None, None, :].to(dtype=torch.float32)
        extended_attention_mask = (1.0 - extended_attention_mask) * -10000.0
        hidden_states = self.embeddings(input_ids, token_type_ids)
        for layer in self.layer:
            hidden_states = layer(hidden_states, extended_attention_mask)
        pooled_output = torch.tanh(self.pooler(hidden_states[:, 0]))
        return hidden_states, pooled_output


def bert() -> tuple[nn.Module, tuple]:
    input_ids = torch.randint(1, 50, (1, 8))
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    token_type_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    return BertModel(), (input_ids, attention_mask, token_type_ids)


# ----------------------------------------------------------------------------------------- GPT-2 (transformers)


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: a linear layer with the weight stored [in, out]."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """transformers NewGELUActivation (tanh form)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim, self.split_size = num_heads, embed_dim // num_heads, embed_dim
        self.c_attn = Conv1D(3 * embed_dim, embed_dim)
        self.c_proj = Conv1D(embed_dim, embed_dim)

    def _split_heads(self, tensor):
        new_shape = tensor.size()[:-1] + (self.num_heads, self.head_dim)
        return tensor.view(new_shape).permute(0, 2, 1, 3)

    def _merge_heads(self, tensor):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        return tensor.view(tensor.size()[:-2] + (self.num_heads * self.head_dim,))

    def forward(self, hidden_states):
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query, key, value = self._split_heads(query), self._split_heads(key), self._split_heads(value)
        attn_output = F.scaled_dot_product_attention(query, key, value, is_causal=True)
        return self.c_proj(self._merge_heads(attn_output))


class GPT2MLP(nn.Module):
    def __init__(self, intermediate: int, embed_dim: int):
        super().__init__()
        self.c_fc = Conv1D(intermediate, embed_dim)
        self.c_proj = Conv1D(embed_dim, intermediate)

    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim, eps=1e-5)
        self.attn = GPT2Attention(embed_dim, num_heads)
        self.ln_2 = nn.LayerNorm(embed_dim, eps=1e-5)
        self.mlp = GPT2MLP(4 * embed_dim, embed_dim)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2LMHeadModel(nn.Module):
    """transformers GPT2LMHeadModel: token + position embeddings, blocks, final norm, head tied to ``wte``."""

    def __init__(self, vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList([GPT2Block(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, input_ids):
        position_ids = torch.arange(0, input_ids.shape[-1], dtype=torch.long, device=input_ids.device).unsqueeze(0)
        hidden_states = self.wte(input_ids) + self.wpe(position_ids)
        for block in self.h:
            hidden_states = block(hidden_states)
        return self.lm_head(self.ln_f(hidden_states))


def gpt2() -> tuple[nn.Module, tuple]:
    return GPT2LMHeadModel(), (torch.randint(0, 64, (1, 8)),)


# ------------------------------------------------------------------------ RNN LMs (PyTorch word_language_model)


class RNNModel(nn.Module):
    """examples/word_language_model RNNModel: embedding, 2-layer LSTM/GRU, decoder tied to the embedding."""

    def __init__(self, rnn_type: str, ntoken=40, ninp=16, nlayers=2):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = getattr(nn, rnn_type)(ninp, ninp, nlayers, batch_first=True, dropout=0.2)
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight

    def forward(self, input):
        emb = self.drop(self.encoder(input))
        output, _ = self.rnn(emb)
        decoded = self.decoder(self.drop(output))
        return F.log_softmax(decoded, dim=-1)


def lstm_lm() -> tuple[nn.Module, tuple]:
    return RNNModel("LSTM"), (torch.randint(0, 40, (1, 5)),)


def gru_lm() -> tuple[nn.Module, tuple]:
    return RNNModel("GRU"), (torch.randint(0, 40, (1, 5)),)


# ------------------------------------------------------------------------------------------- torch.nn modules


def transformer_encoder() -> tuple[nn.Module, tuple]:
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2), (torch.randn(1, 6, 32),)


def multihead_attention() -> tuple[nn.Module, tuple]:
    x = torch.randn(1, 6, 32)
    return nn.MultiheadAttention(32, 4, batch_first=True), (x, x, x)


# ------------------------------------------------------------------------------------ ShuffleNetV2 (torchvision)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


def _depthwise(i: int, o: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, kernel_size, stride, 1, bias=False, groups=i)


class InvertedResidual(nn.Module):
    """torchvision ShuffleNetV2 unit: channel split (chunk) or two strided branches, concat, channel shuffle."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(inp, inp, 3, stride), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True),
            _depthwise(branch_features, branch_features, 3, stride), nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.stage2 = nn.Sequential(InvertedResidual(16, 32, 2), InvertedResidual(32, 32, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stage2(self.conv1(x))
        return self.fc(x.mean([2, 3]))


def shufflenet_v2() -> tuple[nn.Module, tuple]:
    return ShuffleNetV2(), (torch.randn(1, 3, 16, 16),)


# -------------------------------------------------------------------------------------------- MixNet-S (timm)


def _split_channels(num_chan: int, num_groups: int) -> list[int]:
    split = [num_chan // num_groups for _ in range(num_groups)]
    split[0] += num_chan - sum(split)
    return split


class MixedConv2d(nn.ModuleDict):
    """timm MixedConv2d: channels split, one depthwise conv per kernel size, concatenated."""

    def __init__(self, channels: int, kernel_sizes=(3, 5, 7), stride: int = 1):
        super().__init__()
        self.splits = _split_channels(channels, len(kernel_sizes))
        for idx, (k, ch) in enumerate(zip(kernel_sizes, self.splits, strict=True)):
            self.add_module(str(idx), nn.Conv2d(ch, ch, k, stride=stride, padding=k // 2, groups=ch, bias=False))

    def forward(self, x):
        x_split = torch.split(x, self.splits, 1)
        x_out = [c(x_split[i]) for i, c in enumerate(self.values())]
        return torch.cat(x_out, 1)


class SqueezeExcite(nn.Module):
    """timm efficientnet SqueezeExcite: mean, reduce conv, act, expand conv, sigmoid gate."""

    def __init__(self, in_chs: int, rd_channels: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * x_se.sigmoid()


class MixNetBlock(nn.Module):
    """timm InvertedResidual as MixNet-S uses it: 1x1 expand, BN, swish, MixConv 3/5/7 depthwise, one BN over the
    concatenation, swish, SE, 1x1 project, BN, residual."""

    def __init__(self, chs: int, exp_ratio: int = 3, se_ratio: float = 0.5):
        super().__init__()
        mid = chs * exp_ratio
        self.conv_pw = nn.Conv2d(chs, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = nn.SiLU(inplace=True)
        self.conv_dw = MixedConv2d(mid, (3, 5, 7))
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid, int(chs * se_ratio))
        self.conv_pwl = nn.Conv2d(mid, chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(chs)

    def forward(self, x):
        shortcut = x
        x = self.act(self.bn1(self.conv_pw(x)))
        x = self.act(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(self.se(x)))
        return x + shortcut


class MixNetS(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.SiLU(inplace=True)
        self.blocks = nn.Sequential(MixNetBlock(16), MixNetBlock(16))
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.classifier(x.mean((2, 3)))


def mixnet_s() -> tuple[nn.Module, tuple]:
    return MixNetS(), (torch.randn(1, 3, 16, 16),)


# ------------------------------------------------------------------------------------ QAT (torch.ao.quantization)


class SmallConvNet(nn.Module):
    """conv-bn-relu x2, pool, linear: the classic QAT tutorial shape."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class EagerQATNet(SmallConvNet):
    """SmallConvNet between QuantStub and DeQuantStub, for eager-mode QAT."""

    def __init__(self, num_classes=10):
        super().__init__(num_classes)
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(super().forward(self.quant(x)))


def _calibrate(model: nn.Module, shape: tuple[int, ...]) -> None:
    """A few training-mode forward passes, so observers and fake-quantisers hold real ranges."""
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(shape, generator=gen))
    model.eval()


def eager_qat() -> tuple[nn.Module, tuple]:
    from torch.ao.quantization import fuse_modules_qat, get_default_qat_qconfig, prepare_qat

    model = EagerQATNet().train()
    model = fuse_modules_qat(model, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]])
    model.qconfig = get_default_qat_qconfig("fbgemm")
    prepare_qat(model, inplace=True)
    _calibrate(model, (2, 3, 8, 8))
    return model, (torch.randn(1, 3, 8, 8),)


def fx_qat() -> tuple[nn.Module, tuple]:
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    example = (torch.randn(1, 3, 8, 8),)
    model = prepare_qat_fx(SmallConvNet().train(), get_default_qat_qconfig_mapping("fbgemm"), example)
    _calibrate(model, (2, 3, 8, 8))
    return model, example


ZOO: dict[str, Callable[[], tuple[nn.Module, tuple]]] = {
    "vit": vit,
    "swin": swin,
    "bert": bert,
    "gpt2": gpt2,
    "lstm_lm": lstm_lm,
    "gru_lm": gru_lm,
    "transformer_encoder": transformer_encoder,
    "multihead_attention": multihead_attention,
    "shufflenet_v2": shufflenet_v2,
    "mixnet_s": mixnet_s,
    "eager_qat": eager_qat,
    "fx_qat": fx_qat,
}


def build(name: str) -> tuple[nn.Module, tuple]:
    """The zoo model ``name`` in eval mode (how it is scored) and its example inputs."""
    model, inputs = ZOO[name]()
    return model.eval(), inputs
