"""DDTSE: discriminative diffusion for target speech extraction (Zhang et al., SLT 2024), and its SGMSE+ baseline.

What follows the authors' code (``/work/shared/SEEDS.md``, system C):

- Signals: 16 kHz waveforms scaled by the mixture's peak (and the output scaled back), compressed complex
  STFT (n_fft 510, hop 128, ``0.15 |X|^0.5`` with the phase kept; ``layers/diffusion.py``).
- Forward process: the OU-VE SDE of SGMSE+ (theta 1.5, sigma_min 0.05, sigma_max 0.5), times in
  [t_eps, 1] with t_eps 0.03.
- Network: an NCSN++ U-Net (``layers/ncsnpp.py``) that predicts x0, not a score, without time conditioning
  (``discriminative=True`` in the authors' code). Its input is x_t alone (2 channels; the mixture enters
  only through the forward process), or x_t beside the mixture (``concat_mixture``: 4 channels).
  ``net_scale`` (1 in the authors' code) multiplies the network's input and divides its x0 output: a
  preconditioning that leaves the SDE, loss and sampler as they are. The compressed spectrogram's values
  are about 0.1-0.3, and a small U-Net learns even the identity on them far more slowly than at unit scale
  (identity on mini-corpus targets, 300 steps: 9 dB SI-SDR at 1, 25 dB at 1 / 0.15; ``bench/net_scale.py``).
- Speaker: a 256-d embedding of the enrollment from a frozen pretrained speaker encoder, given by FiLM to
  every residual block, on the output of its last conv (the authors' ``conditional_film_biggan`` block; the
  U-Net starts from their zero output heads and zero block ends too: ``layers/ncsnpp.py``). The paper uses
  WeSpeaker's ResNet34 (``speaker_encoder: wespeaker_onnx`` with ``speaker_onnx``); offline the default is
  Resemblyzer's GE2E encoder, whose weights ship in its package. ``learned`` trains a SpEx+-style encoder
  jointly. In training the enrollment is the target utterance itself (``data.enroll: target``).
- Objective (``objective: ddtse``): perturb x0 to x_t at t ~ U(t_eps, 1), predict x0, MSE on the
  compressed spectrogram weighted by w(t) = 1 / (e^t - 1) (``loss_weighting``; ``none`` for w = 1).
- Stage 2 (``emulate_inference: true`` in ``stage2.params``): with probability
  p = min(epoch / emulate_ramp_epochs, emulate_max_prob) per batch (100 and 0.5 published), predict x0
  from x_T at t = 1 without gradient, then either re-perturb that prediction to a random t and train on
  it, or train on the t = 1 prediction itself (with gradient), half and half; otherwise as stage 1. Every
  branch weights its error by w(t) at the batch's random t, the direct t = 1 prediction included
  (``ConditionalDDTSEModel._step`` in the authors' ``sgmse/conditional_model.py`` draws t first and weights
  all branches by it). Weighted at w(1) = 0.58 instead (the mean of w over t is 3.2), that branch's share of
  the loss at p = 0.5 would fall from about 25% to 6%, though it is the only term trained on the input the
  sampler actually starts from.
- Checkpoint selection: with target, ``forward`` also gives ``first_error`` (B,), the unweighted MSE of the
  sampler's first prediction f(x_T, 1), x_T = y + sigma_1 z, against x0 on the compressed spectrogram,
  computed without gradient whenever the trainer wants it (a loss term of weight 0 on output
  ``first_error``; the configs set ``train.valid_metric: objective@first_error``). The weighted objective
  of a random t hardly measures that prediction (w(1) is about 1/57 of w(t_eps)), and everything the sampler
  does starts from it. It costs one network evaluation per validation batch without gradient (the trainer
  asks for no output of a weight-0 term in a training step). (The
  authors keep the best checkpoints by PESQ and SI-SDR of the whole sampler on 20 validation files:
  ``train.py``, ``evaluate_model_on_condition`` in ``sgmse/util/inference.py``; this is a cheaper proxy.)
- Sampler (``sampler: ddtse``): x_T = y + sigma_1 z; x0 = f(x_T, 1); then for t in linspace(1, t_eps,
  steps): x_t = mu_t(x0, y) + sigma_t z, x0 = f(x_t, t). steps 10 gives 11 network evaluations.
- Refinement (``refine``, X+DDTSE): the sampler starts from another system's estimate as x0 (no first
  prediction), ``passes`` times: ``steps`` evaluations per pass. ``start`` < 1 runs the schedule from that
  time instead of 1 (linspace(start, t_eps, steps)), so less of the estimate is drowned (SDEdit's knob;
  not in the paper).

The baseline the paper compares against is the same system with ``objective: score`` (SGMSE+: the network
gets time conditioning and predicts -z, the score being that over sigma_t; loss ``|net(x_t, t) + z|^2``)
and ``sampler: pc`` (reverse-diffusion predictor + one annealed-Langevin corrector step per step, snr 0.5,
30 steps: 60 network evaluations). Either sampler works with either objective: a score network's x0 is
Tweedie's estimate, an x0 network's score that of the marginal centred on its x0.

Choices the paper leaves open, and what is taken here: the noise of the sampler comes from a generator
seeded by ``sample_seed``, so inference is deterministic; padded examples in a batch are not masked in the
loss (training chunks have one length); a silent mixture (peak 0) is left unscaled.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from tsekit import TsekitError
from tsekit.models.layers.checks import check_choice, check_positive
from tsekit.models.layers.diffusion import OUVESDE, CompressedSTFT, per_example
from tsekit.models.layers.ncsnpp import NCSNpp
from tsekit.models.layers.speaker_embedding import build_speaker_embedder
from tsekit.models.registry import TSEModel, register

STAGE1, REPERTURB, DIRECT = "stage1", "reperturb", "direct"
FIRST_ERROR = "first_error"  # the output validation selects checkpoints by (module docstring)


@register("ddtse")
class DDTSE(TSEModel):
    """DDTSE (module docstring). Defaults: the published 16 kHz system with Resemblyzer embeddings."""

    paper = ("DDTSE: Discriminative Diffusion Model for Target Speech Extraction (Zhang et al., SLT 2024), "
             "https://arxiv.org/abs/2309.13874; the authors' code: https://github.com/vivian556123/slt2024-ddtse")

    needs = frozenset({"target", "enroll"})

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 510,
        hop_length: int = 128,
        compress_alpha: float = 0.5,
        compress_beta: float = 0.15,
        theta: float = 1.5,
        sigma_min: float = 0.05,
        sigma_max: float = 0.5,
        t_eps: float = 0.03,
        objective: Literal["ddtse", "score"] = "ddtse",
        loss_weighting: Literal["inverse_exp", "none"] = "inverse_exp",
        sampler: Literal["ddtse", "pc"] = "ddtse",
        steps: int = 10,
        pc_steps: int = 30,
        corrector_steps: int = 1,
        corrector_snr: float = 0.5,
        sample_seed: int = 0,
        emulate_inference: bool = False,
        emulate_ramp_epochs: int = 100,
        emulate_max_prob: float = 0.5,
        concat_mixture: bool = False,
        net_scale: float = 1.0,
        speaker_encoder: Literal["resemblyzer", "wespeaker_onnx", "learned"] = "resemblyzer",
        speaker_onnx: str | None = None,
        embed_dim: int = 256,
        min_enroll_seconds: float = 1.0,
        nf: int = 128,
        ch_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("ddtse", "objective", objective, ("ddtse", "score"))
        check_choice("ddtse", "loss_weighting", loss_weighting, ("inverse_exp", "none"))
        check_choice("ddtse", "sampler", sampler, ("ddtse", "pc"))
        check_positive("ddtse", sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, steps=steps,
                       pc_steps=pc_steps, emulate_ramp_epochs=emulate_ramp_epochs, nf=nf)
        if not 0 < t_eps < 1:
            raise TsekitError(f"model ddtse: parameter t_eps must be in (0, 1), got {t_eps}")
        if not 0 <= emulate_max_prob <= 1:
            raise TsekitError(f"model ddtse: parameter emulate_max_prob must be in [0, 1], got {emulate_max_prob}")
        self.objective, self.loss_weighting, self.sampler = objective, loss_weighting, sampler
        self.steps, self.pc_steps, self.corrector_steps = steps, pc_steps, corrector_steps
        self.corrector_snr, self.sample_seed, self.t_eps = corrector_snr, sample_seed, t_eps
        self.emulate_inference, self.emulate_ramp_epochs = emulate_inference, emulate_ramp_epochs
        self.emulate_max_prob, self.concat_mixture = emulate_max_prob, concat_mixture
        if not net_scale > 0:
            raise TsekitError(f"model ddtse: parameter net_scale must be positive, got {net_scale}")
        self.net_scale = net_scale
        self.sample_rate = sample_rate
        self.stft = CompressedSTFT(n_fft, hop_length, compress_alpha, compress_beta)
        self.sde = OUVESDE(theta, sigma_min, sigma_max)
        self.speaker = build_speaker_embedder(speaker_encoder, sample_rate, embed_dim, speaker_onnx,
                                              min_enroll_seconds)
        # the score network needs to know the noise level; DDTSE's x0 network does not (discriminative mode)
        self.net = NCSNpp(in_channels=4 if concat_mixture else 2, out_channels=2, nf=nf, ch_mult=tuple(ch_mult),
                          num_res_blocks=num_res_blocks, attn_resolutions=tuple(attn_resolutions),
                          resolution=self.stft.bins, dropout=dropout, cond_dim=self.speaker.dim,
                          time_conditioning=objective == "score")
        self.epoch = 0
        self.last_branch = STAGE1  # which training branch the last batch took (stage 2's schedule, tests)
        self.evaluations = 0  # network evaluations since construction (the sampler's cost, tests and benches)

    # --- hooks the trainer and inference call -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def check_enrollment(self, num_samples: int, what: str) -> None:
        self.speaker.check_length(num_samples, what)

    def emulation_probability(self, epoch: int | None = None) -> float:
        """Stage 2's chance that a batch emulates inference: min(epoch / emulate_ramp_epochs, emulate_max_prob)."""
        if not self.emulate_inference:
            return 0.0
        epoch = self.epoch if epoch is None else epoch
        return min(epoch / self.emulate_ramp_epochs, self.emulate_max_prob)

    # --- the network --------------------------------------------------------------------------------------

    def _network(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The raw network output for x_t at times t (B,)."""
        self.evaluations += 1
        inputs = torch.cat([x, y], dim=1) if self.concat_mixture else x
        out = self.net(inputs * self.net_scale, embedding, t if self.objective == "score" else None)
        # a score network's output is -z, unit scale whatever the spectrogram's: only x0 is scaled back
        return out if self.objective == "score" else out / self.net_scale

    def _x0(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        out = self._network(x, y, t, embedding)
        if self.objective == "ddtse":
            return out
        return self.sde.x0_from_score(x, y, t, out / per_example(self.sde.std(t), out))

    def _score(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        out = self._network(x, y, t, embedding)
        if self.objective == "score":
            return out / per_example(self.sde.std(t), out)
        return self.sde.score_from_x0(x, y, t, out)

    # --- signals --------------------------------------------------------------------------------------------

    @staticmethod
    def _peaks(mixture: torch.Tensor) -> torch.Tensor:
        peak = mixture.abs().amax(dim=-1, keepdim=True)
        return torch.where(peak > 0, peak, torch.ones_like(peak))

    def _embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The speaker embedding scaled to unit RMS per entry (norm sqrt(dim)).

        Resemblyzer's d-vectors have norm 1 (entries near 1/16) and WeSpeaker's are unnormalised; FiLM's
        linear layers start from default weights, so a common scale makes conditioning work from the
        first steps whatever the encoder.
        """
        enroll = batch["enroll"]
        embedding = self.speaker(enroll, batch.get("enroll_lengths")).to(enroll.device)
        return torch.nn.functional.normalize(embedding, dim=-1) * math.sqrt(embedding.shape[-1])

    # --- training ---------------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """With ``target`` in the batch: {"objective": (B,)}, the training loss, and "first_error" (B,) when
        wanted (module docstring); without: {"estimate": (B, T)}."""
        if "target" not in batch:
            return {"estimate": self._sample(batch["mixture"], self._embed(batch))}
        peak = self._peaks(batch["mixture"])
        y = self.stft(batch["mixture"] / peak)
        x0 = self.stft(batch["target"] / peak)
        embedding = self._embed(batch)
        loss = self._score_loss if self.objective == "score" else self._x0_loss
        outputs = {"objective": loss(x0, y, embedding)}
        if self.wanted_outputs is None or FIRST_ERROR in self.wanted_outputs:
            outputs[FIRST_ERROR] = self._first_error(x0, y, embedding)
        return outputs

    @torch.no_grad()
    def _first_error(self, x0: torch.Tensor, y: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Per example, the MSE of the sampler's first prediction f(x_T, 1), x_T = y + sigma_1 z, against x0."""
        ones = torch.ones(x0.shape[0], device=x0.device)
        first = self._x0(self.sde.perturb(y, y, ones, torch.randn_like(y)), y, ones, embedding)
        return (first - x0).pow(2).mean(dim=(1, 2, 3))

    def _random_times(self, size: int, device: torch.device) -> torch.Tensor:
        return self.t_eps + (1 - self.t_eps) * torch.rand(size, device=device)

    def _weighted_mse(self, estimate: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        error = (estimate - x0).pow(2).mean(dim=(1, 2, 3))
        if self.loss_weighting == "inverse_exp":
            error = error / torch.expm1(t)
        return error

    def _x0_loss(self, x0: torch.Tensor, y: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        size, device = x0.shape[0], x0.device
        t = self._random_times(size, device)  # every branch's loss weight, the direct one's too
        self.last_branch = STAGE1
        start = x0
        if self.training and torch.rand(()).item() < self.emulation_probability():
            ones = torch.ones(size, device=device)
            x_T = self.sde.perturb(y, y, ones, torch.randn_like(y))
            if torch.rand(()).item() < 0.5:
                self.last_branch = DIRECT
                return self._weighted_mse(self._x0(x_T, y, ones, embedding), x0, t)
            self.last_branch = REPERTURB
            with torch.no_grad():
                start = self._x0(x_T, y, ones, embedding)
        x_t = self.sde.perturb(start, y, t, torch.randn_like(x0))
        return self._weighted_mse(self._x0(x_t, y, t, embedding), x0, t)

    def _score_loss(self, x0: torch.Tensor, y: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        t = self._random_times(x0.shape[0], x0.device)
        noise = torch.randn_like(x0)
        out = self._network(self.sde.perturb(x0, y, t, noise), y, t, embedding)
        return (out + noise).pow(2).mean(dim=(1, 2, 3))

    # --- inference ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _sample(self, mixture: torch.Tensor, embedding: torch.Tensor, start: torch.Tensor | None = None,
                passes: int = 1, start_time: float = 1.0) -> torch.Tensor:
        """The target waveform (B, T); ``start``: another system's estimate to refine (B, T)."""
        peak = self._peaks(mixture)
        y = self.stft(mixture / peak)
        generator = torch.Generator(device=y.device).manual_seed(self.sample_seed)

        def noise() -> torch.Tensor:
            return torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)

        if start is not None:
            x0 = self.stft(start / peak)
            for _ in range(passes):
                x0 = self._ddtse_steps(x0, y, embedding, noise, start_time)
        elif self.sampler == "ddtse":
            ones = torch.ones(y.shape[0], device=y.device)
            x0 = self._x0(self.sde.perturb(y, y, ones, noise()), y, ones, embedding)
            x0 = self._ddtse_steps(x0, y, embedding, noise)
        else:
            x0 = self._predictor_corrector(y, embedding, noise)
        return self.stft.inverse(x0, mixture.shape[-1]) * peak

    def _ddtse_steps(self, x0: torch.Tensor, y: torch.Tensor, embedding: torch.Tensor, noise,
                     start_time: float = 1.0) -> torch.Tensor:
        for t in torch.linspace(start_time, self.t_eps, self.steps, device=y.device):
            times = t.expand(y.shape[0])
            x0 = self._x0(self.sde.perturb(x0, y, times, noise()), y, times, embedding)
        return x0

    def _predictor_corrector(self, y: torch.Tensor, embedding: torch.Tensor, noise) -> torch.Tensor:
        """SGMSE+'s sampler: reverse-diffusion predictor, annealed Langevin corrector; returns the last mean."""
        sde, dt = self.sde, (1 - self.t_eps) / max(self.pc_steps - 1, 1)  # the spacing of the times
        x = sde.perturb(y, y, torch.ones(y.shape[0], device=y.device), noise())
        mean = x
        for t in torch.linspace(1.0, self.t_eps, self.pc_steps, device=y.device):
            times = t.expand(y.shape[0])
            sigma = sde.std(t)
            for _ in range(self.corrector_steps):
                step = 2 * (self.corrector_snr * sigma) ** 2
                mean = x + step * self._score(x, y, times, embedding)
                x = mean + torch.sqrt(2 * step) * noise()
            g = sde.diffusion(t)
            mean = x - sde.drift(x, y) * dt + g ** 2 * self._score(x, y, times, embedding) * dt
            x = mean + g * math.sqrt(dt) * noise()
        return mean

    @torch.no_grad()
    def refine(self, mixture: torch.Tensor, enrollments: dict[str, torch.Tensor], estimate: torch.Tensor,
               passes: int = 1, start: float = 1.0) -> torch.Tensor:
        if not self.t_eps < start <= 1:
            raise TsekitError(f"--refine-start must be in ({self.t_eps}, 1], got {start}")
        if passes < 1:
            raise TsekitError(f"--refine-passes must be >= 1, got {passes}")
        embedding = self._embed({"enroll": enrollments["enroll"]})
        return self._sample(mixture, embedding, start=estimate, passes=passes, start_time=start)
