"""One registry of TSE systems: name -> class, every class a `TSEModel`.

A model takes a named batch and returns named outputs; the loss is chosen in
the config (tsekit.train.losses), not here. `needs` tells the dataset which
inputs to build, so it reads only those. Generative systems put their sampler
behind `extract`, so inference and scoring never branch on the system.

Batch keys (tensors, batch first):
  mixture (B, T)   target (B, T)   enroll (B, Te)   enroll_lengths (B,)   lengths (B,)
  speaker (B,) int64: index of the target speaker in the training speaker list (for speaker CE)
  enroll_pos (B, Tp), enroll_neg (B, Tn) [+ _lengths]: noisy positive/negative enrollments
  enroll_clean (B, Tp): the clean enrollment inside enroll_pos (a distillation input)
"""

from __future__ import annotations

import abc
import inspect
from typing import ClassVar

import torch

from tsekit import TsekitError, register_class

MODELS: dict[str, type[TSEModel]] = {}


def register(name: str):
    """Class decorator adding a TSEModel subclass to the registry under ``name``."""
    return lambda cls: register_class(MODELS, name, cls, (TSEModel,), "model")


class TSEModel(torch.nn.Module, abc.ABC):
    """Base of every system. Subclasses set `needs` and implement `forward`."""

    registry_name: ClassVar[str] = ""
    # inputs the dataset must provide besides mixture (always there)
    needs: ClassVar[frozenset[str]] = frozenset({"target", "enroll"})
    # systems that also transcribe the target speaker (target-speaker ASR): `tsekit infer` then writes OUT/text
    transcribes: ClassVar[bool] = False
    # the publication the system follows (title, authors, venue, link), for model cards
    paper: ClassVar[str] = ""
    # the longest mixture (seconds) the system takes at once, None for any: inference cuts longer ones into chunks
    # of at most this (tsekit.train.config.default_chunk_seconds); a system with a fixed input window sets it
    longest_input_seconds: float | None = None
    # the outputs the training losses read, set by the trainer (None: all); a model may skip computing the others,
    # e.g. the pos/neg systems do not run their frozen extractor while distilling
    wanted_outputs: frozenset[str] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (0-based, counted within the stage).

        Systems whose training changes with the epoch override it (DDTSE's stage-2 schedule).
        """

    def check_enrollment(self, num_samples: int, what: str) -> None:
        """Raise a one-line TsekitError naming ``what`` when an enrollment this long cannot be used.

        Inference calls it for every enrollment before extracting anything, so a bad file stops the run
        before the first output is written. Systems with a pretrained speaker encoder override it.
        """

    def refine(self, mixture: torch.Tensor, enrollments: dict[str, torch.Tensor], estimate: torch.Tensor,
               passes: int = 1, start: float = 1.0) -> torch.Tensor:
        """Improve another system's ``estimate`` (B, T) of the target in ``mixture`` (``tsekit infer --refine``).

        ``passes``: how many times the refinement runs; ``start``: the diffusion time it starts from
        (1: the whole schedule, as X+DDTSE; smaller keeps more of the estimate).

        Only generative systems that can start their sampler from an estimate implement it.
        """
        raise TsekitError(f"model {self.registry_name} cannot refine another system's output (--refine); "
                          "a diffusion system (ddtse) can")

    def frozen_parts(self) -> dict[str, tuple[str, str]]:
        """The pretrained parts the system runs through but does not keep in its weights, each loaded now (a missing
        one is its one-line error): {part: (what the config names it by, sha256 of its weights)}.

        ``tsekit export`` records them in a packaged model's manifest, by name and hash, and loading the package
        checks them. The base class finds the pretrained speaker encoders among the submodules; a system with other
        frozen parts (Whisper, a codec, a vocoder) adds its own.
        """
        from tsekit.models.layers.speaker_embedding import FrozenEmbedder

        return {name: module.identity() for name, module in self.named_modules() if isinstance(module, FrozenEmbedder)}

    @abc.abstractmethod
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named outputs; "estimate" (B, T) is the extracted target speech."""

    @torch.no_grad()
    def extract(self, mixture: torch.Tensor, enroll: torch.Tensor) -> torch.Tensor:
        """Target speech (B, T) from mixtures (B, T) and enrollments (B, Te)."""
        batch = {"mixture": mixture, "enroll": enroll,
                 "enroll_lengths": torch.full((enroll.shape[0],), enroll.shape[-1], dtype=torch.long)}
        return self.forward(batch)["estimate"]

    def extract_enrolled(self, mixture: torch.Tensor, enrollments: dict[str, torch.Tensor]) -> torch.Tensor:
        """Target speech (B, T) from mixtures and the enrollment signals the model needs, by batch key.

        What inference calls: a system enrolled otherwise than by one ``enroll`` clip (the pos/neg systems)
        overrides it, so inference never branches on the system.
        """
        return self.extract(mixture, enrollments["enroll"])

    def extract_with_text(self, mixture: torch.Tensor,
                          enrollments: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
        """Target speech (B, T) and the target speaker's transcript of each row; systems with ``transcribes``."""
        raise TsekitError(f"model {self.registry_name} does not transcribe the target speaker")


def model_params(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters of a registered model (what `model.params` may set)."""
    return dict(list(inspect.signature(model_class(name).__init__).parameters.items())[1:])


def model_class(name: str) -> type[TSEModel]:
    import tsekit.models  # noqa: F401  (importing the package registers every system)

    if name not in MODELS:
        raise TsekitError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, params: dict | None = None) -> TSEModel:
    """Instantiate a registered model; unknown parameters are an error listing the valid ones."""
    params = dict(params or {})
    valid = model_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TsekitError(f"model {name}: unknown parameter {unknown[0]!r}; valid: {', '.join(valid)}")
    return model_class(name)(**params)
