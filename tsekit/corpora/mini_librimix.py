"""The mini corpus: a small Libri2Mix (or Libri3Mix) synthesized with Debian TTS voices.

It lets every recipe stage run end to end on a laptop without downloading
LibriSpeech or WHAM!. The files are laid out exactly like the real corpora, so
``tsekit prepare libri2mix OUT/Libri2Mix --librispeech OUT/LibriSpeech`` reads
it like the real thing (with ``num_sources=3``: ``libri3mix OUT/Libri3Mix``,
which also has s3/ and ``source_3_path``)::

    OUT/LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac
                    .../<spk>-<chapter>.trans.txt, SPEAKERS.TXT
    OUT/Noise/{tr,cv,tt}/<mixture_id>.wav        one noise recording per mixture (WHAM!'s role)
    OUT/Noise/babble_speech/<utt>.flac           speech of the babble talkers (in no split)
    OUT/Libri2Mix/metadata/libri2mix_<librispeech split>.csv        gains used (LibriMix's columns)
    OUT/Libri2Mix/wav{8k,16k}/{min,max}/{train-100,dev,test}/{mix_clean,mix_both,mix_single,s1,s2,noise}/
    OUT/Libri2Mix/wav{8k,16k}/{min,max}/metadata/{mixture,metrics}_<split>_<mixture>.csv

How LibriMix is imitated:
  * Loudness: LibriMix scales each source to a random loudness in [-33, -25]
    LUFS and the noise to [-38, -30] LUFS (pyloudnorm). Here loudness is the
    gated RMS level of BS.1770 (400 ms blocks, -70 dB absolute and -10 dB
    relative gates) *without* its K-weighting filter: TTS speech has little
    energy below 100 Hz, where K-weighting matters, so the error is small.
  * Clipping: if the max-mode noisy mixture (or any part of it) peaks above
    0.9, all gains are scaled down together so that it peaks at 0.9.
  * min mode truncates every part to the shorter source, max mode zero-pads
    to the longer one; the mixture is the plain sum of the scaled parts.
  * Speakers: a speaker is a base voice (tts.BASE_VOICES) with a pitch shift
    and tempo change; dev and test speakers are disjoint from train and from
    each other, as in LibriSpeech's clean splits. The sources of a mixture are
    utterances of distinct speakers.

The same seed, size and number of sources give the same files bit for bit. A
killed run resumes: every file is written atomically and existing ones are
kept; the CSVs and transcripts are written last. Bookkeeping lives in
``OUT/.mini_libri2mix/`` (one OUT holds one corpus: 2 or 3 sources, not both).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from tsekit import TsekitError
from tsekit.corpora.common import MIXTURE_FOLDERS, mixture_contents
from tsekit.corpora.librimix import librimix_name
from tsekit.corpora.sentences import make_sentence
from tsekit.corpora.tts import BASE_VOICES, Speaker, require_tts, synthesize
from tsekit.data.audio import write_audio
from tsekit.jobs import atomic_open

SOURCE_RATE = 16000  # LibriSpeech's rate; the flac sources and raw noise are stored at it
MIN_SECONDS, MAX_SECONDS = 1.5, 5.0  # utterance duration range
SPEECH_LOUDNESS = (-33.0, -25.0)  # dB, as LibriMix's LUFS range
NOISE_LOUDNESS = (-38.0, -30.0)
MAX_AMP = 0.9
PITCH_SHIFTS = (0, -300, 300, -150, 150)  # cents; five speakers per base voice at most
BABBLE_SPEAKERS = 3
# (Libri2Mix split, LibriSpeech split, WHAM! noise split)
SPLITS = (("train-100", "train-clean-100", "tr"), ("dev", "dev-clean", "cv"), ("test", "test-clean", "tt"))
MIXTURE_TYPES = tuple(MIXTURE_FOLDERS)
MODES = ("min", "max")
STATE_DIR = ".mini_libri2mix"


@dataclass(frozen=True)
class CorpusSize:
    """How many mixtures and speakers each split gets; the only knobs besides the seed."""

    train_mixtures: int
    train_speakers: int
    eval_mixtures: int  # dev and test each
    eval_speakers: int  # dev and test each


PRESETS = {
    "tiny": CorpusSize(train_mixtures=4, train_speakers=3, eval_mixtures=3, eval_speakers=3),
    "small": CorpusSize(train_mixtures=150, train_speakers=8, eval_mixtures=30, eval_speakers=4),
    # the demo's: enough training speakers for the extractor to generalise to unseen ones
    "demo": CorpusSize(train_mixtures=400, train_speakers=22, eval_mixtures=40, eval_speakers=6),
    "medium": CorpusSize(train_mixtures=1000, train_speakers=20, eval_mixtures=150, eval_speakers=8),
}


def corpus_size(size: str | int, num_sources: int = 2) -> CorpusSize:
    """A preset name, or a number of training mixtures (speakers and dev/test scale with it).

    Presets have at least three speakers per split, enough for 3-speaker mixtures too.
    """
    if isinstance(size, str) and size in PRESETS:
        return PRESETS[size]
    try:
        train = int(size)
    except ValueError:
        raise TsekitError(
            f"size must be one of {', '.join(PRESETS)} or a number of mixtures, got {size!r}"
        ) from None
    if train < 2:
        raise TsekitError(f"size must be at least 2 training mixtures, got {train}")
    # every speaker in at least two mixtures, so that each has an enrollment besides its target
    train_speakers = min(max(3, math.ceil(train / 19)), 24, train * num_sources // 2)
    eval_speakers = min(max(3, train_speakers // 2), 8)
    return CorpusSize(train, train_speakers, max(eval_speakers, train // 5), eval_speakers)


@dataclass(frozen=True)
class Utterance:
    """One source utterance to synthesize; ``path`` is where its flac goes."""

    id: str  # <spk>-<chapter>-<NNNN>
    speaker: Speaker
    path: Path
    seed: tuple[int, ...]


@dataclass(frozen=True)
class MixtureJob:
    """Everything one worker needs to write one mixture in both modes at one rate."""

    id: str
    split: str
    sources: tuple[Path, ...]  # flacs of source 1, 2[, 3]
    noise: Path  # raw noise at SOURCE_RATE, made by the worker if missing
    babble: tuple[Path, ...]
    seed: tuple[int, ...]
    mode_dirs: tuple[Path, ...]  # .../wav16k/min/<split>, .../wav16k/max/<split>
    rate: int
    state: Path  # json with gains/lengths, written once every wav exists


# ---------------------------------------------------------------- planning


def plan_speakers(seed: int, size: CorpusSize) -> dict[str, list[Speaker]]:
    """Speakers of each split (plus 'babble'), disjoint, with LibriSpeech-like numeric ids.

    Round r gives every base voice (in a seeded order) its r-th pitch shift
    from a seeded permutation, so each split spreads over many base voices.
    """
    rng = np.random.default_rng([seed, 1])
    counts = {"train-100": size.train_speakers, "dev": size.eval_speakers,
              "test": size.eval_speakers, "babble": BABBLE_SPEAKERS}  # fmt: skip
    total = sum(counts.values())
    capacity = len(BASE_VOICES) * len(PITCH_SHIFTS)
    if total > capacity:
        raise TsekitError(f"size needs {total} speakers but the TTS voices give at most {capacity}")
    voice_order = rng.permutation(len(BASE_VOICES))
    shifts = {int(v): rng.permutation(PITCH_SHIFTS) for v in voice_order}
    combos = [(int(v), int(shifts[int(v)][r])) for r in range(len(PITCH_SHIFTS)) for v in voice_order]
    ids = rng.choice(np.arange(100, 9000), size=total, replace=False)
    tempos = rng.uniform(0.9, 1.12, size=total)
    speakers = [
        Speaker(str(int(ids[k])), BASE_VOICES[voice], pitch, round(float(tempos[k]), 2))
        for k, (voice, pitch) in enumerate(combos[:total])
    ]
    out, start = {}, 0
    for split, count in counts.items():
        out[split] = speakers[start : start + count]
        start += count
    return out


def plan_utterances(
    seed: int, speakers: Sequence[Speaker], per_speaker: int, folder: Path, nested: bool = True
) -> dict[str, list[Utterance]]:
    """``per_speaker`` utterances per speaker, in chapters of at most 15 (LibriSpeech ids)."""
    out: dict[str, list[Utterance]] = {}
    for speaker in speakers:
        rng = np.random.default_rng([seed, 2, int(speaker.id)])
        n_chapters = math.ceil(per_speaker / 15)
        chapters = sorted(int(c) for c in rng.choice(np.arange(1000, 300000), n_chapters, replace=False))
        utts = []
        for k in range(per_speaker):
            chapter, number = chapters[k // 15], k % 15
            utt = f"{speaker.id}-{chapter}-{number:04d}"
            path = folder / speaker.id / str(chapter) / f"{utt}.flac" if nested else folder / f"{utt}.flac"
            utts.append(Utterance(utt, speaker, path, (seed, 3, int(speaker.id), chapter, number)))
        out[speaker.id] = utts
    return out


def group_utterances(
    rng: np.random.Generator, utterances: dict[str, list[Utterance]], n_mixtures: int, num_sources: int = 2
) -> list[tuple[Utterance, ...]]:
    """Groups of ``num_sources`` utterances of distinct speakers, spreading use evenly over speakers and utterances."""
    speakers = sorted(utterances)
    if len(speakers) < num_sources:
        raise TsekitError(f"{len(speakers)} speakers cannot make {num_sources}-speaker mixtures")
    speaker_use = {s: 0 for s in speakers}
    utt_use = {u.id: 0 for utts in utterances.values() for u in utts}
    pair_use: dict[tuple[str, str], int] = {}
    seen: set[frozenset[str]] = set()
    groups = []
    while len(groups) < n_mixtures:
        # least-used speaker first, then each next: least used and least often mixed with those chosen; random ties
        jitter = rng.uniform(0, 1.5, size=len(speakers))
        scores = [speaker_use[s] + jitter[k] for k, s in enumerate(speakers)]
        chosen = [speakers[int(np.argmin(scores))]]
        while len(chosen) < num_sources:
            partner_scores = [
                math.inf if s in chosen else scores[k] + sum(pair_use.get(_pair(c, s), 0) for c in chosen)
                for k, s in enumerate(speakers)
            ]
            chosen.append(speakers[int(np.argmin(partner_scores))])
        group = _least_used_group(rng, [utterances[s] for s in chosen], utt_use, seen)
        if group is None:
            raise TsekitError("too few utterances per speaker for the number of mixtures")
        group = _shuffled(rng, group)
        seen.add(frozenset(u.id for u in group))
        for s in chosen:
            speaker_use[s] += 1
        for u in group:
            utt_use[u.id] += 1
        for k, a in enumerate(chosen):
            for b in chosen[k + 1 :]:
                pair_use[_pair(a, b)] = pair_use.get(_pair(a, b), 0) + 1
        groups.append(group)
    return groups


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _least_used_group(
    rng: np.random.Generator, speaker_utts: list[list[Utterance]], use: dict[str, int], seen: set[frozenset[str]]
) -> tuple[Utterance, ...] | None:
    """The least-used group (one utterance per speaker) not mixed before; random among equally used ones."""
    def by_use(utts: list[Utterance]) -> list[Utterance]:
        jitter = rng.uniform(0, 0.5, size=len(utts))
        order = np.argsort([use[u.id] + jitter[k] for k, u in enumerate(utts)], kind="stable")
        return [utts[k] for k in order]

    # ordered last speaker first: the jitter draws of the 2-source corpora, whose bytes must not change
    ordered = [by_use(utts) for utts in reversed(speaker_utts)][::-1]
    for group in itertools.product(*ordered):  # the first speaker's least used first
        if frozenset(u.id for u in group) not in seen:
            return group
    return None


def _shuffled(rng: np.random.Generator, group: tuple[Utterance, ...]) -> tuple[Utterance, ...]:
    """``group`` in random order (which speaker is source 1), one ``rng.random()`` per swap.

    Fisher-Yates, written so that two utterances keep their order when the draw
    is below 0.5, as the 2-source corpora were made.
    """
    out = list(group)
    for i in range(len(out) - 1, 0, -1):
        j = i - int(rng.random() * (i + 1))
        out[i], out[j] = out[j], out[i]
    return tuple(out)


# ---------------------------------------------------------------- workers


def synthesize_utterance(utt: Utterance, state: Path) -> dict:
    """Make ``utt.path`` (unless done); returns {'id', 'text', 'samples'}.

    A sentence whose speech falls outside MIN_SECONDS..MAX_SECONDS is
    replaced by another (shorter when too long), all from the utterance's own
    seed, so the result does not depend on which worker runs it or when.
    """
    record = state / f"{utt.id}.json"
    if record.is_file() and utt.path.is_file():
        return json.loads(record.read_text())
    rng = np.random.default_rng(list(utt.seed))
    max_words, best = None, None
    for _ in range(30):
        text = make_sentence(rng, max_words)
        samples = synthesize(text, utt.speaker, SOURCE_RATE)
        seconds = len(samples) / SOURCE_RATE
        if MIN_SECONDS <= seconds <= MAX_SECONDS:
            best = (text, samples)
            break
        if seconds > MAX_SECONDS:
            max_words = len(text.split()) - 1
        if best is None or abs(seconds - 3.0) < abs(len(best[1]) / SOURCE_RATE - 3.0):
            best = (text, samples)
    text, samples = best
    samples = samples[: int(MAX_SECONDS * SOURCE_RATE)]
    with atomic_open(utt.path, "wb") as f:
        sf.write(f, samples, SOURCE_RATE, format="FLAC", subtype="PCM_16")
    result = {"id": utt.id, "text": text, "samples": len(samples)}
    with atomic_open(record) as f:
        json.dump(result, f)
    return result


def loudness_db(samples: np.ndarray, rate: int) -> float:
    """Gated RMS level in dB: BS.1770 gating without K-weighting (see module docstring)."""
    block, hop = int(0.4 * rate), int(0.1 * rate)
    if len(samples) < block:
        powers = np.array([np.mean(samples**2)])
    else:
        starts = range(0, len(samples) - block + 1, hop)
        powers = np.array([np.mean(samples[s : s + block] ** 2) for s in starts])
    powers = powers[powers > 10 ** (-70 / 10)]
    if powers.size == 0:
        return -70.0
    relative_gate = np.mean(powers) * 10 ** (-10 / 10)
    gated = powers[powers > relative_gate]
    return float(10 * np.log10(np.mean(gated if gated.size else powers)))


def loudness_gain(samples: np.ndarray, rate: int, level_db: float) -> float:
    """The gain that brings ``samples`` to the loudness ``level_db`` (``loudness_db``)."""
    return 10 ** ((level_db - loudness_db(samples, rate)) / 20)


def make_noise(rng: np.random.Generator, length: int, rate: int, babble: list[np.ndarray]) -> np.ndarray:
    """Background noise: coloured noise (white..brown, random band, tremolo) plus speech babble.

    Plays the role of WHAM!'s cafe/restaurant recordings: a stationary-ish
    bed plus other talkers that are not among the corpus speakers.
    """
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.maximum(np.fft.rfftfreq(length, 1.0 / rate), 1.0)
    slope = rng.uniform(0.0, 2.0)  # 0 white, 1 pink, 2 brown
    low, high = rng.uniform(40, 300), rng.uniform(1500, 0.45 * rate)
    shape = freqs ** (-slope / 2) * (freqs / low) ** 2 / (1 + (freqs / low) ** 2) / (1 + (freqs / high) ** 4)
    coloured = np.fft.irfft(spectrum * shape, n=length)
    t = np.arange(length) / rate
    coloured *= 1 + rng.uniform(0, 0.7) * np.sin(2 * np.pi * rng.uniform(0.2, 3.0) * t + rng.uniform(0, 6.3))
    coloured /= np.sqrt(np.mean(coloured**2)) + 1e-12
    talkers = np.zeros(length)
    for _ in range(int(rng.integers(2, 5))):
        speech = babble[int(rng.integers(len(babble)))]
        tiled = np.tile(speech, length // len(speech) + 2)
        start = int(rng.integers(len(speech)))
        talkers += tiled[start : start + length] * 10 ** (rng.uniform(-6, 0) / 20)
    talkers /= np.sqrt(np.mean(talkers**2)) + 1e-12
    noise = coloured + talkers * 10 ** (rng.uniform(-10, 10) / 20)
    return (noise * 10 ** (-25 / 20) / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _read(path: Path) -> np.ndarray:
    samples, _ = sf.read(path, dtype="float32")
    return samples


def _fit(parts: list[np.ndarray], mode: str) -> list[np.ndarray]:
    if mode == "min":
        length = min(len(p) for p in parts)
        return [p[:length] for p in parts]
    length = max(len(p) for p in parts)
    return [np.pad(p, (0, length - len(p))) for p in parts]


def _snr(signal: np.ndarray, rest: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(signal**2) / (np.mean(rest**2) + 1e-10) + 1e-10))


def mix_one(job: MixtureJob) -> dict:
    """Write s1, s2[, s3], noise and the three mixtures of one mixture ID in both modes.

    Returns the gains, the length per mode and the SNRs per mode and mixture type.
    """
    from tsekit.corpora.tts import resample

    speech_names = [f"s{k}" for k in range(1, len(job.sources) + 1)]
    if job.state.is_file():
        done = json.loads(job.state.read_text())
        names = (*speech_names, "noise", *MIXTURE_TYPES)
        outputs = [d / name / f"{job.id}.wav" for d in job.mode_dirs for name in names]
        if job.noise.is_file() and all(path.is_file() for path in outputs):
            return done
    speech = [_read(path) for path in job.sources]
    if not job.noise.is_file():
        babble = [_read(path) for path in job.babble]
        noise_rng = np.random.default_rng([*job.seed, 0])
        length = max(len(s) for s in speech)
        write_audio(job.noise, make_noise(noise_rng, length, SOURCE_RATE, babble), SOURCE_RATE)
    noise = _read(job.noise)  # read back: a resumed run must mix the same quantized samples
    rng = np.random.default_rng([*job.seed, 1])  # separate from the noise's: resuming must not shift it
    gains = [loudness_gain(s, SOURCE_RATE, rng.uniform(*SPEECH_LOUDNESS)) for s in speech]
    gains.append(loudness_gain(noise, SOURCE_RATE, rng.uniform(*NOISE_LOUDNESS)))
    parts = _fit([x * g for x, g in zip((*speech, noise), gains, strict=True)], "max")
    every_signal = (*parts, *(sum(_parts_of(parts, kind)) for kind in MIXTURE_TYPES))
    peak = max(float(np.max(np.abs(x))) for x in every_signal)
    if peak > MAX_AMP:
        gains = [g * MAX_AMP / peak for g in gains]
    scaled = [
        resample((x * g).astype(np.float32), SOURCE_RATE, job.rate)
        for x, g in zip((*speech, noise), gains, strict=True)
    ]
    result = {"id": job.id, "gains": gains, "length": {}, "snr": {}}
    for mode, mode_dir in zip(MODES, job.mode_dirs, strict=True):
        fitted = _fit(scaled, mode)
        mixtures = {kind: _parts_of(fitted, kind) for kind in MIXTURE_TYPES}
        files = {**dict(zip((*speech_names, "noise"), fitted, strict=True)),
                 **{k: sum(v) for k, v in mixtures.items()}}  # fmt: skip
        for name, samples in files.items():
            path = mode_dir / name / f"{job.id}.wav"
            if not path.is_file():
                write_audio(path, samples, job.rate)
        result["length"][mode] = len(fitted[0])
        result["snr"][mode] = {
            kind: [_snr(p, sum(parts) - p) for p in parts] for kind, parts in mixtures.items()
        }
    with atomic_open(job.state) as f:
        json.dump(result, f)
    return result


def _parts_of(signals: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """The signals (sources 1..n, then noise) a mixture type sums, in that order."""
    sources, noise = mixture_contents(kind, len(signals) - 1)
    return [signals[k - 1] for k in sources] + ([signals[-1]] if noise else [])


def _run_all(function: Callable, jobs: Sequence, workers: int, desc: str) -> list:
    """``function`` over ``jobs`` in a process pool (in order), with a progress bar."""
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc=desc, unit="file" if "speech" in desc else "mixture", disable=None)
    if workers <= 1 or len(jobs) <= 1:
        return [function(job) for job in tqdm(jobs, **bar)]
    # spawn, not fork: the parent may hold threads (tqdm's monitor) that fork would copy mid-state
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        return list(tqdm(pool.map(function, jobs, chunksize=4), **bar))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C or a failed job: stop at once
        raise
    finally:
        pool.shutdown()


def _synthesize_job(args: tuple[Utterance, Path]) -> dict:
    return synthesize_utterance(*args)


# ---------------------------------------------------------------- writing


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    with atomic_open(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _check_state(out: Path, seed: int, size: CorpusSize, num_sources: int) -> Path:
    """Refuse to resume a corpus made with another seed, size or number of sources (it would mix both)."""
    state = out / STATE_DIR
    config = {"seed": seed, **asdict(size)}
    if num_sources != 2:  # 2-source corpora were made before the option: their config stays as it was
        config["num_sources"] = num_sources
    path = state / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != config:
            raise TsekitError(
                f"{path}: {out} was made with {old}, not {config}; "
                "use another OUT or the same --seed/--size/--num-sources"
            )
    else:
        with atomic_open(path) as f:
            json.dump(config, f)
    return state


def _write_librispeech_texts(utterances: Iterable[Utterance], records: dict[str, dict]) -> None:
    chapters: dict[Path, list[str]] = {}
    for utt in utterances:
        spk, chapter, _ = utt.id.split("-")
        path = utt.path.parent / f"{spk}-{chapter}.trans.txt"
        chapters.setdefault(path, []).append(f"{utt.id} {records[utt.id]['text']}\n")
    for path, lines in chapters.items():
        with atomic_open(path) as f:
            f.writelines(sorted(lines))


def make_mini_libri2mix(
    out: str | os.PathLike,
    size: str | int = "small",
    seed: int = 0,
    sample_rate: int = 16000,
    jobs: int | None = None,
    num_sources: int = 2,
) -> str:
    """Synthesize the mini corpus under ``out`` (see module docstring); returns a summary.

    ``num_sources`` 3 writes OUT/Libri3Mix/ (mixtures of three speakers) instead of OUT/Libri2Mix/.
    """
    if sample_rate not in (8000, 16000):
        raise TsekitError(f"sample rate must be 8000 or 16000, got {sample_rate}")
    name = librimix_name(num_sources)
    require_tts()
    corpus = corpus_size(size, num_sources)
    out = Path(out).absolute()
    workers = jobs or len(os.sched_getaffinity(0))
    state = _check_state(out, seed, corpus, num_sources)
    for stale in out.rglob(".*.tmp"):  # temp files of a killed run (atomic writes never finished)
        stale.unlink()
    speakers = plan_speakers(seed, corpus)

    # 1. plan every utterance and mixture (cheap, all from the seed)
    split_utts: dict[str, dict[str, list[Utterance]]] = {}
    split_groups: dict[str, list[tuple[Utterance, ...]]] = {}
    for index, (split, librispeech_split, _) in enumerate(SPLITS):
        n_mix = corpus.train_mixtures if split == "train-100" else corpus.eval_mixtures
        n_spk = len(speakers[split])
        per_speaker = max(2, math.ceil(n_mix * num_sources / (2 * n_spk)))  # each utterance in about two mixtures
        folder = out / "LibriSpeech" / librispeech_split
        split_utts[split] = plan_utterances(seed, speakers[split], per_speaker, folder)
        group_rng = np.random.default_rng([seed, 4, index])
        split_groups[split] = group_utterances(group_rng, split_utts[split], n_mix, num_sources)
    babble = plan_utterances(seed, speakers["babble"], 6, out / "Noise" / "babble_speech", nested=False)
    all_utts = [u for utts in split_utts.values() for us in utts.values() for u in us]
    all_utts += [u for us in babble.values() for u in us]

    # 2. speech
    speech_jobs = [(u, state / "utterances") for u in all_utts]
    records = {r["id"]: r for r in _run_all(_synthesize_job, speech_jobs, workers, "synthesizing speech")}

    # 3. mixtures
    babble_paths = tuple(u.path for us in babble.values() for u in us)
    rate_dir = out / name / f"wav{sample_rate // 1000}k"
    mix_jobs = []
    for index, (split, _, noise_split) in enumerate(SPLITS):
        for k, group in enumerate(split_groups[split]):
            mixture_id = "_".join(u.id for u in group)
            mix_jobs.append(MixtureJob(
                id=mixture_id, split=split, sources=tuple(u.path for u in group),
                noise=out / "Noise" / noise_split / f"{mixture_id}.wav", babble=babble_paths,
                seed=(seed, 5, index, k), mode_dirs=tuple(rate_dir / mode / split for mode in MODES),
                rate=sample_rate, state=state / "mixtures" / rate_dir.name / split / f"{mixture_id}.json",
            ))  # fmt: skip
    results = _run_all(mix_one, mix_jobs, workers, "mixing")

    # 4. transcripts and CSVs, last
    _write_librispeech_texts([u for utts in split_utts.values() for us in utts.values() for u in us], records)
    _write_speakers_txt(out / "LibriSpeech" / "SPEAKERS.TXT", split_utts, records)
    _write_metadata(out, rate_dir, mix_jobs, results)
    return _summary(out, rate_dir, speakers, results, mix_jobs)


def _write_speakers_txt(path: Path, split_utts: dict, records: dict[str, dict]) -> None:
    """LibriSpeech's SPEAKERS.TXT: ID | SEX | SUBSET | MINUTES | NAME (here: the voice)."""
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME\n"]
    for (split, librispeech_split, _) in SPLITS:
        for spk, utts in split_utts[split].items():
            minutes = sum(records[u.id]["samples"] for u in utts) / SOURCE_RATE / 60
            speaker = utts[0].speaker
            subset = f"{librispeech_split:<17}"
            lines.append(f"{spk:<5}| {speaker.gender} | {subset}| {minutes:5.2f} | {speaker.description}\n")
    with atomic_open(path) as f:
        f.writelines(lines)


