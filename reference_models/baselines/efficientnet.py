"""EfficientNet-B0 (Tan & Le, arXiv:1905.11946) in plain torch, as specified for the team_scores.md §2.4
reference: every conv without bias and followed by BN, SiLU activations, squeeze-and-excitation with
``C_red = max(1, int(input_filters*0.25))``, symmetric padding ``k//2``, dropout before the FC.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reference_models.registry import register


@dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks, decoded from the TF string ``r{n}_k{k}_s{ss}_e{e}_i{i}_o{o}_se{r}``."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int
    se_ratio: float

    @classmethod
    def parse(cls, text: str) -> BlockArgs:
        """Decode a TF block string, e.g. ``"r2_k3_s22_e6_i16_o24_se0.25"``."""
        fields: dict[str, str] = {}
        for part in text.split("_"):
            key = "se" if part.startswith("se") else part[0]
            fields[key] = part[len(key):]
        stride = fields["s"]
        if len(stride) == 2 and stride[0] != stride[1]:
            raise ValueError(f"non-square stride in {text!r}")
        return cls(
            repeats=int(fields["r"]),
            kernel=int(fields["k"]),
            stride=int(stride[0]),
            expand=int(fields["e"]),
            cin=int(fields["i"]),
            cout=int(fields["o"]),
            se_ratio=float(fields.get("se", "0")),
        )


B0_BLOCKS: tuple[str, ...] = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)


class SqueezeExcite(nn.Module):
    """mean over H, W (keepdim) → 1×1 conv (bias) → SiLU → 1×1 conv (bias) → Sigmoid → channel scale."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        """Scale each channel of ``x`` by its excitation."""
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class MBConv(nn.Module):
    """Mobile inverted bottleneck with SE: [expand 1×1] → depthwise k×k → SE → project 1×1 (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, se_ratio: float) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.expand = (
            nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
            if expand != 1
            else nn.Identity()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
        )
        self.se = SqueezeExcite(hidden, max(1, int(cin * se_ratio))) if se_ratio > 0 else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """Block forward with the residual add when stride is 1 and channels match."""
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.use_residual:
            out = out + x
        return out


class EfficientNet(nn.Module):
    """EfficientNet from a list of TF block strings (no width/depth scaling: B0)."""

    def __init__(
        self,
        blocks: tuple[str, ...] = B0_BLOCKS,
        stem: int = 32,
        head: int = 1280,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.SiLU()
        )
        layers: list[nn.Module] = []
        cin = stem
        for text in blocks:
            args = BlockArgs.parse(text)
            if args.cin != cin:
                raise ValueError(f"block {text!r} expects {args.cin} input channels, previous gives {cin}")
            for i in range(args.repeats):
                layers.append(
                    MBConv(cin, args.cout, args.kernel, args.stride if i == 0 else 1, args.expand, args.se_ratio)
                )
                cin = args.cout
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.SiLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images."""
        out = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(out, 1)))


@register(
    "efficientnet_b0",
    track="imagenet",
    rules="micronet2019",
    bits=None,
    input_shape=(1, 3, 224, 224),
    description="EfficientNet-B0 at 224x224, 1000 classes (team_scores.md §2.4 reference)",
)
def efficientnet_b0(num_classes: int = 1000, dropout: float = 0.2) -> EfficientNet:
    """EfficientNet-B0 with the standard block arguments."""
    return EfficientNet(B0_BLOCKS, 32, 1280, num_classes=num_classes, dropout=dropout)
