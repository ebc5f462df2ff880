"""Training losses chosen by name in the config, each returning one value per example.

Every loss is ``fn(outputs, batch, term) -> (B,)`` where ``outputs`` are the
model's named outputs, ``batch`` the named batch (see tsekit.models.registry)
and ``term`` the config's ``LossTerm`` (which output, which batch target).
Per-example values let the trainer average, mask or inspect examples alike;
``compute_loss`` weights the batch means and sums them.

Losses are minimised, so the ratio losses are negated (``si_sdr`` = -SI-SDR
in dB). They are computed in float32 even under mixed precision: the energy
sums of a 4 s chunk overflow float16, and the small ``EPS`` that keeps a
silent estimate finite underflows in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from tsekit import TsekitError
from tsekit.data.mixing import SILENT
from tsekit.train.config import LossTerm

# Added to both energies of a ratio: an all-zero estimate (or a masked-out
# example) gives a finite 0 dB and a finite gradient instead of log(0/0).
EPS = 1e-8

LossFn = Callable[[dict, dict, LossTerm], torch.Tensor]
LOSSES: dict[str, LossFn] = {}
# losses that leave the estimate's scale free; inference then sets the output level (tsekit.infer.level)
SCALE_INVARIANT = frozenset({"si_sdr"})
# losses whose value on an all-zero target (an absent target) is a ratio of EPS terms rather than a measure of
# anything; training with absent targets refuses them on the target (tsekit.train.config)
UNDEFINED_ON_SILENCE = frozenset({"si_sdr", "snr"})


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Function decorator adding a loss to ``LOSSES`` (the names a config's ``loss`` may use)."""

    def add(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss name {name!r} registered twice")
        LOSSES[name] = fn
        return fn

    return add


def loss_function(name: str) -> LossFn:
    if name not in LOSSES:
        raise TsekitError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def compute_loss(
    outputs: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    terms: Iterable[LossTerm],
    skip_missing: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the batch-mean of every term, and each term's (unweighted) mean by its label.

    With ``skip_missing`` a term whose model output or batch key is absent is
    left out instead of being an error (e.g. validation of a model that gives
    no speaker logits in eval mode, or a valid set without speaker labels).
    """
    total: torch.Tensor | None = None
    parts: dict[str, float] = {}
    for term in terms:
        fn = loss_function(term.name)
        if skip_missing and (term.output not in outputs or _batch_key(term) not in batch):
            continue
        device_type = outputs[term.output].device.type if term.output in outputs else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            value = fn(outputs, batch, term).mean()
        parts[term.label] = float(value.detach())
        total = term.weight * value if total is None else total + term.weight * value
    if total is None:
        raise TsekitError("no loss term could be computed: the config's loss list is empty or all terms were "
                          "skipped for missing outputs")
    return total, parts


def _batch_key(term: LossTerm) -> str:
    return "speaker" if term.name == "speaker_ce" else term.target


def _get(mapping: dict, key: str, what: str) -> torch.Tensor:
    if key not in mapping:
        raise TsekitError(f"loss term needs {what} {key!r}, which is absent; present: {', '.join(sorted(mapping))}")
    return mapping[key]


def _signal_pair(outputs: dict, batch: dict, term: LossTerm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(estimate, reference, mask), float32 (B, T), padding zeroed; T = the shorter of the two signals.

    Decoders with a stride may return a few samples more or less than the
    reference; the comparison runs over the samples both have. ``mask`` marks
    the valid samples of each example (``batch["lengths"]``; all when absent).
    """
    estimate = _get(outputs, term.output, "model output").float()
    reference = _get(batch, term.target, "batch key").float()
    if estimate.dim() != 2 or reference.dim() != 2 or estimate.shape[0] != reference.shape[0]:
        raise TsekitError(f"loss {term.label}: expected (batch, samples) signals, got output shape "
                          f"{tuple(estimate.shape)} and target shape {tuple(reference.shape)}")
    length = min(estimate.shape[1], reference.shape[1])
    estimate, reference = estimate[:, :length], reference[:, :length]
    if "lengths" in batch:
        positions = torch.arange(length, device=estimate.device)
        mask = (positions[None, :] < batch["lengths"].to(estimate.device)[:, None]).float()
    else:
        mask = torch.ones_like(estimate)
    return estimate * mask, reference * mask, mask


def _zero_mean(signal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subtract each example's mean over its valid samples; padding stays zero."""
    count = mask.sum(dim=-1, keepdim=True).clamp_min(1.0)
    return (signal - signal.sum(dim=-1, keepdim=True) / count) * mask


def _ratio_db(signal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10((signal.pow(2).sum(-1) + EPS) / (noise.pow(2).sum(-1) + EPS))


@register_loss("si_sdr")
def negative_si_sdr(outputs: dict, batch: dict, term: LossTerm) -> torch.Tensor:
    """-SI-SDR in dB, zero-mean (as SpEx+, ESPnet and torchmetrics ``zero_mean=True``).

    The reference scaled to best fit the estimate is the "signal", the rest of
    the estimate the "noise": projection = <e, r> / (|r|^2 + EPS) * r.
    """
    estimate, reference, mask = _signal_pair(outputs, batch, term)
    estimate, reference = _zero_mean(estimate, mask), _zero_mean(reference, mask)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + EPS)
    projection = scale * reference
    return -_ratio_db(projection, estimate - projection)


@register_loss("snr")
def negative_snr(outputs: dict, batch: dict, term: LossTerm) -> torch.Tensor:
    """-SNR in dB: reference energy over the energy of (reference - estimate); not scale invariant."""
    estimate, reference, _ = _signal_pair(outputs, batch, term)
    return -_ratio_db(reference, reference - estimate)


@register_loss("tsnr")
def thresholded_snr(outputs: dict, batch: dict, term: LossTerm) -> torch.Tensor:
    """-SNR with a soft threshold (Wisdom et al., MixIT, NeurIPS 2020), defined on silent targets too (the
    zero-reference form of Wisdom et al., FUSS, ICASSP 2021): what absent- and silent-target training uses.

    With s the target, e the estimate and x the mixture, per example in dB:

    * target speaking, with tau = 10^(-snr_max / 10): 10 log10((|s - e|^2 + tau |s|^2) / |s|^2), the -SNR,
      eased off near -snr_max (30 dB, MixIT's) so that examples already extracted well stop pulling and the
      hard ones lead;
    * target silent (all zeros: an absent target, or a chunk where the target never speaks), with
      tau0 = 10^(-silent_snr_max / 10): 10 log10((|e|^2 + tau0 |x|^2) / |x|^2), the estimate's energy below the
      mixture's (what scoring reports as absent_energy), eased off near -silent_snr_max (20 dB, as the FUSS
      baseline's zero-reference term in the authors' code, google-research/sound-separation).

    ``silent_weight`` scales the silent values (the FUSS code's zero-reference weight). At 1 a silent output
    (0 dB on a speaking target, the floor on a silent one) is where a small model trained from scratch with a
    fifth of absent examples ends (measured in docs/RESULTS.md). The papers leave out the denominators, which
    are constant for the estimate and do not change the gradient; here they make the value a level in dB. The
    loss fixes the output's scale (it is not SCALE_INVARIANT): SI-SDR is undefined on a silent target, and a
    scale-free loss beside an energy penalty lets a model meet the penalty by turning every output down, which
    inference's mixture-fitted output level would then undo.
    """
    estimate, reference, mask = _signal_pair(outputs, batch, term)
    mixture = _get(batch, "mixture", "batch key").float()[:, : mask.shape[1]].to(mask.device) * mask
    tau = 10.0 ** (-term.snr_max / 10.0)
    target_energy = reference.pow(2).sum(-1)
    speaking = 10 * torch.log10(((reference - estimate).pow(2).sum(-1) + tau * target_energy + EPS) /
                                (target_energy + EPS))
    mixture_energy = mixture.pow(2).sum(-1)
    tau0 = 10.0 ** (-term.silent_snr_max / 10.0)
    silent = 10 * torch.log10((estimate.pow(2).sum(-1) + tau0 * mixture_energy + EPS) / (mixture_energy + EPS))
    # both branches are finite for every example, so the unused one passes no NaN into the gradient
    return torch.where(target_energy > SILENT, speaking, term.silent_weight * silent)


@register_loss("speaker_ce")
def speaker_cross_entropy(outputs: dict, batch: dict, term: LossTerm) -> torch.Tensor:
    """Cross entropy of the speaker logits (B, num_speakers) against ``batch["speaker"]``.

    A negative speaker index (a speaker outside the training list, as in a
    validation set) contributes 0, so such batches still give the signal losses.
    """
    logits = _get(outputs, term.output, "model output").float()
    speaker = _get(batch, "speaker", "batch key").long().to(logits.device)
    if logits.dim() != 2 or speaker.shape != logits.shape[:1]:
        raise TsekitError(f"loss {term.label}: expected logits (batch, speakers) and speaker (batch,), got "
                          f"{tuple(logits.shape)} and {tuple(speaker.shape)}")
    if bool((speaker >= logits.shape[1]).any()):
        raise TsekitError(f"loss {term.label}: speaker index {int(speaker.max())} but the model has only "
                          f"{logits.shape[1]} speaker logits; set model.params.num_speakers to the number of "
                          "training speakers")
    known = speaker >= 0
    return F.cross_entropy(logits, speaker.clamp_min(0), reduction="none") * known


@register_loss("distill")
def feature_distillation(outputs: dict, batch: dict, term: LossTerm) -> torch.Tensor:
    """Mean squared error between a feature map (B, C, frames, F) and a teacher's, over valid frames.

    The teacher's map is ``batch[term.target]`` and its valid frame counts ``batch[term.target + "_frames"]``
    (both put in the batch by the trainer from the teacher's ``distillation_targets``).
    """
    student = _get(outputs, term.output, "model output").float()
    teacher = _get(batch, term.target, "batch key").float().to(student.device)
    frames = _get(batch, f"{term.target}_frames", "batch key").to(student.device)
    if teacher.shape != student.shape or student.dim() != 4:
        raise TsekitError(f"loss {term.label}: the student's {tuple(student.shape)} and the teacher's "
                          f"{tuple(teacher.shape)} feature maps differ (the teacher needs the student's STFT "
                          "and embedding sizes)")
    valid = (torch.arange(student.shape[2], device=student.device)[None, :] < frames[:, None]).float()
    squared = (student - teacher).pow(2).mean(dim=(1, 3))  # (B, frames)
    return (squared * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)


@register_loss("objective")
def model_objective(outputs: dict, batch: dict, term: LossTerm) -> torch.Tensor:
    """A per-example objective the model computes itself, output ``term.output`` (B,).

    Generative systems draw their own diffusion times and noise inside ``forward``, so only the model
    can form the loss (DDTSE's weighted spectrogram MSE, the score-matching loss); this term reads it.
    """
    value = _get(outputs, term.output, "model output").float()
    if value.dim() != 1:
        raise TsekitError(f"loss {term.label}: expected one value per example, got shape {tuple(value.shape)}")
    return value