def _write_metadata(out: Path, rate_dir: Path, mix_jobs: list[MixtureJob], results: list[dict]) -> None:
    librispeech, noise_root = out / "LibriSpeech", out / "Noise"
    name = rate_dir.parent.name  # Libri2Mix or Libri3Mix
    num_sources = len(mix_jobs[0].sources)
    for split, librispeech_split, _ in SPLITS:
        rows = [(j, r) for j, r in zip(mix_jobs, results, strict=True) if j.split == split]
        source_columns = [c for k in range(1, num_sources + 1) for c in (f"source_{k}_path", f"source_{k}_gain")]
        _write_csv(
            out / name / "metadata" / f"{name.lower()}_{librispeech_split}.csv",
            ["mixture_ID", *source_columns, "noise_path", "noise_gain"],
            [(j.id, *(x for path, gain in zip(j.sources, r["gains"][:-1], strict=True)
                      for x in (path.relative_to(librispeech), gain)),
              j.noise.relative_to(noise_root), r["gains"][-1]) for j, r in rows],
        )  # fmt: skip
        for mode in MODES:
            split_dir = rate_dir / mode / split
            metadata = rate_dir / mode / "metadata"
            for kind in MIXTURE_TYPES:
                sources, noise = mixture_contents(kind, num_sources)
                parts = [f"s{k}" for k in sources] + (["noise"] if noise else [])
                columns = [f"source_{k}_path" for k in sources] + (["noise_path"] if noise else [])
                _write_csv(
                    metadata / f"mixture_{split}_{kind}.csv",
                    ["mixture_ID", "mixture_path", *columns, "length"],
                    [(j.id, split_dir / kind / f"{j.id}.wav", *(split_dir / p / f"{j.id}.wav" for p in parts),
                      r["length"][mode]) for j, r in rows],
                )  # fmt: skip
                snr_columns = [f"source_{k}_SNR" for k in sources] + (["noise_SNR"] if noise else [])
                _write_csv(
                    metadata / f"metrics_{split}_{kind}.csv",
                    ["mixture_ID", *snr_columns],
                    [(j.id, *r["snr"][mode][kind]) for j, r in rows],
                )


