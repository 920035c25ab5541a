"""Compression library: pruning schedules, magnitude, FPGM and Hessian channel pruning, quantisation, binarisation, early exit.

Models produced here follow docs/contracts.md: bit widths live on the modules (``weight_bits``, ``bits``,
``act_bits``), pruned weights are exact zeros with masks readable by :func:`masks_of`, and early-exit
models implement ``exit_paths()``.
"""

from reference_models.compression.binarize import (
    BinaryConv2d,
    SignActivation,
    SignInput,
    SignSTE,
    TwoStageSchedule,
    binarize_model,
    binarize_stage,
)
from reference_models.compression.early_exit import (
    EarlyExitModel,
    ExitHead,
    attach_exit,
    choose_threshold,
    collect_exit_stats,
    freeze_backbone,
    measure_exit_fraction,
    soft_smoothing_loss,
    train_exit_head,
)
from reference_models.compression.fpgm import (
    FPGMError,
    find_sequential_chains,
    fpgm_prune,
    fpgm_select,
    fpgm_soft_prune,
)
from reference_models.compression.hessian_prune import (
    AnnealingPool,
    hessian_prune,
    kfac_factors,
    run_annealed_schedule,
)
from reference_models.compression.pruning import (
    MagnitudePruner,
    MaskEnforcer,
    apply_masks,
    masks_of,
    prunable_parameters,
    sparsity_of,
)
from reference_models.compression.quantize import (
    ActQuant,
    QuantConv2d,
    QuantizedAct,
    QuantLinear,
    bits_of,
    fake_quantize,
    quantize_model,
)
from reference_models.compression.schedule import parse_schedule

__all__ = [
    "ActQuant",
    "AnnealingPool",
    "BinaryConv2d",
    "EarlyExitModel",
    "ExitHead",
    "FPGMError",
    "MagnitudePruner",
    "MaskEnforcer",
    "QuantConv2d",
    "QuantLinear",
    "QuantizedAct",
    "SignActivation",
    "SignInput",
    "SignSTE",
    "TwoStageSchedule",
    "apply_masks",
    "attach_exit",
    "binarize_model",
    "binarize_stage",
    "bits_of",
    "choose_threshold",
    "collect_exit_stats",
    "fake_quantize",
    "find_sequential_chains",
    "fpgm_prune",
    "fpgm_select",
    "fpgm_soft_prune",
    "freeze_backbone",
    "hessian_prune",
    "kfac_factors",
    "masks_of",
    "measure_exit_fraction",
    "parse_schedule",
    "prunable_parameters",
    "quantize_model",
    "run_annealed_schedule",
    "soft_smoothing_loss",
    "sparsity_of",
    "train_exit_head",
]
