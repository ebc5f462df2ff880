"""One-line errors for model parameters, and the enrollment lengths of a batch: shared by every system."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tsekit import TsekitError


def check_positive(name: str, **values: int) -> None:
    """One-line error for a size parameter that is not a positive integer."""
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise TsekitError(f"model {name}: parameter {key} must be a positive integer, got {value!r}")


def check_choice(name: str, key: str, value: object, choices: Sequence[str]) -> None:
    """One-line error for a parameter outside its choices (annotate it with the same Literal for the config)."""
    if value not in choices:
        raise TsekitError(f"model {name}: parameter {key} must be one of {', '.join(choices)}, got {value!r}")


def enroll_lengths_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """True enrollment lengths (B,); the whole padded length when the batch does not say."""
    enroll = batch["enroll"]
    lengths = batch.get("enroll_lengths")
    if lengths is None:
        return torch.full((enroll.shape[0],), enroll.shape[-1], dtype=torch.long, device=enroll.device)
    return lengths.to(enroll.device)
