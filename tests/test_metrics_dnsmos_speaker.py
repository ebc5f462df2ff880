"""DNSMOS and speaker similarity on real (synthesized) speech.

The speech comes from the Debian TTS voices through ``tsekit.corpora.tts``:
clearly different voices (flite awb and slt, festival ked, espeak-ng m3 and
f2; festival's slt HTS voice is left out because it is the same human
speaker as flite's slt), three different sentences per voice.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, resample, synthesize
from tsekit.metrics.dnsmos import KEYS, Dnsmos, dnsmos_supported
from tsekit.metrics.speaker import cosine_similarity
from tsekit.pretrained.speaker import SpeakerEncoder

pytestmark = [
    pytest.mark.tts,
    pytest.mark.skipif(bool(missing_packages()), reason="TTS voices missing (tools/system_packages.sh)"),
]

SENTENCES = (
    "The old captain carried a heavy lamp across the valley at dawn.",
    "Martha found a golden key hidden under the bridge last night.",
    "A tired farmer wandered down the lane before supper.",
)
VOICE_LABELS = ("flite:awb", "flite:slt", "festival:ked_diphone", "espeak:en-us+m3", "espeak:en-029+f2")
SPEAKERS = tuple(Speaker(label, v, 0, 1.0) for label in VOICE_LABELS for v in BASE_VOICES if v.label == label)
SPEECHMOS_KEYS = {"dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos", "dnsmos_ovrl": "ovrl_mos",
                  "dnsmos_p808": "p808_mos"}  # fmt: skip


@pytest.fixture(scope="module")
def speech() -> dict[tuple[str, int], np.ndarray]:
    """(voice label, sentence index) -> 16 kHz speech, about 3-4 s each."""
    assert len(SPEAKERS) == len(VOICE_LABELS)
    return {(s.id, i): synthesize(text, s) for s in SPEAKERS for i, text in enumerate(SENTENCES)}


@pytest.fixture(scope="module")
def dnsmos() -> Dnsmos:
    return Dnsmos()


@pytest.fixture(scope="module")
def encoder():
    # torch's thread count is left alone: changing it back and forth breaks torch's
    # LU solves later in the same process (which the fast_bss_eval references use)
    return SpeakerEncoder()


def with_white_noise(samples: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(samples))
    noise *= np.sqrt(np.mean(samples.astype(np.float64) ** 2) / 10 ** (snr_db / 10) / np.mean(noise**2))
    noisy = samples + noise
    return (0.7 * noisy / np.abs(noisy).max()).astype(np.float32)


# ---------------------------------------------------------------- DNSMOS


def test_dnsmos_equals_speechmos(speech, dnsmos):
    from speechmos import dnsmos as speechmos_dnsmos

    short = speech["flite:slt", 0]  # 3.6 s: repeated up to 9.01 s, several segments
    long = np.concatenate([speech["espeak:en-us+m3", i] for i in range(3)] + [short])  # > 12 s
    assert len(short) < 9.01 * 16000 < 12 * 16000 < len(long)
    for audio in (short, long):
        ours = dnsmos(audio, 16000)
        theirs = speechmos_dnsmos.run(audio, 16000)
        assert set(ours) == set(KEYS)
        for key in KEYS:
            assert isinstance(ours[key], float)
            # bit-identical here; the tolerance only allows for onnxruntime's thread scheduling
            assert math.isclose(ours[key], float(theirs[SPEECHMOS_KEYS[key]]), rel_tol=1e-6), key


def test_dnsmos_drops_with_strong_noise(speech, dnsmos):
    for label in ("flite:awb", "festival:ked_diphone"):
        clean = speech[label, 1]
        clean_scores = dnsmos(clean, 16000)
        # white noise at -5 dB SNR: at 0 dB, SIG (the speech itself) is not always judged worse yet
        noisy_scores = dnsmos(with_white_noise(clean, snr_db=-5.0), 16000)
        assert 1.0 <= min(clean_scores.values()) and max(clean_scores.values()) <= 5.0
        assert clean_scores["dnsmos_ovrl"] > noisy_scores["dnsmos_ovrl"] + 1.0
        assert clean_scores["dnsmos_sig"] > noisy_scores["dnsmos_sig"] + 0.5
        assert clean_scores["dnsmos_bak"] > noisy_scores["dnsmos_bak"] + 1.5
        assert clean_scores["dnsmos_p808"] > noisy_scores["dnsmos_p808"] + 0.5


def test_dnsmos_rates(speech, dnsmos):
    assert dnsmos_supported(16000) and dnsmos_supported(48000) and dnsmos_supported(44100)
    assert not dnsmos_supported(8000)
    clean = speech["flite:awb", 2]
    with pytest.raises(ValueError, match="16000 Hz"):
        dnsmos(resample(clean, 16000, 8000), 8000)
    # 48 kHz audio is resampled to 16 kHz: the sox round trip barely changes the scores
    at_16k = dnsmos(clean, 16000)
    at_48k = dnsmos(resample(clean, 16000, 48000), 48000)
    for key in KEYS:
        assert abs(at_16k[key] - at_48k[key]) < 0.05, key


def test_dnsmos_degenerate_input(dnsmos):
    assert all(math.isnan(v) for v in dnsmos(np.zeros(0, np.float32), 16000).values())
    with pytest.raises(ValueError, match="NaN"):
        dnsmos(np.full(16000, np.nan, np.float32), 16000)
    with pytest.raises(ValueError, match="mono"):
        dnsmos(np.zeros((2, 16000), np.float32), 16000)


# ---------------------------------------------------------------- speaker similarity


def test_same_speaker_scores_higher_than_different_speakers(speech, encoder):
    embeddings = {key: encoder.embed(audio, 16000) for key, audio in speech.items()}
    for embedding in embeddings.values():
        assert embedding.shape == (256,) and embedding.dtype == np.float32
        assert abs(np.linalg.norm(embedding) - 1.0) < 1e-5
    same, different = [], []
    for (key_a, emb_a), (key_b, emb_b) in itertools.combinations(embeddings.items(), 2):
        (same if key_a[0] == key_b[0] else different).append(cosine_similarity(emb_a, emb_b))
    assert len(same) == len(SPEAKERS) * 3 and len(different) == math.comb(len(speech), 2) - len(same)
    assert min(same) > max(different), (min(same), max(different))  # every pair combination
    assert np.mean(same) - np.mean(different) > 0.25


def test_speaker_embedding_across_rates(speech, encoder):
    """An 8 kHz copy is resampled to 16 kHz and still matches its own speaker best."""
    reference = encoder.embed(speech["flite:slt", 0], 16000)
    narrowband = encoder.embed(resample(speech["flite:slt", 1], 16000, 8000), 8000)
    other = encoder.embed(resample(speech["flite:awb", 1], 16000, 8000), 8000)
    assert cosine_similarity(reference, narrowband) > cosine_similarity(reference, other) + 0.2


def test_speaker_degenerate_input(speech, encoder):
    reference = encoder.embed(speech["flite:awb", 0], 16000)
    for silent in (np.zeros(3 * 16000, np.float32), np.zeros(0, np.float32)):
        embedding = encoder.embed(silent, 16000)
        assert embedding.shape == (256,) and np.isnan(embedding).all()
        assert math.isnan(cosine_similarity(reference, embedding))
    # noise without speech: the VAD keeps nothing, the untrimmed noise is embedded instead
    noise = (0.01 * np.random.default_rng(1).standard_normal(2 * 16000)).astype(np.float32)
    similarity = cosine_similarity(reference, encoder.embed(noise, 16000))
    assert math.isfinite(similarity) and similarity < 0.8
    with pytest.raises(ValueError, match="NaN"):
        encoder.embed(np.full(16000, np.inf, np.float32), 16000)


def test_cosine_similarity():
    a = np.array([3.0, 4.0])
    assert cosine_similarity(a, a) == pytest.approx(1.0)
    assert cosine_similarity(a, -2 * a) == pytest.approx(-1.0)
    assert cosine_similarity(a, np.array([-4.0, 3.0])) == pytest.approx(0.0)
    assert math.isnan(cosine_similarity(a, np.zeros(2)))
    assert math.isnan(cosine_similarity(a, np.array([np.nan, 1.0])))
    with pytest.raises(ValueError, match="size"):
        cosine_similarity(a, np.ones(3))


def test_importing_the_metrics_is_cheap():
    code = (
        "import sys, tsekit.metrics.dnsmos, tsekit.metrics.speaker, tsekit.pretrained.dnsmos, "
        "tsekit.pretrained.speaker; "
        "print(sorted(m for m in ('onnxruntime', 'librosa', 'torch', 'resemblyzer', 'speechmos') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_speaker_encoder_is_quiet():
    code = (
        "import numpy as np; from tsekit.pretrained.speaker import SpeakerEncoder; "
        "SpeakerEncoder().embed(np.zeros(100, np.float32), 16000)"
    )
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert proc.stdout == ""
    assert "Loaded" not in proc.stderr
