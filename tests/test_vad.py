"""Silero VAD (tsekit.pretrained.vad): the hysteresis on made-up probabilities, the block resampler against
resampling whole, and the real model (``make install`` brings it) on TTS speech with known silences; the real-model
tests are skipped when the file is absent, an error instead with TSEKIT_REQUIRE_VAD=1 (CI)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_vad
from scipy.signal import resample_poly

from tsekit import TsekitError
from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
from tsekit.pretrained.vad import BlockResampler, SileroVad, VadSettings, blocks_of, speech_segments

WINDOW, RATE = 512, 16000  # 32 ms windows


def windows(*runs: tuple[float, int]) -> np.ndarray:
    """Probabilities as runs of (value, number of windows)."""
    return np.concatenate([np.full(n, p) for p, n in runs])


def test_hysteresis_starts_at_threshold_and_ends_where_the_probability_first_fell_below_neg_threshold():
    settings = VadSettings(pad=0)
    # 10 windows of speech, a dip to 0.4 (between the thresholds: no silence), 0.2 for 4 windows (128 ms >= 100 ms)
    probs = windows((0.1, 5), (0.9, 10), (0.4, 3), (0.9, 5), (0.2, 4), (0.1, 10))
    assert speech_segments(probs, WINDOW, RATE, len(probs) * WINDOW, settings) == [(5 * WINDOW, 23 * WINDOW)]
    # a silence of 3 windows (96 ms < 100 ms) does not split; 0.45 after 0.2 does not reset the silence either
    probs = windows((0.9, 10), (0.2, 3), (0.9, 10), (0.2, 1), (0.45, 2), (0.2, 2), (0.9, 10))
    assert speech_segments(probs, WINDOW, RATE, len(probs) * WINDOW, settings) == [(0, 23 * WINDOW),
                                                                                     (28 * WINDOW, 38 * WINDOW)]


def test_short_speech_is_dropped_pads_meet_in_the_middle_and_the_end_is_the_audio_end():
    probs = windows((0.1, 10), (0.9, 7), (0.1, 10), (0.9, 8), (0.1, 5), (0.9, 10))
    length = len(probs) * WINDOW - 100  # the last window was completed with zeros
    # 7 windows = 224 ms <= 250 ms: dropped; 8 windows = 256 ms kept; the last runs to the end of the audio
    found = speech_segments(probs, WINDOW, RATE, length, VadSettings(pad=0))
    assert found == [(27 * WINDOW, 35 * WINDOW), (40 * WINDOW, length)]
    pad = 480  # 30 ms: the 5-window gap (160 ms) keeps both pads, the end is not padded past the audio
    assert speech_segments(probs, WINDOW, RATE, length) == [(27 * WINDOW - pad, 35 * WINDOW + pad),
                                                            (40 * WINDOW - pad, length)]
    # a pad of 100 ms is more than half the gap: the two meet in its middle
    middle = 35 * WINDOW + 5 * WINDOW // 2
    assert speech_segments(probs, WINDOW, RATE, length, VadSettings(pad=0.1)) == [(27 * WINDOW - 1600, middle),
                                                                                  (middle, length)]


@pytest.mark.parametrize("rate_in", [44100, 48000, 22050])
def test_block_resampling_equals_resampling_whole(rate_in):
    signal = np.random.default_rng(0).standard_normal(int(rate_in * 7.3) + 3)
    resampler = BlockResampler(rate_in, 16000, block_seconds=1.0)
    out = np.concatenate([resampler.feed(signal[i : i + 7777]) for i in range(0, len(signal), 7777)]
                         + [resampler.finish()])
    g = np.gcd(rate_in, 16000)
    whole = resample_poly(signal, 16000 // g, rate_in // g)
    assert out.shape == whole.shape
    np.testing.assert_allclose(out, whole, atol=1e-6)


def test_an_absent_model_file_is_one_line_saying_how_to_bring_it(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.prefix", str(tmp_path / "venv"))
    where = tmp_path / "venv" / "share" / "tsekit" / "silero_vad"
    with pytest.raises(TsekitError, match=rf"^Silero VAD not found: {where}/silero_vad.onnx \(run `make install`, "
                                          rf"or `pip download --no-deps silero-vad==6.2.3 .* -d {where}`\)$") as err:
        SileroVad()
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(TsekitError, match=rf"^{broken}: not an onnx model \("):
        SileroVad(broken)


@pytest.fixture(scope="module")
def vad():
    """The real Silero VAD of this environment (tools/install.sh put it there)."""
    require_vad()
    return SileroVad()


@pytest.mark.parametrize("rate", [16000, 8000, 44100])
def test_the_real_model_finds_tts_speech_between_silences_within_100_ms(vad, rate):
    if missing_packages():
        pytest.skip("TTS voices missing (tools/system_packages.sh)")
    voices = {v.label: v for v in BASE_VOICES}
    sentences = [("Please open the window before you leave the house.", "flite:slt"),
                 ("The streets were empty and the wind was cold.", "espeak:en-us+m3")]
    noise = np.random.default_rng(0)
    pieces, truth, at = [], [], 0.0
    for silence, (text, voice) in zip((1.3, 0.8), sentences, strict=True):
        clip = synthesize(text, Speaker("0", voices[voice], 0, 1.0), rate)
        # synthesize trims what is below -50 dB at both ends and pads the clip with 0.1 s of digital silence
        onset, offset = 0.1, len(clip) / rate - 0.1
        pieces += [np.zeros(round(silence * rate), dtype=np.float32), clip]
        truth.append((at + silence + onset, at + silence + offset))
        at += silence + len(clip) / rate
    pieces.append(np.zeros(rate, dtype=np.float32))
    audio = np.concatenate(pieces)
    audio += 0.002 * noise.standard_normal(len(audio)).astype(np.float32)  # a floor, not digital silence
    # without the pad (a deliberate widening, tested above) the model's own boundaries: measured 10 ms from the
    # onsets and 60-80 ms after the offsets (the probability decays over a few windows after speech)
    unpadded = VadSettings(pad=0)
    found = vad.segments(blocks_of(audio, rate, seconds=1.7), rate, unpadded)
    assert len(found) == 2, found
    for (start, end), (onset, offset) in zip(found, truth, strict=True):
        assert abs(start / rate - onset) < 0.1 and abs(end / rate - offset) < 0.1, (found, truth)
    # blocks of any size give the same segments (the model's state and context run on across blocks)
    assert vad.segments([audio], rate, unpadded) == found
