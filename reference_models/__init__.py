"""Reference models (baselines and the published MicroNet teams' architectures) and the pipelines that
train and compress them."""

from reference_models.registry import (
    ReferenceInfo,
    build_reference,
    get_reference,
    list_references,
    register,
)

__all__ = ["ReferenceInfo", "build_reference", "get_reference", "list_references", "register"]
