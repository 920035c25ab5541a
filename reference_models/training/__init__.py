"""Training pipelines for the MicroNet reference models (``micronet-train``).

Modules, each holding one concern:

* :mod:`~reference_models.training.data`: the CIFAR-100 python-format reader (restricted unpickling),
  a synthetic-data writer, the tensor dataset and the sampler that shards each global batch over ranks.
* :mod:`~reference_models.training.augment`: tensor augmentations (crop, flip, rotation, AutoAugment,
  Cutout, Mixup, CutMix).
* :mod:`~reference_models.training.losses`: label smoothing, KAIST's weighted label smoothing, OSI's soft
  smoothing loss, knowledge distillation.
* :mod:`~reference_models.training.regularizers`: the SRIP orthonormal regulariser.
* :mod:`~reference_models.training.ghost_bn`: Ghost batch normalisation.
* :mod:`~reference_models.training.optim`: parameter groups, optimisers, learning-rate schedules.
* :mod:`~reference_models.training.recipes`: TOML recipes (bundled in ``reference_models/recipes``).
* :mod:`~reference_models.training.distributed`: torchrun process groups and collectives.
* :mod:`~reference_models.training.progress`: rich progress bars on a terminal, plain lines otherwise.
* :mod:`~reference_models.training.trainer`: the epoch loop and evaluation (DDP-aware).
* :mod:`~reference_models.training.stages`: train, prune, quantise, binarise and exit stages.
* :mod:`~reference_models.training.state`: the model between stages; rebuilding it from a checkpoint.
* :mod:`~reference_models.training.export`: trained model -> scorer checkpoint (plain names, bits).
* :mod:`~reference_models.training.pipeline`: running a recipe, per-stage outputs, ``--resume``.
* :mod:`~reference_models.training.cli`: ``micronet-train``.
"""

__all__: list[str] = []
