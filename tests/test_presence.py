"""Where the target speaks (tsekit.infer.presence): the gate's gain and its block-wise use, the RTTM, and the
decision by energy and by speaker similarity on a TTS conversation with known turns through the real Silero VAD
(skipped without it unless TSEKIT_REQUIRE_VAD=1, as tests/test_vad.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_vad

from tsekit import TsekitError
from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
from tsekit.infer.presence import (
    PresenceGate,
    PresenceSettings,
    _FrameEnergy,
    decide_frames,
    gate,
    kept_stretches,
    speech_frames,
    window_sums,
    write_rttm,
)

RATE = 16000


def test_the_gate_is_one_inside_kept_segments_zero_outside_with_10_ms_ramps_outside_them():
    ones = np.ones(8000, dtype=np.float32)
    kept = [(1000, 2000), (2100, 3000), (6000, 7000)]
    gain = gate(ones, kept, 8000)  # a ramp is 80 samples at 8 kHz
    assert gain.dtype == np.float32
    assert np.all(gain[1000:3000] > 0) and np.all(gain[1000:2000] == 1) and np.all(gain[2100:3000] == 1)
    assert np.all(gain[:920] == 0) and np.all(gain[3080:5920] == 0) and np.all(gain[7080:] == 0)
    rise = gain[920:1000]
    assert rise[0] == 0 < rise[1] < 0.05 and rise[-1] > 0.95 and np.all(np.diff(rise) > 0)  # linear, no step
    np.testing.assert_allclose(np.diff(rise), 1 / 80, atol=1e-6)
    assert np.all(np.diff(gain[3000:3080]) < 0)
    # block by block, each given its offset, is the same gain: a streaming caller can gate as it writes
    blocks = [gate(ones[i : i + 937], kept, 8000, offset=i) for i in range(0, len(ones), 937)]
    np.testing.assert_array_equal(np.concatenate(blocks), gain)
    assert not gate(ones, [], 8000).any()


def test_rttm_lines_and_bad_names(tmp_path):
    path = write_rttm(tmp_path / "out.rttm", "rec1", [(8000, 24000), (40000, 41600)], 16000)
    assert path.read_text() == ("SPEAKER rec1 1 0.500 1.000 <NA> <NA> target <NA> <NA>\n"
                                "SPEAKER rec1 1 2.500 0.100 <NA> <NA> target <NA> <NA>\n")
    with pytest.raises(TsekitError, match=r"recording id 'my rec' cannot be written to an RTTM"):
        write_rttm(tmp_path / "bad.rttm", "my rec", [], 16000)
    assert not (tmp_path / "bad.rttm").exists()
    with pytest.raises(TsekitError, match=r"^presence method 'loudness': expected one of energy, speaker$"):
        PresenceSettings(method="loudness")
    assert (PresenceSettings().method, PresenceSettings().threshold, PresenceSettings().window) == ("energy", -6.0, 1.0)
    assert (PresenceSettings("speaker").threshold, PresenceSettings("speaker").window) == (0.6, 1.8)
    assert PresenceSettings("energy").threshold == -6.0 and PresenceSettings("energy", -3.0).threshold == -3.0
    with pytest.raises(TsekitError, match=r"^presence window 1 s and hop 2 s: expected 0 < hop <= window$"):
        PresenceSettings(window=1, hop=2)


def test_frame_energies_do_not_depend_on_where_the_blocks_are_cut():
    signal = np.random.default_rng(0).normal(size=10_007).astype(np.float32)
    whole = _FrameEnergy(160)
    whole.feed(signal)
    expected = [np.sum(np.square(signal[i : i + 160], dtype=np.float64)) for i in range(0, len(signal), 160)]
    np.testing.assert_allclose(whole.result(), expected, rtol=1e-12)
    assert len(whole.result()) == 63 and whole.length == 10_007  # the last frame is partial
    for size in (1, 37, 160, 1000, 4096):
        pieces = _FrameEnergy(160)
        for start in range(0, len(signal), size):
            pieces.feed(signal[start : start + size])
        np.testing.assert_array_equal(pieces.result(), whole.result())  # to the bit


def test_window_sums_and_speech_frames():
    np.testing.assert_array_equal(window_sums(np.arange(6.0), 1), [1, 3, 6, 9, 12, 9])
    np.testing.assert_array_equal(window_sums(np.arange(3.0), 0), [0, 1, 2])
    # a frame touching a segment is speech, even by one sample
    assert speech_frames([(150, 170), (799, 800)], 100, 10).tolist() == [0, 1, 0, 0, 0, 0, 0, 1, 0, 0]


def test_short_gaps_are_filled_short_stretches_dropped_and_the_rest_cut_to_speech():
    scores = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, np.nan, 1], dtype=float)
    speech = np.ones(len(scores), dtype=bool)
    speech[15] = False  # a frame outside speech is never present, whatever its score
    present = decide_frames(scores, speech, 0.5, min_gap=2, min_keep=2)
    # the one-frame gap at 3 is filled; the three at 6-8 are not; the lone frame at 9 is dropped; 12-14 stays;
    # 15 (no speech) and 16 (NaN) are absent, so 17 alone is dropped
    assert present.astype(int).tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert decide_frames(scores, speech, 0.5, 0, 0).astype(int).tolist() == [
        1, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1]
    # frames of 100 samples: the stretch 0-600 is cut to the speech segments it overlaps
    assert kept_stretches(present, 100, [(50, 250), (300, 420), (590, 700), (1210, 1400)]) == [
        (50, 250), (300, 420), (590, 600), (1210, 1400)]


@pytest.fixture(scope="module")
def conversation():
    """(mixture, output of a good extractor, target enrollment, target turns in s): two TTS voices taking turns,
    the output the target's track plus the other's at -30 dB."""
    require_vad()
    if missing_packages():
        pytest.skip("TTS voices missing (tools/system_packages.sh)")
    voices = {v.label: v for v in BASE_VOICES}
    target, other = Speaker("1", voices["flite:slt"], 0, 1.0), Speaker("2", voices["espeak:en-us+m3"], 0, 1.0)
    turns = [(target, "Please open the window before you leave the house."),
             (other, "The streets were empty and the wind was cold."),
             (target, "We found the old map under a pile of letters."),
             (other, "Nobody answered the phone until late that evening.")]
    tracks = {target: [], other: []}
    truth, at = [], 0.0
    for speaker, text in turns:
        clip = synthesize(text, speaker, RATE)
        gap = np.zeros(int(0.8 * RATE), dtype=np.float32)
        for who in tracks:
            tracks[who] += [gap, clip if who == speaker else np.zeros_like(clip)]
        if speaker == target:  # synthesize pads 0.1 s of digital silence at both ends
            truth.append((at + 0.8 + 0.1, at + 0.8 + len(clip) / RATE - 0.1))
        at += 0.8 + len(clip) / RATE
    mine, theirs = np.concatenate(tracks[target]), np.concatenate(tracks[other])
    enrollment = synthesize("A quiet morning is the best time to read.", target, RATE)
    return mine + theirs, mine + 0.03 * theirs, enrollment, truth


@pytest.mark.parametrize("method", ["energy", "speaker"])
def test_the_target_is_kept_where_it_speaks_and_silenced_where_the_other_does(conversation, method, tmp_path):
    mixture, output, enrollment, truth = conversation
    presence_gate = PresenceGate(PresenceSettings(method=method))
    presence = presence_gate.decide(output, mixture, enrollment, RATE)
    assert len(presence.segments) == 4, presence.segments  # the VAD finds every turn of either speaker
    assert len(presence.kept) == 2, presence.scores
    for (start, end), (onset, offset) in zip(presence.kept, truth, strict=True):
        assert abs(start / RATE - onset) < 0.1 and abs(end / RATE - offset) < 0.15, (presence.kept, truth)
    assert presence_gate(output, mixture, enrollment, RATE, tmp_path / "t.rttm", "conv").kept == presence.kept
    gated = presence.gate(output)
    np.testing.assert_array_equal(gated, gate(output, presence.kept, RATE))
    lines = (tmp_path / "t.rttm").read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["conv", "conv"]
    between = slice(presence.kept[0][1] + RATE // 100, presence.kept[1][0] - RATE // 100)
    assert not gated[between].any() and output[between].any()  # the other's turn in between is silenced


@pytest.mark.parametrize("method", ["energy", "speaker"])
def test_turns_without_a_pause_in_one_speech_segment_are_told_apart(conversation, method):
    """The target's turn and the other's, joined without their 0.1 s pads: the VAD hears one segment, and the
    decision keeps the target's part of it and silences the other's (a decision per segment cannot)."""
    mixture, output, enrollment, truth = conversation
    pad, gap = int(0.1 * RATE), int(0.8 * RATE)
    (a, b), c = (round(t * RATE) for t in truth[0]), round(truth[1][0] * RATE)
    other = slice(b + gap + 2 * pad, c - gap - 2 * pad)  # the other's turn between the target's first two
    joined = [np.concatenate([signal[a:b], signal[other]]) for signal in (mixture, output)]
    settings = PresenceSettings(method=method)
    presence = PresenceGate(settings).decide(joined[1], joined[0], enrollment, RATE)
    assert len(presence.segments) == 1, presence.segments
    assert len(presence.kept) == 1, (presence.kept, presence.scores)
    start, end = presence.kept[0]
    # a window that holds enough of the target's turn keeps its frame: the kept stretch may reach up to half a
    # window into the next turn
    assert start / RATE < 0.1 and 0 <= end - (b - a) < settings.window / 2 * RATE, (presence.kept, b - a)
    assert presence.segments[0][1] - end > RATE  # most of the other's turn is silenced


# the speaker decision's stream (a Resemblyzer embedding per frame) is slow on CI's CPU, and the default is energy
@pytest.mark.parametrize("method", ["energy", pytest.param("speaker", marks=pytest.mark.slow)])
def test_the_decision_on_a_stream_is_the_decision_in_memory(conversation, method):
    mixture, output, enrollment, _ = conversation

    def blocks(signal, size):
        return lambda: (signal[i : i + size] for i in range(0, len(signal), size))

    presence_gate = PresenceGate(PresenceSettings(method=method))
    memory = presence_gate.decide(output, mixture, enrollment, RATE)
    streamed = presence_gate.decide(blocks(output, 777), blocks(mixture, 5000), enrollment, RATE)
    assert streamed.kept == memory.kept and streamed.segments == memory.segments
    np.testing.assert_array_equal(streamed.scores, memory.scores)
    assert np.isfinite(memory.scores).sum() > 10  # the windows were scored


def test_speaker_similarity_needs_an_enrollment(conversation):
    mixture, output, _, _ = conversation
    with pytest.raises(TsekitError, match="needs the target's enrollment; this system has none"):
        PresenceGate(PresenceSettings(method="speaker")).decide(output, mixture, None, RATE)


def test_the_cli_offers_the_methods_there_are():
    from tsekit.cli.infer import PRESENCE_METHODS
    from tsekit.infer.presence import METHODS

    assert PRESENCE_METHODS == METHODS
