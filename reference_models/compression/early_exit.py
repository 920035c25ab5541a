"""Early exit (OSI AI): a small classifier head after an intermediate block, with confidence thresholding.

A sample leaves at the exit when the exit head's max softmax probability is ``> threshold``; otherwise it
continues to the final classifier. :class:`EarlyExitModel` implements ``exit_paths()`` (docs/contracts.md):
``{exit_name: backbone up to the block + head, "final": whole backbone + head}``; a sample that goes to the
end has also paid for the exit head. The paths are ``torch.fx`` GraphModules that share the model's
submodules (same parameter tensors, names prefixed ``backbone.`` / ``exit_head.``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from reference_models.training.losses import soft_smoothing_loss

__all__ = [
    "EarlyExitModel",
    "ExitHead",
    "attach_exit",
    "choose_threshold",
    "collect_exit_stats",
    "freeze_backbone",
    "measure_exit_fraction",
    "soft_smoothing_loss",
    "train_exit_head",
]


class ExitHead(nn.Module):
    """OSI-style exit head: depthwise kxk + BN + swish, 1x1 conv + BN + swish, GAP, FC."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 136, kernel_size: int = 3) -> None:
        super().__init__()
        self.dw = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                            groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.act1 = nn.SiLU()
        self.pw = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits from an intermediate feature map."""
        x = self.act1(self.bn1(self.dw(x)))
        x = self.act2(self.bn2(self.pw(x)))
        return self.fc(self.flatten(self.pool(x)))


class _Root(nn.Module):
    """Holder so traced paths name modules ``backbone.*`` and ``exit_head.*``."""

    def __init__(self, backbone: nn.Module, exit_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.exit_head = exit_head

    def forward(self, x: Tensor) -> Any:
        return self.backbone(x)


class _SplitTracer(fx.Tracer):
    """Trace only through the ancestors of the exit block; every other module stays a call_module leaf."""

    def __init__(self, through: set[str]) -> None:
        super().__init__()
        self.through = through

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:  # noqa: D102
        return module_qualified_name not in self.through


class EarlyExitModel(nn.Module):
    """A backbone plus one exit head attached to the output of ``block_name``.

    ``forward(x)`` returns the final logits (the unchanged backbone); :meth:`forward_with_exit` returns
    ``(exit_logits, final_logits)``; :meth:`predict` applies the threshold rule per sample.
    """

    def __init__(self, backbone: nn.Module, block_name: str, head: nn.Module, exit_name: str = "exit") -> None:
        super().__init__()
        if exit_name == "final":
            raise ValueError("the exit cannot be called 'final' (that is the backbone's path)")
        modules = dict(backbone.named_modules())
        if block_name not in modules or not block_name:
            raise ValueError(f"backbone has no submodule {block_name!r}")
        self.backbone = backbone
        self.exit_head = head
        self.block_name = block_name
        self.exit_name = exit_name

    def forward(self, x: Tensor) -> Tensor:
        """Final logits of the backbone."""
        return self.backbone(x)

    def _block(self) -> nn.Module:
        return self.backbone.get_submodule(self.block_name)

    def backbone_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(block output, final logits)`` from one backbone pass."""
        feats: list[Tensor] = []
        handle = self._block().register_forward_hook(lambda _m, _i, out: feats.append(out))
        try:
            final = self.backbone(x)
        finally:
            handle.remove()
        if len(feats) != 1:
            raise RuntimeError(f"block {self.block_name!r} ran {len(feats)} times in one forward")
        return feats[0], final

    def forward_with_exit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(exit_logits, final_logits)`` for every sample."""
        feat, final = self.backbone_with_features(x)
        return self.exit_head(feat), final

    @torch.no_grad()
    def predict(self, x: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
        """Per-sample logits under the exit rule and the bool mask of samples that exited."""
        exit_logits, final = self.forward_with_exit(x)
        exited = F.softmax(exit_logits, dim=1).amax(dim=1) > threshold
        return torch.where(exited[:, None], exit_logits, final), exited

    def _trace(self) -> tuple[_Root, fx.Graph, fx.Node]:
        root = _Root(self.backbone, self.exit_head)
        parts = f"backbone.{self.block_name}".split(".")
        through = {".".join(parts[:i]) for i in range(1, len(parts))}
        try:
            graph = _SplitTracer(through).trace(root)
        except Exception as exc:  # noqa: BLE001 - report any tracing failure the same way
            raise RuntimeError(
                f"cannot fx-trace the backbone down to {self.block_name!r} to build exit paths: {exc}"
            ) from exc
        target = f"backbone.{self.block_name}"
        hits = [n for n in graph.nodes if n.op == "call_module" and n.target == target]
        if len(hits) != 1:
            raise RuntimeError(f"{target!r} is called {len(hits)} times in the traced graph (need exactly 1)")
        return root, graph, hits[0]

    def exit_paths(self) -> dict[str, nn.Module]:
        """``{exit_name: input -> block -> head, "final": input -> backbone (+ head on the block output)}``."""
        root, graph, block = self._trace()
        # exit path: everything up to the block, then the head
        exit_graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in graph.nodes:
            if node.op == "output":
                break
            env[node] = exit_graph.node_copy(node, lambda n: env[n])
            if node is block:
                break
        head_out = exit_graph.call_module("exit_head", (env[block],))
        exit_graph.output(head_out)
        exit_module = fx.GraphModule(root, exit_graph, class_name="ExitPath")
        exit_module.graph.eliminate_dead_code()
        exit_module.recompile()
        # final path: the whole backbone, plus the head (the exit decision was paid for)
        with graph.inserting_after(block):
            head_node = graph.call_module("exit_head", (block,))
        out_node = next(n for n in graph.nodes if n.op == "output")
        final_out = out_node.args[0]
        graph.erase_node(out_node)
        graph.output((final_out, head_node))
        return {
            self.exit_name: exit_module,
            "final": fx.GraphModule(root, graph, class_name="FinalPath"),
        }


def attach_exit(model: nn.Module, block_name: str, head: nn.Module, exit_name: str = "exit") -> EarlyExitModel:
    """Wrap ``model`` with an exit ``head`` on the output of submodule ``block_name``."""
    return EarlyExitModel(model, block_name, head, exit_name)


def freeze_backbone(model: EarlyExitModel, freeze: bool = True) -> None:
    """Stop (or restore) gradients to every backbone parameter; the exit head stays trainable."""
    for p in model.backbone.parameters():
        p.requires_grad_(not freeze)
    for p in model.exit_head.parameters():
        p.requires_grad_(True)


def _split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def train_exit_head(
    model: EarlyExitModel,
    loader: Iterable[Any],
    epochs: int,
    lr: float = 0.13,
    momentum: float = 0.9,
    weight_decay: float = 1e-5,
    loss: str = "soft_smoothing",
    optimizer: torch.optim.Optimizer | None = None,
    update_backbone_bn: bool = True,
) -> list[float]:
    """Train only the exit head (backbone frozen) and return the mean loss per epoch.

    SGD over the head's parameters by default (OSI: lr 0.13, momentum 0.9, wd 1e-5). With
    ``update_backbone_bn=True`` the backbone runs in train mode so its BN running stats keep updating
    (OSI's "batchnorm stabilisation"); its parameters get no gradient either way.
    """
    if loss not in ("soft_smoothing", "ce"):
        raise ValueError(f"loss must be 'soft_smoothing' or 'ce', got {loss!r}")
    loss_fn = soft_smoothing_loss if loss == "soft_smoothing" else F.cross_entropy
    freeze_backbone(model)
    head_params = list(model.exit_head.parameters())
    opt = optimizer or torch.optim.SGD(head_params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    was_training = model.training
    model.train()
    model.backbone.train(update_backbone_bn)
    history: list[float] = []
    try:
        for _ in range(epochs):
            total, count = 0.0, 0
            for batch in loader:
                x, y = _split_batch(batch)
                if y is None:
                    raise ValueError("train_exit_head needs (input, target) batches")
                with torch.no_grad():
                    feat, _ = model.backbone_with_features(x)
                value = loss_fn(model.exit_head(feat), y)
                opt.zero_grad()
                value.backward()
                opt.step()
                total += float(value.detach()) * len(y)
                count += len(y)
            history.append(total / max(count, 1))
    finally:
        model.train(was_training)
    return history


@torch.no_grad()
def collect_exit_stats(model: EarlyExitModel, loader: Iterable[Any]) -> tuple[Tensor, Tensor, Tensor]:
    """``(exit confidences, exit correct, final correct)`` over ``loader`` in eval mode."""
    was_training = model.training
    model.eval()
    confs, exit_ok, final_ok = [], [], []
    try:
        for batch in loader:
            x, y = _split_batch(batch)
            if y is None:
                raise ValueError("collect_exit_stats needs (input, target) batches")
            e, f = model.forward_with_exit(x)
            conf, pred = F.softmax(e, dim=1).max(dim=1)
            confs.append(conf)
            exit_ok.append(pred == y)
            final_ok.append(f.argmax(dim=1) == y)
    finally:
        model.train(was_training)
    return torch.cat(confs), torch.cat(exit_ok), torch.cat(final_ok)


@torch.no_grad()
def measure_exit_fraction(model: nn.Module, loader: Iterable[Any], threshold: float) -> float:
    """Share of samples whose exit max softmax is ``> threshold`` (model in eval mode).

    ``model`` needs ``forward_with_exit(x) -> (exit_logits, final_logits)``; batches are tensors or
    ``(input, target)`` pairs.
    """
    was_training = model.training
    model.eval()
    exited, total = 0, 0
    try:
        for batch in loader:
            x, _ = _split_batch(batch)
            exit_logits, _ = model.forward_with_exit(x)
            exited += int((F.softmax(exit_logits, dim=1).amax(dim=1) > threshold).sum())
            total += exit_logits.shape[0]
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("empty loader")
    return exited / total


def choose_threshold(
    confidences: Tensor | Sequence[float],
    correct: Tensor | Sequence[bool],
    target: float,
    mode: str = "accuracy",
    final_correct: Tensor | Sequence[bool] | None = None,
) -> float:
    """Pick the exit threshold (a sample exits when its confidence is ``> threshold``).

    * ``mode="accuracy"``: the lowest threshold (most exits) whose accuracy reaches ``target``: the
      accuracy of the exited samples, or, when ``final_correct`` is given, the overall accuracy of
      exited samples at the exit and the others at the final classifier.
    * ``mode="fraction"``: the lowest threshold letting at most ``target`` of the samples exit.

    Thresholds only fall between distinct confidences, so tied samples exit together. Returns ``1.0``
    when no exit is acceptable.
    """
    conf = torch.as_tensor(confidences, dtype=torch.float64).flatten()
    ok = torch.as_tensor(correct, dtype=torch.float64).flatten()
    n = conf.numel()
    if n == 0 or ok.numel() != n:
        raise ValueError("confidences and correct must be non-empty and of equal length")
    order = torch.sort(conf, descending=True, stable=True).indices
    conf, ok = conf[order], ok[order]
    # k = number of exiting samples; valid k end a run of equal confidences (plus k = 0)
    ks = [0] + [k for k in range(1, n + 1) if k == n or conf[k] < conf[k - 1]]
    if mode == "accuracy":
        cum_exit = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ok, 0)])
        if final_correct is not None:
            fin = torch.as_tensor(final_correct, dtype=torch.float64).flatten()[order]
            rest = torch.cat([torch.flip(torch.cumsum(torch.flip(fin, [0]), 0), [0]), torch.zeros(1, dtype=fin.dtype)])

            def acc(k: int) -> float:
                return float((cum_exit[k] + rest[k]) / n)
        else:

            def acc(k: int) -> float:
                return float(cum_exit[k] / k) if k else 1.0

        good = [k for k in ks if k > 0 and acc(k) >= target]
        best = max(good, default=0)
    elif mode == "fraction":
        if not 0 <= target <= 1:
            raise ValueError("target fraction must be in [0, 1]")
        best = max(k for k in ks if k <= target * n + 1e-9)
    else:
        raise ValueError(f"mode must be 'accuracy' or 'fraction', got {mode!r}")
    if best == 0:
        return 1.0
    if best == n:
        low = float(conf[-1])
        return 0.0 if low > 0 else float(torch.nextafter(torch.tensor(low), torch.tensor(-1.0)))
    return float(conf[best])