def _summary(out: Path, rate_dir: Path, speakers: dict, results: list[dict], mix_jobs: list[MixtureJob]) -> str:
    rate = int(rate_dir.name[3:-1]) * 1000
    name = rate_dir.parent.name  # Libri2Mix or Libri3Mix
    lines = [f"{'split':<10} {'speakers':>8} {'mixtures':>8} {'hours(min)':>10} {'hours(max)':>10}"]
    for split, _, _ in SPLITS:
        rows = [r for j, r in zip(mix_jobs, results, strict=True) if j.split == split]
        hours = {m: sum(r["length"][m] for r in rows) / rate / 3600 for m in MODES}
        counts = f"{split:<10} {len(speakers[split]):>8} {len(rows):>8}"
        lines.append(f"{counts} {hours['min']:>10.3f} {hours['max']:>10.3f}")
    lines.append(f"written to {out}; read it with:")
    options = ("" if rate == 16000 else f" --sample-rate {rate}") + f" --librispeech {out / 'LibriSpeech'}"
    lines.append(f"  tsekit prepare {name.lower()} {out / name} DATA{options}")
    return "\n".join(lines)


# chapters of the utterances made for the conversation sets: above every corpus chapter (1000..299999), so their
# ids and seeds never meet the corpus's
EXTRA_FIRST_CHAPTER = 300000
EXTRA_FOLDER = "Conversations"
MEAN_UTTERANCE_SECONDS = 3.0  # what an utterance lasts on average (MIN_SECONDS..MAX_SECONDS, shorter ones kept)


