"""Published MicroNet 2019 team architectures (and the BNN reference), plus per-layer nonzero helpers.

Importing this package registers their factories with :mod:`reference_models.registry`.
"""

from reference_models.teams.bnn_resnet import BinaryResNet18, bnn_resnet18
from reference_models.teams.brain_densenet import DenseNetCifar, brain_densenet_bc196
from reference_models.teams.jnlp_qrnn import JnlpQRNN, jnlp_qrnn
from reference_models.teams.kaist import KaistMicroNet, kaist_v1, kaist_v2
from reference_models.teams.mit_han_transformer_xl import MitHanTransformerXL, mit_han_transformer_xl
from reference_models.teams.mixnet import GenMixNet, mixnet_s, msunet_v3
from reference_models.teams.nonzeros import apply_nonzero_counts, load_nonzero_table, nonzero_table_path
from reference_models.teams.osi_ai import OsiAiNet, osi_ai
from reference_models.teams.rocker_profitablenet import ProfitableNet, rocker_profitablenet, rocker_sparsity
from reference_models.teams.sisyphus_oneshot import OneShotSPlus, sisyphus_oneshot_s_plus
from reference_models.teams.wavecomp_pyramidnet import PyramidNet, wavecomp_pyramidnet

__all__ = [
    "BinaryResNet18",
    "DenseNetCifar",
    "GenMixNet",
    "JnlpQRNN",
    "KaistMicroNet",
    "MitHanTransformerXL",
    "OneShotSPlus",
    "OsiAiNet",
    "ProfitableNet",
    "PyramidNet",
    "apply_nonzero_counts",
    "bnn_resnet18",
    "brain_densenet_bc196",
    "jnlp_qrnn",
    "kaist_v1",
    "kaist_v2",
    "load_nonzero_table",
    "mit_han_transformer_xl",
    "mixnet_s",
    "msunet_v3",
    "nonzero_table_path",
    "osi_ai",
    "rocker_profitablenet",
    "rocker_sparsity",
    "sisyphus_oneshot_s_plus",
    "wavecomp_pyramidnet",
]
