"""PESQ / STOI / ESTOI of tsekit.metrics.quality: exactly the reference packages, on real TTS speech."""

from __future__ import annotations

import math
from math import gcd

import numpy as np
import pytest
from scipy.signal import resample_poly

from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
from tsekit.metrics.quality import pesq_score, stoi_score

pesq = pytest.importorskip("pesq")
pystoi = pytest.importorskip("pystoi")

pytestmark = [
    pytest.mark.tts,
    pytest.mark.skipif(bool(missing_packages(BASE_VOICES[:3])), reason="TTS voices missing"),
]

TARGET_TEXT = "The clever painter left a small parcel of letters beside the kitchen window."
OTHER_TEXT = "Four soldiers walked slowly along the river road towards the ancient castle."


def _speech(rate: int) -> dict[str, np.ndarray]:
    """Target, other talker and noisy versions at ``rate``, float32 like audio read from a wav file."""
    target = synthesize(TARGET_TEXT, Speaker("1", BASE_VOICES[2], 0, 1.0), rate)
    other = synthesize(OTHER_TEXT, Speaker("2", BASE_VOICES[0], 0, 1.0), rate)
    length = max(target.size, other.size)
    target, other = (np.pad(x, (0, length - x.size)) for x in (target, other))
    noise = np.random.default_rng(rate).standard_normal(length)
    noise *= np.sqrt(np.sum(target**2) / np.sum(noise**2))  # 0 dB

    def at(snr_db: float) -> np.ndarray:
        return (target + noise * 10 ** (-snr_db / 20)).astype(np.float32)

    return {
        "target": target,
        "clean": target.copy(),
        "noisy 25 dB": at(25.0),
        "noisy 10 dB": at(10.0),
        "noisy 0 dB": at(0.0),
        "mixture 0 dB": (target + other).astype(np.float32),
    }


@pytest.fixture(scope="module")
def speech() -> dict[int, dict[str, np.ndarray]]:
    return {rate: _speech(rate) for rate in (16000, 8000)}


ESTIMATES = ("clean", "noisy 25 dB", "noisy 10 dB", "noisy 0 dB", "mixture 0 dB")


@pytest.mark.parametrize(("rate", "mode"), [(16000, "wb"), (8000, "nb")])
def test_pesq_is_exactly_the_pesq_package(speech, rate, mode):
    signals = speech[rate]
    target = signals["target"]
    for name in ESTIMATES:
        estimate = signals[name]
        assert pesq_score(estimate, target, rate) == pesq.pesq(rate, target, estimate, mode), name
        # float64 input goes through unchanged as well
        as64 = estimate.astype(np.float64), target.astype(np.float64)
        assert pesq_score(*as64, rate) == pesq.pesq(rate, as64[1], as64[0], mode), name


@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("extended", [False, True])
def test_stoi_is_exactly_pystoi(speech, rate, extended):
    signals = speech[rate]
    target = signals["target"]
    for name in ESTIMATES:
        estimate = signals[name]
        expected = pystoi.stoi(target, estimate, rate, extended=extended)
        # the same call; ESTOI's matrix products may round the last bit differently between two
        # calls under multi-threaded BLAS, so "equal" is to 1e-12 relative
        assert stoi_score(estimate, target, rate, extended=extended) == pytest.approx(expected, rel=1e-12), name


@pytest.mark.parametrize("rate", [16000, 8000])
def test_cleaner_estimates_score_higher(speech, rate):
    signals = speech[rate]
    target = signals["target"]
    order = ["clean", "noisy 25 dB", "noisy 10 dB", "noisy 0 dB"]
    pesqs = [pesq_score(signals[name], target, rate) for name in order]
    stois = [stoi_score(signals[name], target, rate) for name in order]
    estois = [stoi_score(signals[name], target, rate, extended=True) for name in order]
    for values in (pesqs, stois, estois):
        assert values == sorted(values, reverse=True)
        assert len(set(values)) == len(values)
    assert pesqs[0] > 4.0 and pesqs[-1] < 2.0  # identical signal vs speech-level white noise
    assert stois[0] == pytest.approx(1.0) and estois[0] == pytest.approx(1.0)


@pytest.mark.parametrize("rate", [16000, 8000])
def test_silence_gives_nan_not_an_exception(speech, rate):
    signals = speech[rate]
    target, noisy = signals["target"], signals["noisy 10 dB"]
    silent = np.zeros_like(target)
    assert math.isnan(pesq_score(silent, target, rate))
    assert math.isnan(pesq_score(noisy, silent, rate))  # no utterance in the reference
    # STOI of a silent estimate is defined (no correlation with the reference): pystoi's value, the lowest
    silent_stoi = stoi_score(silent, target, rate)
    assert silent_stoi == pystoi.stoi(target, silent, rate)
    assert silent_stoi < stoi_score(noisy, target, rate)


def test_too_short_signals_give_nan(speech):
    target = speech[16000]["target"]
    start = int(np.argmax(np.abs(target) > 0.1))  # inside the speech
    for seconds in (0.1, 0.3):  # PESQ needs 0.25 s; STOI 30 frames (0.384 s) of speech
        segment = target[start : start + int(seconds * 16000)]
        if seconds < 0.25:
            assert math.isnan(pesq_score(segment * 0.9, segment, 16000))
        else:
            assert math.isfinite(pesq_score(segment * 0.9, segment, 16000))
        # pystoi warns and returns the placeholder 1e-5 here; we report "not scored"
        with pytest.warns(RuntimeWarning, match="Not enough STFT frames"):
            assert pystoi.stoi(segment, segment, 16000) == 1e-5
        assert math.isnan(stoi_score(segment, segment, 16000))


@pytest.mark.parametrize("rate", [24000, 44100])
def test_other_rates_are_resampled_to_16k_wideband(rate):
    target = synthesize(TARGET_TEXT, Speaker("1", BASE_VOICES[2], 0, 1.0), rate)
    noise = np.random.default_rng(rate).standard_normal(target.size).astype(np.float32)
    noisy = target + 0.02 * noise
    common = gcd(rate, 16000)
    up, down = 16000 // common, rate // common
    expected = pesq.pesq(16000, resample_poly(target.astype(np.float64), up, down),
                         resample_poly(noisy.astype(np.float64), up, down), "wb")  # fmt: skip
    value = pesq_score(noisy, target, rate)
    assert value == expected
    # close to scoring the same speech synthesized at 16 kHz directly
    target16 = synthesize(TARGET_TEXT, Speaker("1", BASE_VOICES[2], 0, 1.0), 16000)
    noise16 = np.random.default_rng(rate).standard_normal(target16.size).astype(np.float32)
    assert value == pytest.approx(pesq_score(target16 + 0.02 * noise16, target16, 16000), abs=0.3)
    # STOI resamples internally (pystoi) at any rate
    assert stoi_score(noisy, target, rate) == pystoi.stoi(target, noisy, rate)


def test_unequal_lengths_raise_value_error(speech):
    target = speech[16000]["target"]
    for call in (lambda: pesq_score(target[:-1], target, 16000), lambda: stoi_score(target[:-1], target, 16000)):
        with pytest.raises(ValueError, match="samples"):
            call()