def extra_utterances(
    out: str | os.PathLike, split: str, have: dict[str, float], needed_seconds: float, jobs: int | None = None
) -> dict[str, list[tuple[str, Path, str]]]:
    """More utterances of ``split``'s speakers, so that each has about ``needed_seconds`` of speech.

    ``have``: seconds each speaker already has (its corpus utterances). The k-th extra utterance of a speaker
    is always the same (chapter ``EXTRA_FIRST_CHAPTER + k // 15``, its own seed), so asking for more speech
    later only adds utterances. They are written in the LibriSpeech layout (flac, trans.txt) under
    ``OUT/Conversations/<LibriSpeech split>/``, resumably like the corpus. Returns speaker -> [(id, flac, text)].
    """
    out = Path(out).absolute()
    config_path = out / STATE_DIR / "config.json"
    if not config_path.is_file():
        raise TsekitError(f"{config_path}: not found; {out} is not a mini corpus (tsekit prepare mini-libri2mix)")
    config = json.loads(config_path.read_text())
    seed = config.pop("seed")
    config.pop("num_sources", None)
    librispeech_split = {name: folder for name, folder, _ in SPLITS}[split]
    folder = out / EXTRA_FOLDER / librispeech_split
    planned: dict[str, list[Utterance]] = {}
    for speaker in plan_speakers(seed, CorpusSize(**config))[split]:
        count = max(0, math.ceil((needed_seconds - have.get(speaker.id, 0.0)) / MEAN_UTTERANCE_SECONDS))
        planned[speaker.id] = []
        for k in range(count):
            chapter, number = EXTRA_FIRST_CHAPTER + k // 15, k % 15
            utt = f"{speaker.id}-{chapter}-{number:04d}"
            path = folder / speaker.id / str(chapter) / f"{utt}.flac"
            planned[speaker.id].append(Utterance(utt, speaker, path, (seed, 3, int(speaker.id), chapter, number)))
    utts = [u for us in planned.values() for u in us]
    if not utts:
        return {}
    require_tts()
    workers = jobs or len(os.sched_getaffinity(0))
    records = {r["id"]: r for r in _run_all(_synthesize_job, [(u, out / STATE_DIR / "utterances") for u in utts],
                                            workers, "synthesizing conversation speech")}  # fmt: skip
    _write_librispeech_texts(utts, records)
    return {spk: [(u.id, u.path, records[u.id]["text"]) for u in us] for spk, us in planned.items() if us}
