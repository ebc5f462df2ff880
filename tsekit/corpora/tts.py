"""Thin wrappers around the Debian TTS voices (flite, festival, espeak-ng) and sox.

A synthetic speaker is a base voice plus a sox pitch shift and tempo change.
All three engines and sox are deterministic (sox runs with ``-D``: no dither),
so the same text and speaker give the same samples bit for bit on every run.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from tsekit import TsekitError

# program -> Debian package that provides it
PROGRAM_PACKAGES = {"flite": "flite", "text2wave": "festival", "espeak-ng": "espeak-ng", "sox": "sox"}
# festival voice -> Debian package that provides it
FESTIVAL_VOICE_PACKAGES = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices", "/usr/lib/festival/voices")
ENGINE_PROGRAMS = {"flite": "flite", "festival": "text2wave", "espeak": "espeak-ng"}


@dataclass(frozen=True)
class Voice:
    """A base TTS voice: an engine and the engine's name for the voice."""

    engine: str  # flite | festival | espeak
    name: str
    gender: str  # M or F, as the voice sounds without pitch shift

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}"


# Nine clearly different base voices: four flite voices (Scottish male, US male,
# US female, diphone male), two festival voices (diphone male, HTS female) and
# three espeak-ng formant voices (US male, Caribbean female, Scottish male).
BASE_VOICES = (
    Voice("flite", "awb", "M"),
    Voice("flite", "rms", "M"),
    Voice("flite", "slt", "F"),
    Voice("flite", "kal16", "M"),
    Voice("festival", "ked_diphone", "M"),
    Voice("festival", "cmu_us_slt_arctic_hts", "F"),
    Voice("espeak", "en-us+m3", "M"),
    Voice("espeak", "en-029+f2", "F"),
    Voice("espeak", "en-gb-scotland+m1", "M"),
)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: base voice + pitch shift (cents) + tempo factor, with a numeric id."""

    id: str
    voice: Voice
    pitch_cents: int
    tempo: float

    @property
    def gender(self) -> str:
        # a large upward shift makes a male voice sound female and vice versa
        if self.voice.gender == "M" and self.pitch_cents >= 300:
            return "F"
        if self.voice.gender == "F" and self.pitch_cents <= -300:
            return "M"
        return self.voice.gender

    @property
    def description(self) -> str:
        return f"{self.voice.label} pitch {self.pitch_cents:+d} cents tempo {self.tempo:.2f}"


def missing_packages(voices: tuple[Voice, ...] = BASE_VOICES) -> list[str]:
    """Debian packages that ``voices`` (and sox) need but that are not installed."""
    missing: list[str] = []
    programs = {"sox"} | {ENGINE_PROGRAMS[v.engine] for v in voices}
    for program in sorted(programs):
        if shutil.which(program) is None:
            missing.append(PROGRAM_PACKAGES[program])
    for voice in voices:
        if voice.engine == "festival" and not _festival_voice_installed(voice.name):
            missing.append(FESTIVAL_VOICE_PACKAGES.get(voice.name, f"festvox voice {voice.name}"))
    if "flite" not in missing and any(v.engine == "flite" for v in voices):
        have = _flite_voices()
        if any(v.engine == "flite" and v.name not in have for v in voices):
            missing.append("flite")  # an old flite without these built-in voices
    return sorted(set(missing))


def require_tts(voices: tuple[Voice, ...] = BASE_VOICES) -> None:
    """Raise a one-line TsekitError naming the Debian packages to install, if any is missing."""
    missing = missing_packages(voices)
    if missing:
        raise TsekitError(
            f"TTS tools missing: install the Debian packages {' '.join(missing)} "
            "(run tools/system_packages.sh as root)"
        )


def _festival_voice_installed(name: str) -> bool:
    return any(Path(root).is_dir() and any(Path(root).glob(f"*/{name}")) for root in FESTIVAL_VOICE_DIRS)


@lru_cache(maxsize=1)
def _flite_voices() -> frozenset[str]:
    proc = subprocess.run(["flite", "-lv"], capture_output=True, text=True)
    text = proc.stdout.split(":", 1)[-1]
    return frozenset(text.split())


def _run(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TsekitError(f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else command[0]}")


def _engine_wav(voice: Voice, text: str, wav: Path) -> None:
    """Let the voice's engine read ``text`` into ``wav`` (at the engine's own rate)."""
    if voice.engine == "flite":
        _run(["flite", "-voice", voice.name, "-t", text, "-o", str(wav)], f"flite voice {voice.name}")
    elif voice.engine == "festival":
        text_file = wav.with_suffix(".txt")
        text_file.write_text(text + "\n", encoding="utf-8")
        _run(
            ["text2wave", "-eval", f"(voice_{voice.name})", str(text_file), "-o", str(wav)],
            f"festival voice {voice.name}",
        )
    elif voice.engine == "espeak":
        _run(["espeak-ng", "-v", voice.name, "-w", str(wav), text], f"espeak-ng voice {voice.name}")
    else:
        raise ValueError(f"unknown TTS engine {voice.engine!r}")


def synthesize(text: str, speaker: Speaker, rate: int = 16000) -> np.ndarray:
    """``speaker`` reads ``text``: float32 mono samples at ``rate``, peak-normalised to -3 dBFS.

    sox applies the speaker's pitch shift and tempo (``tempo -s``: speech
    mode, pitch kept), resamples with its high-quality ``rate -v`` and trims
    long leading/trailing silence (LibriSpeech utterances are segmented
    speech, not TTS padding). ``-D`` turns dither off so output is repeatable.
    """
    with tempfile.TemporaryDirectory(prefix="tsekit-tts-") as tmp:
        raw = Path(tmp) / "engine.wav"
        _engine_wav(speaker.voice, text, raw)
        effects: list[str] = []
        if speaker.pitch_cents:
            effects += ["pitch", str(speaker.pitch_cents)]
        if speaker.tempo != 1.0:
            effects += ["tempo", "-s", f"{speaker.tempo:.3f}"]
        effects += ["rate", "-v", str(rate)]
        # cut silence below -50 dB longer than 0.1 s at both ends, keep 0.1 s of it
        effects += ["silence", "1", "0.05", "-50d", "reverse", "silence", "1", "0.05", "-50d", "reverse"]
        effects += ["pad", "0.1", "0.1", "norm", "-3"]
        command = ["sox", "-D", "-V1", str(raw), "-t", "wav", "-e", "signed", "-b", "16", "-c", "1", "-"]
        proc = subprocess.run(command + effects, capture_output=True)
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise TsekitError(f"sox failed on {speaker.description}: {lines[-1] if lines else ''}")
    samples, got_rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    assert got_rate == rate
    return samples


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono float32 audio with sox's high-quality resampler (no dither)."""
    if rate_in == rate_out:
        return samples
    command = ["sox", "-D", "-V1", "-t", "f32", "-r", str(rate_in), "-c", "1", "-",
               "-t", "f32", "-r", str(rate_out), "-c", "1", "-", "rate", "-v", str(rate_out)]  # fmt: skip
    proc = subprocess.run(command, input=np.ascontiguousarray(samples, dtype="<f4").tobytes(),
                          capture_output=True)  # fmt: skip
    if proc.returncode != 0:
        raise TsekitError(f"sox resampling {rate_in} -> {rate_out} Hz failed: {proc.stderr.decode().strip()}")
    return np.frombuffer(proc.stdout, dtype="<f4").copy()
