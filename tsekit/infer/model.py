"""The Python entry point: ``tsekit.load_model(path)`` and the model it returns.

    import tsekit
    model = tsekit.load_model("exp/zspex/packaged")   # a packaged model or an experiment dir
    target = model.extract(mixture, enrollment, sample_rate=44100)

``extract`` takes numpy arrays or torch tensors (mono, 1-D) at any sample rate: they are resampled to the model's
rate, extracted as ``tsekit extract`` does (the same chunking and output level, ``extract_waveform``), and the
target is resampled back and returned at the mixture's length, as the type it came in (float32). A system that
transcribes the target speaker (``whisper_cfm``) also has ``transcribe``, which returns the transcript.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from tsekit import TsekitError
from tsekit.data.enroll import ENROLLMENT_FILES
from tsekit.infer.extract import check_enrollment_keys, check_enrollments, extract_waveform
from tsekit.jobs import torch_device
from tsekit.train.config import default_chunk_seconds
from tsekit.train.experiment import load_experiment

if TYPE_CHECKING:
    from tsekit.models.registry import TSEModel
    from tsekit.train.config import ExperimentConfig

Audio = np.ndarray | torch.Tensor


class LoadedModel:
    """A trained system ready to extract: ``system``, ``sample_rate``, ``config`` (its ExperimentConfig), ``module``
    (the torch module); ``extract``. Made by ``load_model``."""

    def __init__(self, module: TSEModel, config: ExperimentConfig, source: str):
        self.module, self.config, self.source = module, config, source
        self.system: str = config.model.name
        self.sample_rate: int = config.data.sample_rate
        self.enrollments = [k for k in ENROLLMENT_FILES if k in module.needs]

    def __repr__(self) -> str:
        return f"<tsekit {self.system} model from {self.source}, {self.sample_rate} Hz>"

    def extract(self, mixture: Audio, enrollment: Audio | dict[str, Audio], sample_rate: int,
                chunk_seconds: float | None = None, output_level: str | None = None) -> Audio:
        """The target speaker's speech in ``mixture``, at ``sample_rate`` and the mixture's length.

        ``enrollment``: a clip of the target speaker, or for the pos/neg systems ``{"enroll_pos": ...,
        "enroll_neg": ...}``, at the same ``sample_rate``. ``chunk_seconds`` (0: whole) and ``output_level`` default
        to the model's, as ``tsekit extract``'s do.
        """
        return self._run(mixture, enrollment, sample_rate, chunk_seconds, output_level, with_text=False)[0]

    def _run(self, mixture: Audio, enrollment: Audio | dict[str, Audio], sample_rate: int,
             chunk_seconds: float | None, output_level: str | None, with_text: bool) -> tuple[Audio, str | None]:
        from tsekit.codec.registry import resample

        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise TsekitError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
        given = enrollment if isinstance(enrollment, dict) else {"enroll": enrollment}
        check_enrollment_keys(self.module, given)

        def at_model_rate(audio: Audio, what: str) -> np.ndarray:
            wav = torch.as_tensor(audio).detach().to("cpu", torch.float32)
            if wav.dim() != 1:
                raise TsekitError(f"{what}: expected mono audio as a 1-D array, got shape {tuple(wav.shape)}")
            if not torch.isfinite(wav).all():
                raise TsekitError(f"{what}: contains NaN or inf")
            return resample(wav, sample_rate, self.sample_rate).numpy()

        mix = at_model_rate(mixture, "mixture")
        enrollments = {k: at_model_rate(v, k) for k, v in given.items()}
        check_enrollments(self.module, enrollments, self.sample_rate, {k: k for k in enrollments})
        if chunk_seconds is None:
            chunk_seconds = default_chunk_seconds(self.config, self.module)
        result = extract_waveform(self.module, mix, enrollments, self.sample_rate, chunk_seconds,
                                  output_level=output_level or self.config.infer.output_level,
                                  peak=self.config.infer.peak, with_text=with_text)
        estimate, text = result if with_text else (result, None)
        length = torch.as_tensor(mixture).shape[-1]
        back = resample(torch.from_numpy(np.ascontiguousarray(estimate, dtype=np.float32)), self.sample_rate,
                        sample_rate)
        back = torch.nn.functional.pad(back, (0, max(0, length - back.shape[-1])))[:length]
        return (back if isinstance(mixture, torch.Tensor) else back.numpy()), text


class TranscribingModel(LoadedModel):
    """A model of a system that also transcribes the target speaker (target-speaker ASR)."""

    def transcribe(self, mixture: Audio, enrollment: Audio | dict[str, Audio], sample_rate: int,
                   chunk_seconds: float | None = None) -> str:
        """The target speaker's words in ``mixture`` (chunk transcripts joined in time order, as ``tsekit extract``
        writes them)."""
        return self._run(mixture, enrollment, sample_rate, chunk_seconds, None, with_text=True)[1]


def load_model(path: str | os.PathLike, device: str = "cpu", checkpoint: str | None = None,
               params: dict | None = None) -> LoadedModel:
    """A packaged model (``tsekit export``; a hub cache folder holding one) or an experiment dir, ready to extract.

    ``device``: cpu, cuda or cuda:N. ``checkpoint``, for an experiment: as ``tsekit extract --checkpoint``.
    ``params``: model parameters replaced for this model (decoding settings), as ``--param NAME=VALUE``.
    """
    module, config = load_experiment(path, checkpoint, torch_device(device), params)
    kind = TranscribingModel if module.transcribes else LoadedModel
    return kind(module, config, str(path))
