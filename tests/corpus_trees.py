"""Tiny fake copies of Libri2Mix, Libri3Mix, WSJ0-2mix and WHAM! in their real on-disk layouts.

Every file is a real 16-bit wav (a few sines plus noise bursts, 0.3-0.6 s), and
mixtures are the sums of their sources, cut (min) or padded (max) as the real
corpora do. The builders return what they wrote (ids, speakers, lengths), so
tests compare a preparation against the truth instead of re-deriving it with
the code under test. LibriMix CSVs hold absolute paths under a root that does
not exist, as after copying a corpus to another disk.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

WSJ_SPLITS = ("tr", "cv", "tt")
WSJ_SPEAKERS = ("01a", "02c", "20g", "40b", "050", "22h")
LIBRI_SPEAKERS = ("1272", "2035", "84", "6313", "3000", "174")
LIBRI_WORDS = ("THE", "CAT", "SAT", "ON", "A", "MAT", "HELLO", "WORLD", "SPEECH", "GREEN")
LIBRIMIX_MIXTURES = ("mix_clean", "mix_both", "mix_single")
WHAM_MIXTURES = ("mix_both", "mix_clean", "mix_single")


def librimix_columns(num_sources: int) -> dict[str, tuple[str, ...]]:
    """The columns real LibriMix CSVs have (newest version); mix_single is source 1 + noise."""
    sources = tuple(f"source_{k}_path" for k in range(1, num_sources + 1))
    return {
        "mix_clean": ("mixture_ID", "mixture_path", *sources, "length"),
        "mix_both": ("mixture_ID", "mixture_path", *sources, "noise_path", "length"),
        "mix_single": ("mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"),
    }


LIBRIMIX_COLUMNS = librimix_columns(2)
GONE_ROOT = "/gone/storage/Libri2Mix"  # where the CSV paths point: never exists


@dataclass(frozen=True)
class FakeMixture:
    """What a builder wrote for one mixture (same for every rate and mode)."""

    split: str
    mixture_id: str
    source_utts: tuple[str, ...]
    speakers: tuple[str, ...]
    texts: tuple[str, ...] = ("", "")
    seconds: tuple[float, ...] = ()  # each source utterance's whole length (LibriMix: its LibriSpeech flac)


def speechlike(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A signal with some structure: 3 sines under an envelope plus two noise bursts."""
    frames = int(seconds * rate)
    t = np.arange(frames) / rate
    signal = sum(
        rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(100, rate / 4) * t + rng.uniform(0, 6))
        for _ in range(3)
    )
    signal = signal * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
    for _ in range(2):
        start = int(rng.integers(0, max(1, frames - rate // 20)))
        burst = min(frames - start, rate // 20)
        signal[start : start + burst] += rng.normal(0, 0.03, burst)
    return signal.astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype="PCM_16")


def _fit(signal: np.ndarray, frames: int) -> np.ndarray:
    if len(signal) >= frames:
        return signal[:frames]
    return np.pad(signal, (0, frames - len(signal)))


def _sources(rate: int, mode: str, seed: int, num_sources: int = 2,
             seconds: Sequence[float] = ()) -> dict[str, np.ndarray]:
    """s1, s2[, s3] and noise of one mixture, all of the mixture's length; sources of ``seconds`` if given."""
    rng = np.random.default_rng(seed)
    seconds = seconds or [rng.uniform(0.3, 0.6) for _ in range(num_sources)]
    speech = [speechlike(length, rate, rng) for length in seconds]
    frames = (min if mode == "min" else max)(len(s) for s in speech)
    noise = rng.normal(0, 0.01, frames).astype(np.float32)
    return {**{f"s{k}": _fit(s, frames) for k, s in enumerate(speech, 1)}, "noise": noise}


def _mixture_audio(sources: dict[str, np.ndarray], mixture: str) -> np.ndarray:
    speech = sum(signal for name, signal in sources.items() if name != "noise")
    if mixture in ("mix", "mix_clean"):
        return speech
    if mixture == "mix_both":
        return speech + sources["noise"]
    return sources["s1"] + sources["noise"]  # mix_single


def _write_mixture_files(split_dir: Path, name: str, rate: int, mode: str, seed: int,
                         mixtures: Sequence[str], noise: bool, num_sources: int = 2,
                         seconds: Sequence[float] = ()) -> None:
    sources = _sources(rate, mode, seed, num_sources, seconds)
    for sub in sources:
        if sub != "noise" or noise:
            write_wav(split_dir / sub / name, sources[sub], rate)
    for mixture in mixtures:
        write_wav(split_dir / mixture / name, _mixture_audio(sources, mixture), rate)


def wsj_mixtures(splits: Sequence[str], per_split: int, seed: int = 0) -> list[FakeMixture]:
    """WSJ-style mixtures: ``<utt1>_<gain>_<utt2>_<-gain>``, different speakers in each."""
    rng = np.random.default_rng(seed)
    out = []
    for split_number, split in enumerate(splits):
        for index in range(per_split):
            spk1, spk2 = rng.choice(WSJ_SPEAKERS, size=2, replace=False)
            utt1 = f"{spk1}c{split_number}{index:02d}a"
            utt2 = f"{spk2}o{split_number}{index:02d}b"
            gain = rng.uniform(0, 2.5)
            name = f"{utt1}_{gain:.5f}_{utt2}_{-gain:.5f}"
            out.append(FakeMixture(split, name, (utt1, utt2), (str(spk1), str(spk2))))
    return out


def make_wsj_tree(
    root: Path,
    *,
    mixture_dirs: Sequence[str] = ("mix",),
    noise: bool = False,
    rates: Sequence[int] = (8000,),
    modes: Sequence[str] = ("min",),
    splits: Sequence[str] = WSJ_SPLITS,
    per_split: int = 2,
) -> list[FakeMixture]:
    """``root/wav{8k,16k}/{min,max}/{split}/{mixture dirs, s1, s2[, noise]}/<name>.wav``."""
    mixtures = wsj_mixtures(splits, per_split)
    for rate in rates:
        for mode in modes:
            for number, mix in enumerate(mixtures):
                split_dir = root / f"wav{rate // 1000}k" / mode / mix.split
                _write_mixture_files(split_dir, f"{mix.mixture_id}.wav", rate, mode,
                                     seed=1000 * rate + 10 * number + (mode == "max"),
                                     mixtures=mixture_dirs, noise=noise)
    return mixtures


def make_wsj0_2mix_tree(root: Path, **kwargs) -> list[FakeMixture]:
    """A WSJ0-2mix ``2speakers`` folder: mix/, s1/, s2/ per split."""
    return make_wsj_tree(root, mixture_dirs=("mix",), noise=False, **kwargs)


def make_wham_tree(root: Path, **kwargs) -> list[FakeMixture]:
    """A WHAM! folder: mix_both/, mix_clean/, mix_single/, s1/, s2/, noise/ per split."""
    return make_wsj_tree(root, mixture_dirs=WHAM_MIXTURES, noise=True, **kwargs)


def libri_mixtures(splits: Sequence[str], per_split: int, seed: int = 0, num_sources: int = 2) -> list[FakeMixture]:
    """LibriMix mixtures of ``num_sources`` distinct speakers, ids ``<utt1>_<utt2>[_<utt3>]``."""
    rng = np.random.default_rng(seed)
    out = []
    for split_number, split in enumerate(splits):
        for index in range(per_split):
            speakers = tuple(str(s) for s in rng.choice(LIBRI_SPEAKERS, size=num_sources, replace=False))
            utts = tuple(f"{spk}-{1000 * k + split_number}-{index + 10 * (k - 1):04d}"
                         for k, spk in enumerate(speakers, 1))  # fmt: skip
            texts = tuple(" ".join(rng.choice(LIBRI_WORDS, size=4)) for _ in range(num_sources))
            lengths = np.random.default_rng([seed, split_number, index])  # its own: speakers and texts as before
            seconds = tuple(float(lengths.uniform(0.3, 0.6)) for _ in range(num_sources))
            out.append(FakeMixture(split, "_".join(utts), utts, speakers, texts, seconds))
    return out


def write_librimix_csv(
    path: Path,
    mixtures: Sequence[FakeMixture],
    mixture: str,
    columns: Sequence[str],
    lengths: dict[str, int],
    listed_root: str = GONE_ROOT,
    spaces: bool = False,
) -> None:
    """A metadata CSV; paths are absolute under ``listed_root``; unknown columns get filler values."""
    # path is <root>/wavXk/<mode>/metadata/<name>.csv
    listed_mode_dir = f"{listed_root}/{path.parent.parent.parent.name}/{path.parent.parent.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f" {c} " if spaces else c for c in columns])
        for mix in mixtures:
            values = {
                "mixture_ID": mix.mixture_id,
                "mixture_path": f"{listed_mode_dir}/{mix.split}/{mixture}/{mix.mixture_id}.wav",
                **{f"source_{k}_path": f"{listed_mode_dir}/{mix.split}/s{k}/{mix.mixture_id}.wav" for k in (1, 2, 3)},
                "noise_path": f"{listed_mode_dir}/{mix.split}/noise/{mix.mixture_id}.wav",
                "length": str(lengths[mix.mixture_id]),
            }
            writer.writerow([values.get(c, "0.5") for c in columns])


def make_librimix_tree(
    root: Path,
    *,
    num_sources: int,
    rates: Sequence[int] = (16000,),
    modes: Sequence[str] = ("min",),
    splits: Sequence[str] = ("dev", "test"),
    per_split: int = 2,
    columns: dict[str, Sequence[str]] | None = None,
    spaces: bool = False,
) -> list[FakeMixture]:
    """``root/wav{8k,16k}/{min,max}/{split}/...`` plus ``.../metadata/mixture_<split>_<mixture>.csv``.

    ``columns`` overrides the CSV columns per mixture type (other LibriMix versions).
    """
    columns = {**librimix_columns(num_sources), **(columns or {})}
    mixtures = libri_mixtures(splits, per_split, num_sources=num_sources)
    for rate in rates:
        for mode in modes:
            mode_dir = root / f"wav{rate // 1000}k" / mode
            lengths = {}
            for number, mix in enumerate(mixtures):
                seed = 2000 * rate + 10 * number + (mode == "max")
                _write_mixture_files(mode_dir / mix.split, f"{mix.mixture_id}.wav", rate, mode, seed,
                                     mixtures=LIBRIMIX_MIXTURES, noise=True, num_sources=num_sources,
                                     seconds=mix.seconds)
                source = mode_dir / mix.split / "s1" / f"{mix.mixture_id}.wav"
                lengths[mix.mixture_id] = sf.info(str(source)).frames
            for split in splits:
                in_split = [mix for mix in mixtures if mix.split == split]
                for mixture in LIBRIMIX_MIXTURES:
                    write_librimix_csv(mode_dir / "metadata" / f"mixture_{split}_{mixture}.csv", in_split,
                                       mixture, columns[mixture], lengths, spaces=spaces)
    return mixtures


make_libri2mix_tree = partial(make_librimix_tree, num_sources=2)
make_libri3mix_tree = partial(make_librimix_tree, num_sources=3)


def write_librispeech_transcripts(folder: Path, mixtures: Sequence[FakeMixture]) -> None:
    """``folder/<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt`` with each source's text, and beside it each
    source's ``<utt>.flac`` (16 kHz silence of the source's whole length: only its header is read)."""
    by_chapter: dict[tuple[str, str], list[str]] = {}
    for mix in mixtures:
        for utt, text, seconds in zip(mix.source_utts, mix.texts, mix.seconds, strict=True):
            spk, chapter, _ = utt.split("-")
            by_chapter.setdefault((spk, chapter), []).append(f"{utt} {text}")
            flac = folder / "dev-clean" / spk / chapter / f"{utt}.flac"
            flac.parent.mkdir(parents=True, exist_ok=True)
            sf.write(flac, np.zeros(int(seconds * 16000), dtype=np.int16), 16000)
    for (spk, chapter), lines in by_chapter.items():
        path = folder / "dev-clean" / spk / chapter / f"{spk}-{chapter}.trans.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(sorted(lines)) + "\n")
