"""TSE systems. Importing this package registers every system in `registry.MODELS`."""

from tsekit.models import ddtse, maskgit_tse, spex_plus, tfgridnet_posneg, whisper_cfm, zspex  # noqa: F401  (importing a system module registers it)
from tsekit.models.registry import MODELS, TSEModel, build_model, register

__all__ = ["MODELS", "TSEModel", "build_model", "register"]
