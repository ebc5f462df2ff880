"""The pieces of score-based speech diffusion (SGMSE+, DDTSE): a compressed complex STFT and the OU-VE SDE.

Compressed STFT (``CompressedSTFT``). Diffusion runs on the complex STFT of
waveforms scaled by the mixture's peak, with the magnitude compressed:
``c = beta |X|^alpha e^{j angle X}`` (alpha 0.5, beta 0.15 in SGMSE+ and
DDTSE), so speech's large dynamic range fits the Gaussian noise scales below.
A spectrogram is a real tensor (B, 2, F, frames): real and imaginary parts.

OU-VE SDE (``OUVESDE``, Richter et al. 2023, SGMSE+): the forward process
``dx = theta (y - x) dt + g(t) dw`` with ``g(t) = sigma_min (sigma_max /
sigma_min)^t sqrt(2 ln(sigma_max / sigma_min))`` drifts the clean speech x0
towards the mixture y while adding noise. Its marginal at time t is Gaussian
with

    mean  mu_t = e^{-theta t} x0 + (1 - e^{-theta t}) y
    var   sigma_t^2 = sigma_min^2 (e^{2 L t} - e^{-2 theta t}) L / (theta + L),   L = ln(sigma_max / sigma_min)

(the closed form the tests check against a simulation of the SDE). At t = 1
the mean is mostly y, so sampling starts from ``y + sigma_1 z``.
"""

from __future__ import annotations

import math

import torch


class CompressedSTFT(torch.nn.Module):
    """Waveform <-> compressed complex spectrogram (B, 2, F, frames); F = n_fft // 2 + 1.

    Hann window, centred frames (``torch.stft(center=True)``), as SGMSE+'s code.
    """

    def __init__(self, n_fft: int = 510, hop_length: int = 128, alpha: float = 0.5, beta: float = 0.15) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.alpha, self.beta = n_fft, hop_length, alpha, beta
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, T) waveform -> (B, 2, F, frames) compressed spectrogram."""
        spec = torch.stft(wav.float(), self.n_fft, self.hop_length, window=self.window, center=True,
                          return_complex=True)
        spec = self.beta * spec.abs().pow(self.alpha) * torch.exp(1j * spec.angle())
        return torch.view_as_real(spec).permute(0, 3, 1, 2).contiguous()

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 2, F, frames) compressed spectrogram -> (B, length) waveform."""
        spec = torch.view_as_complex(spec.float().permute(0, 2, 3, 1).contiguous()) / self.beta
        spec = spec.abs().pow(1 / self.alpha) * torch.exp(1j * spec.angle())
        return torch.istft(spec, self.n_fft, self.hop_length, window=self.window, center=True, length=length)


def per_example(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example values (B,) shaped to broadcast over ``like`` (B, ...)."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


class OUVESDE:
    """The OU-VE forward SDE of SGMSE+ (module docstring), on tensors of any shape."""

    def __init__(self, theta: float = 1.5, sigma_min: float = 0.05, sigma_max: float = 0.5) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"OU-VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.theta, self.sigma_min, self.sigma_max = theta, sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def mean(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        decay = torch.exp(-self.theta * per_example(t, x0))
        return decay * x0 + (1 - decay) * y

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t (same shape as t)."""
        theta, lam = self.theta, self.log_ratio
        variance = self.sigma_min ** 2 * (torch.exp(2 * lam * t) - torch.exp(-2 * theta * t)) * lam / (theta + lam)
        return variance.sqrt()

    def perturb(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        """A draw of x_t given x0: the marginal mean plus sigma_t times ``noise`` (standard normal)."""
        return self.mean(x0, y, t) + per_example(self.std(t), x0) * noise

    def drift(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.theta * (y - x)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) (same shape as t)."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t * math.sqrt(2 * self.log_ratio)

    def x0_from_score(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """The clean estimate a score implies (Tweedie: mu_t = x_t + sigma_t^2 score, then solve mu_t for x0)."""
        sigma = per_example(self.std(t), x)
        decay = torch.exp(-self.theta * per_example(t, x))
        return (x + sigma ** 2 * score - (1 - decay) * y) / decay

    def score_from_x0(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The score of the Gaussian marginal centred on the clean estimate: -(x_t - mu_t(x0)) / sigma_t^2."""
        sigma = per_example(self.std(t), x)
        return -(x - self.mean(x0, y, t)) / sigma ** 2
