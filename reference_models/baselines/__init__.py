"""Baseline architectures: WRN-28-10, MobileNetV2, EfficientNet-B0, ResNet-18, the WikiText-103 LSTM.

Importing this package registers their factories with :mod:`reference_models.registry`.
"""

from reference_models.baselines.efficientnet import EfficientNet, efficientnet_b0
from reference_models.baselines.lstm_lm import LstmLanguageModel, wt103_lstm_baseline
from reference_models.baselines.mobilenet_v2 import MobileNetV2, mobilenet_v2
from reference_models.baselines.resnet import ResNet, resnet18
from reference_models.baselines.wide_resnet import WideResNet, wrn28_10

__all__ = [
    "EfficientNet",
    "LstmLanguageModel",
    "MobileNetV2",
    "ResNet",
    "WideResNet",
    "efficientnet_b0",
    "mobilenet_v2",
    "resnet18",
    "wrn28_10",
    "wt103_lstm_baseline",
]
