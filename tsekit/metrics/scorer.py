"""Scoring one utterance: which metrics exist, what each needs, and their values.

A `Scorer` is built once per worker process (it loads DNSMOS, the speaker
encoder and Whisper only when those metrics are asked for) and turns one
`Utterance` (estimate, reference and optional mixture, enrollment, transcript)
into a `UtteranceScores`: the metric values of the estimate, the same metrics
of the mixture used as the estimate (the baseline, computed in the same pass so
SI-SDRi and SNRi reuse it), ASR details and warnings.

``tsasr_wer`` scores no audio: it counts the word errors of the system's own
transcript (``--hyp-text``, a target-speaker ASR system's ``OUT/text``) against
the reference transcript (``--text``), normalised as ``wer``; it has no mixture
baseline and needs no ASR model.

Rows of real recordings (``tsekit.metrics.conversation``, which defines the metrics): an absent-target row has
no reference (``Utterance.reference`` is None) and gets only ``absent_energy`` and ``audible``; a conversation
row carries the RTTM's regions (``Utterance.regions``) and gets the ``*_active`` metrics, the interferers'
suppression and the target's kept energy, and by default no whole-recording metric but WER.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tsekit import TsekitError
from tsekit.metrics.conversation import ABSENT_METRICS, AUDIBLE_THRESHOLD_DB, CONVERSATION_METRICS, Regions

# metric -> the inputs it needs besides the estimate and (except the absent-target ones, "absent") the reference
METRICS: dict[str, frozenset[str]] = {
    "si_sdr": frozenset(),
    "si_sdri": frozenset({"mix"}),
    "snr": frozenset(),
    "snri": frozenset({"mix"}),
    "sdr": frozenset(),
    "sir": frozenset({"mix"}),
    "sar": frozenset({"mix"}),
    "pesq": frozenset(),
    "stoi": frozenset(),
    "estoi": frozenset(),
    "dnsmos_sig": frozenset({"16k"}),
    "dnsmos_bak": frozenset({"16k"}),
    "dnsmos_ovrl": frozenset({"16k"}),
    "dnsmos_p808": frozenset({"16k"}),
    "wer": frozenset({"asr"}),
    "cer": frozenset({"asr"}),
    "tsasr_wer": frozenset({"text", "hyp_text"}),
    "spk_sim": frozenset({"enroll"}),
    "spk_sim_ref": frozenset(),
    "absent_energy": frozenset({"absent", "mix"}),
    "audible": frozenset({"absent", "mix"}),
    "si_sdr_active": frozenset({"rttm"}),
    "sdr_active": frozenset({"rttm"}),
    "interferer_suppression": frozenset({"rttm", "mix"}),
    "target_kept": frozenset({"rttm"}),
}
DNSMOS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
DNSMOS_SKIPPED = "DNSMOS skipped: it is defined at 16 kHz and this data is below 16 kHz"
IMPROVEMENTS = {"si_sdri": "si_sdr", "snri": "snr"}  # improvement -> the metric it improves
# asked for by default when their inputs are there; the others only when named
OPT_IN = frozenset({"spk_sim_ref", "cer"})
# metrics without a mixture baseline: the system's own transcript (the mixture has none), and SAR (the mixture is
# exactly target + interference, so it has no artifacts: its SAR is the clamp, 100 dB, whatever the data)
NO_BASELINE = frozenset({"tsasr_wer", "sar"})
# a conversation's whole-recording metrics that are scored by default: the others are defined but say little of a
# recording where the target is silent most of the time, and PESQ or DNSMOS of ten minutes take long
CONVERSATION_DEFAULTS = frozenset({"wer", "tsasr_wer"})


def choose_metrics(requested: str | None, have: set[str]) -> tuple[list[str], list[str]]:
    """(metrics to compute, messages about metrics left out).

    ``requested`` is a comma list or None for every metric whose inputs are in
    ``have`` (a subset of mix, enroll, asr, text, hyp_text, 16k, absent, rttm). Naming a metric whose input is
    missing is an error, except DNSMOS off 16 kHz, which is skipped with a message. Absent-target rows
    (``absent``) have no reference: only ABSENT_METRICS exist for them. Conversations (``rttm``) get the
    CONVERSATION_METRICS and CONVERSATION_DEFAULTS by default, any other metric when named.
    """
    messages = []
    if requested is None:
        chosen = [m for m, needs in METRICS.items() if m not in OPT_IN and needs <= have]
        if "absent" in have:
            return [m for m in chosen if m in ABSENT_METRICS], messages
        if "rttm" in have:
            return [m for m in chosen if m in CONVERSATION_METRICS or m in CONVERSATION_DEFAULTS], messages
        if "16k" not in have:
            messages.append(DNSMOS_SKIPPED)
        return chosen, messages
    chosen = [m.strip() for m in requested.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METRICS]
    if unknown:
        raise TsekitError(f"unknown metric {unknown[0]!r}; valid metrics: {' '.join(METRICS)}")
    if "absent" in have and (needs_reference := [m for m in chosen if m not in ABSENT_METRICS]):
        raise TsekitError(f"metric {needs_reference[0]} needs a reference, and absent-target rows have none; "
                          f"they are scored by {', '.join(ABSENT_METRICS)}")
    flags = {"mix": "--mix", "enroll": "--enroll", "asr": "--asr-model", "text": "--text", "hyp_text": "--hyp-text",
             "absent": "--absent", "rttm": "--rttm"}
    for metric in chosen:
        missing = METRICS[metric] - have - {"16k"}
        if missing:
            raise TsekitError(f"metric {metric} needs {flags[min(missing)]}")
    if "16k" not in have and any(m in DNSMOS for m in chosen):
        messages.append(DNSMOS_SKIPPED)
        chosen = [m for m in chosen if m not in DNSMOS]
    return list(dict.fromkeys(chosen)), messages


@dataclass
class Utterance:
    utt: str
    rate: int
    estimate: np.ndarray
    reference: np.ndarray | None  # None: an absent-target row
    mixture: np.ndarray | None = None
    enroll: np.ndarray | None = None
    enroll_rate: int | None = None
    text: str | None = None
    # the corpus has transcripts, but not of this row (its target was cut short): no WER, rather than one against
    # another kind of truth than the other rows'
    untranscribed: bool = False
    hyp_text: str | None = None  # the system's own transcript (tsasr_wer)
    regions: Regions | None = None  # a conversation row: where the RTTM says who speaks


@dataclass
class UtteranceScores:
    utt: str
    scores: dict[str, float]
    mixture: dict[str, float] = field(default_factory=dict)
    asr: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Scorer:
    """Computes the chosen metrics of one utterance; models are loaded on first use."""

    def __init__(self, metrics: list[str], asr_model: str | None = None, device: str = "cpu",
                 audible_threshold: float = AUDIBLE_THRESHOLD_DB):
        self.metrics = metrics
        self.asr_model = asr_model
        self.device = device
        self.audible_threshold = audible_threshold
        self._dnsmos = self._speaker = self._asr = None

    # --- models, loaded once per process -------------------------------------------------
    def dnsmos(self):
        if self._dnsmos is None:
            from tsekit.metrics.dnsmos import Dnsmos

            self._dnsmos = Dnsmos()
        return self._dnsmos

    def speaker(self):
        if self._speaker is None:
            from tsekit.pretrained.speaker import SpeakerEncoder

            self._speaker = SpeakerEncoder()
        return self._speaker

    def asr(self):
        if self._asr is None:
            from tsekit.metrics.asr import load_asr

            self._asr = load_asr(self.asr_model, device=self.device)
        return self._asr

    # --- scoring ----------------------------------------------------------------------------
    def score(self, utt: Utterance) -> UtteranceScores:
        wanted = set(self.metrics)
        scores = self._signal_metrics(utt.estimate, utt, wanted)
        mixture: dict[str, float] = {}
        if utt.mixture is not None:
            mixture = self._signal_metrics(utt.mixture, utt, wanted - set(IMPROVEMENTS))
            for improvement, base in IMPROVEMENTS.items():
                if improvement in wanted:
                    scores[improvement] = scores[base] - mixture[base]
        result = UtteranceScores(utt.utt, {m: scores[m] for m in self.metrics if m in scores},
                                 {m: mixture[m] for m in self.metrics if m in mixture and m not in NO_BASELINE})
        if utt.untranscribed and wanted & {"wer", "cer", "tsasr_wer"}:
            result.asr = {"truth_source": "none"}
        elif wanted & {"wer", "cer"}:
            self._asr_metrics(utt, result)
        if "tsasr_wer" in wanted and not utt.untranscribed:
            self._tsasr_metrics(utt, result)
        return result

    def _signal_metrics(self, estimate: np.ndarray, utt: Utterance, wanted: set[str]) -> dict[str, float]:
        from tsekit.metrics import conversation, quality, sdr

        reference, rate = utt.reference, utt.rate
        values: dict[str, float] = {}
        if wanted & set(ABSENT_METRICS):
            values["absent_energy"] = conversation.absent_energy(estimate, utt.mixture)
            values["audible"] = float(values["absent_energy"] > self.audible_threshold)
        if wanted & set(CONVERSATION_METRICS):
            values.update(conversation.conversation_scores(estimate, reference, utt.mixture, utt.regions, wanted))
        if wanted & {"si_sdr", "si_sdri"}:
            values["si_sdr"] = sdr.si_sdr(estimate, reference)
        if wanted & {"snr", "snri"}:
            values["snr"] = sdr.snr(estimate, reference)
        if wanted & {"sdr", "sir", "sar"}:
            interference = None if utt.mixture is None else utt.mixture - reference
            values["sdr"], values["sir"], values["sar"] = sdr.bss_eval(estimate, reference, interference)
        if "pesq" in wanted:
            values["pesq"] = quality.pesq_score(estimate, reference, rate)
        if "stoi" in wanted:
            values["stoi"] = quality.stoi_score(estimate, reference, rate)
        if "estoi" in wanted:
            values["estoi"] = quality.stoi_score(estimate, reference, rate, extended=True)
        if wanted & set(DNSMOS):
            values.update(self.dnsmos()(estimate, rate))
        if wanted & {"spk_sim", "spk_sim_ref"}:
            from tsekit.metrics.speaker import cosine_similarity

            embedding = self.speaker().embed(estimate, rate)
            if "spk_sim" in wanted:
                enroll = self.speaker().embed(utt.enroll, utt.enroll_rate or rate)
                values["spk_sim"] = cosine_similarity(embedding, enroll)
            if "spk_sim_ref" in wanted:
                values["spk_sim_ref"] = cosine_similarity(embedding, self.speaker().embed(reference, rate))
        return values

    def _asr_metrics(self, utt: Utterance, result: UtteranceScores) -> None:
        """WER/CER of the estimate (and of the mixture) against `text`, else against the reference's ASR."""
        from tsekit.metrics.asr import char_errors, word_errors

        asr = self.asr()
        if utt.text is not None:
            truth, source = utt.text, "text"
        else:
            truth, source = asr.transcribe(utt.reference, utt.rate), "asr_of_reference"
        details: dict[str, object] = {"truth_source": source, "truth": truth}
        signals = {"estimate": utt.estimate}
        if utt.mixture is not None:
            signals["mixture"] = utt.mixture
        for name, signal in signals.items():
            hypothesis = asr.transcribe(signal, utt.rate)
            word_err, words = word_errors(truth, hypothesis)
            char_err, chars = char_errors(truth, hypothesis)
            details.update({f"{name}_hyp": hypothesis, f"{name}_word_errors": word_err,
                            f"{name}_char_errors": char_err})
            target = result.scores if name == "estimate" else result.mixture
            if "wer" in self.metrics:
                target["wer"] = word_err / words if words else math.nan
            if "cer" in self.metrics:
                target["cer"] = char_err / chars if chars else math.nan
        details.update({"words": words, "chars": chars})
        result.asr = details

    def _tsasr_metrics(self, utt: Utterance, result: UtteranceScores) -> None:
        """WER of the system's own transcript against `text`; counts beside the Whisper ones in ``result.asr``."""
        from tsekit.metrics.asr import word_errors

        errors, words = word_errors(utt.text, utt.hyp_text)
        result.scores["tsasr_wer"] = errors / words if words else math.nan
        # truth and words are those of wer too when both are scored: both count against `text` then
        result.asr.update({"truth_source": "text", "truth": utt.text, "words": words, "tsasr_hyp": utt.hyp_text,
                           "tsasr_word_errors": errors})
