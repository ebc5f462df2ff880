"""Running the scorer over manifests: inputs, checks, job shards, resumable parts.

Every finished utterance is appended as one JSON line to ``OUT/parts/<part>.jsonl``
and flushed, so a killed run loses at most the utterance in flight; a rerun reads
the parts, skips what is done and ignores a torn last line. ``--nj N`` runs N
worker processes (each loads its models once) under one writer; ``--job J --nj N``
scores only the J-th of N contiguous shards, for the Kaldi runners, and
``tsekit score merge`` joins the parts once all jobs are done.

Rows are the reference's, or the mixture's for absent-target rows (``--absent``), which have no reference.
Conversation rows come with an RTTM (or tsekit's segments), utt2reco and utt2spk (``--rttm``, or a data dir's):
every input, the turns' lines and their ends against the recordings' lengths are checked before anything is
written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tsekit import TsekitError
from tsekit.data.rttm import Turn, check_turn_ends, read_turns
from tsekit.data.table import read_table, sorted_keys
from tsekit.jobs import atomic_open, drop_torn_line, shard
from tsekit.lock import writer_lock
from tsekit.metrics import THREAD_VARIABLES
from tsekit.metrics.conversation import AUDIBLE_THRESHOLD_DB, check_rows_speak, regions
from tsekit.metrics.scorer import Scorer, Utterance, UtteranceScores, choose_metrics

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class ScoreInputs:
    """utt -> audio entry for each role, and the files they came from (for messages)."""

    ref: dict[str, str] | None  # None: absent-target rows, keyed by the mixture
    est: dict[str, str]
    mix: dict[str, str] | None = None
    enroll: dict[str, str] | None = None
    text: dict[str, str] | None = None  # may lack rows: targets cut short have no transcript
    hyp_text: dict[str, str] | None = None  # utt -> the system's own transcript (tsasr_wer)
    sources: dict[str, str] | None = None  # role -> manifest or folder it was read from
    # conversations: utt -> recording and target speaker, recording -> its RTTM turns
    utt2reco: dict[str, str] | None = None
    utt2spk: dict[str, str] | None = None
    turns: dict[str, list[Turn]] | None = None

    @property
    def turns_source(self) -> str:
        """The RTTM or segments file the turns came from."""
        return self.sources.get("rttm") or self.sources["segments"]

    @property
    def key(self) -> str:
        """The role whose rows are scored and whose sample rate the others must have."""
        return "ref" if self.ref is not None else "mix"

    def utts(self) -> list[str]:
        return sorted_keys(getattr(self, self.key))


def inputs_from_manifests(ref: str | None, est: str, mix: str | None = None, enroll: str | None = None,
                          text: str | None = None, hyp_text: str | None = None, absent: bool = False,
                          rttm: str | None = None, utt2reco: str | None = None, utt2spk: str | None = None,
                          segments: str | None = None) -> ScoreInputs:
    """Read the scp files; every reference must have an estimate (and mixture/enrollment/text when given).

    ``hyp_text``: a Kaldi text table of the system's own transcripts (a transcript may be empty), scored
    against ``text`` (which it needs) by ``tsasr_wer``. ``absent``: the rows have no target (no ``ref``), each
    mixture must have an estimate. ``rttm`` (or ``segments`` in tsekit's layout): conversation rows;
    ``utt2reco`` and ``utt2spk`` say which recording and which of its speakers each row is.
    """
    if hyp_text is not None and text is None:
        raise TsekitError(f"{hyp_text}: hypothesis transcripts (--hyp-text) are scored against reference "
                          "transcripts; give --text too")
    turn_files = {kind: path for kind, path in (("rttm", rttm), ("segments", segments)) if path is not None}
    if absent and (ref is not None or mix is None or turn_files):
        raise TsekitError("absent-target rows (--absent) are scored from --est and --mix alone: no --ref, no --rttm")
    if not absent and ref is None:
        raise TsekitError("give --ref (the targets), or --absent for rows whose target is not in the mixture")
    if len(turn_files) > 1:
        raise TsekitError("give the turns once: --rttm or --segments")
    if bool(turn_files) != (utt2reco is not None) or bool(turn_files) != (utt2spk is not None):
        raise TsekitError("conversations need --rttm (or --segments), --utt2reco and --utt2spk together")
    paths = {"ref": ref, "est": est, "mix": mix, "enroll": enroll, "text": text, "hyp_text": hyp_text,
             "utt2reco": utt2reco, "utt2spk": utt2spk}
    tables = {role: read_table(path) for role, path in paths.items() if path is not None and role != "hyp_text"}
    if hyp_text is not None:
        tables["hyp_text"] = read_hypotheses(hyp_text)
    key = "mix" if absent else "ref"
    rows = tables[key]
    if not rows:
        raise TsekitError(f"{paths[key]}: no utterances")
    what = {"est": "estimate", "hyp_text": "hypothesis transcript", "utt2reco": "recording", "utt2spk": "speaker"}
    for role, table in tables.items():
        # a reference transcript may be absent (a target cut short has none: PARTIAL_FILES); such a row gets no WER
        missing = [u for u in rows if u not in table and role != "text"]
        if missing:
            raise TsekitError(f"{paths[role]}: no {what.get(role, role)} for {len(missing)} of {len(rows)} "
                              f"{'mixtures' if absent else 'reference utterances'} (e.g. {sorted_keys(missing)[0]})")
    sources = {role: str(path) for role, path in paths.items() if path is not None}
    selected = {role: {u: tables[role][u] for u in rows if u in tables[role]} for role in tables}
    inputs = ScoreInputs(**{"ref": None, **selected}, sources=sources)
    for kind, path in turn_files.items():
        sources[kind] = str(path)
        inputs.turns = read_turns(path, set(inputs.utt2reco.values()), utt2reco, kind)
        check_rows_speak(inputs.turns, inputs.utt2reco, inputs.utt2spk, str(path))
    return inputs


def inputs_from_data_dir(data: str | os.PathLike, est: str, hyp_text: str | None = None,
                         with_text: bool = False) -> ScoreInputs:
    """The inputs a TSE data dir holds for scoring the estimates ``est`` of its rows.

    The mixtures (wav.scp), the targets (spk1.scp), enrollments (enroll.scp) when there, the transcripts
    (text) when there and ``with_text`` (a metric uses them: an ASR model or ``hyp_text`` is given; otherwise
    they would only change the recorded inputs), a conversation set's rttm (else its segments) with utt2reco
    and utt2spk, and an absent-target set's utt2present (every row 0; such a set has no spk1.scp).
    """
    data = Path(data)
    if not data.is_dir():
        raise TsekitError(f"{data}: data directory not found")

    def there(name: str) -> str | None:
        return str(data / name) if (data / name).is_file() else None

    absent = _all_absent(data / "utt2present") if (data / "utt2present").is_file() else False
    rttm = there("rttm")
    segments = there("segments") if rttm is None else None
    conversation = rttm is not None or segments is not None
    return inputs_from_manifests(
        None if absent else str(data / "spk1.scp"), est, str(data / "wav.scp"), there("enroll.scp"),
        there("text") if with_text else None, hyp_text, absent=absent,
        rttm=rttm, utt2reco=str(data / "utt2reco") if conversation else None,
        utt2spk=str(data / "utt2spk") if conversation else None, segments=segments)


def _all_absent(path: Path) -> bool:
    """Whether utt2present marks every row absent (0); a set mixing absent and present rows is refused."""
    presence = read_table(path)
    bad = [u for u, v in presence.items() if v not in ("0", "1")]
    if bad:
        raise TsekitError(f"{path}: {bad[0]}: {presence[bad[0]]!r} is neither 0 (absent target) nor 1 (present)")
    absent = sum(v == "0" for v in presence.values())
    if 0 < absent < len(presence):
        raise TsekitError(f"{path}: {absent} of {len(presence)} rows have an absent target: absent and present "
                          "rows are scored by different metrics; split them into two data dirs")
    return absent > 0


def read_hypotheses(path: str | os.PathLike) -> dict[str, str]:
    """A Kaldi text table of hypotheses, ``utt transcript``; a line may hold only the key (a system that heard
    nothing writes an empty transcript)."""
    return read_table(path, allow_empty=True)


def _audio_files(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        raise TsekitError(f"{folder}: folder not found")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            key = path.relative_to(folder).with_suffix("").as_posix()
            if any(c.isspace() for c in key):
                raise TsekitError(f"{path}: file names with spaces cannot be keys")
            if key in files:
                raise TsekitError(f"{path}: two files named {key} (.wav and .flac)")
            files[key] = str(path)
    if not files:
        raise TsekitError(f"{folder}: no .wav or .flac files")
    return files


def inputs_from_dirs(ref_dir: str, est_dir: str, mix_dir: str | None = None,
                     enroll_dir: str | None = None) -> ScoreInputs:
    """Match audio files of the folders by relative path without extension."""
    folders = {"ref": ref_dir, "est": est_dir, "mix": mix_dir, "enroll": enroll_dir}
    found = {role: _audio_files(Path(folder)) for role, folder in folders.items() if folder is not None}
    reference = found["ref"]
    for role, files in found.items():
        missing = [u for u in reference if u not in files]
        if missing:
            raise TsekitError(f"{folders[role]}: no file matching {len(missing)} of {len(reference)} reference "
                              f"files (e.g. {sorted(missing)[0]})")
    sources = {role: str(folder) for role, folder in folders.items() if folder is not None}
    return ScoreInputs(**{role: {u: files[u] for u in reference} for role, files in found.items()},
                       sources=sources)


def check_headers(inputs: ScoreInputs, utts: list[str]) -> dict[str, int]:
    """Fail before any work on a bad audio file (``tsekit.data.audio.check_audio``: missing, unreadable, empty,
    not mono) of every reference and of the other inputs of rows ``utts``, or on an estimate or mixture at
    another rate than its reference. Returns utt -> sample rate of every reference (so that all jobs choose
    the same metrics)."""
    from tsekit.data.audio import check_audio

    def headers(role: str, rows: list[str]) -> dict[str, tuple[int, int]]:
        source, table = inputs.sources[role], getattr(inputs, role)
        return check_audio({source: {utt: table[utt] for utt in rows}})[source]

    key_headers = headers(inputs.key, inputs.utts())
    ref_rates = {utt: rate for utt, (rate, _) in key_headers.items()}
    what = "reference" if inputs.key == "ref" else "mixture"
    for role in ("est", "mix", "enroll"):
        if getattr(inputs, role) is None or role == inputs.key:
            continue
        rates = headers(role, utts)
        if role == "enroll":
            continue  # at any rate: the speaker model resamples it
        for utt in utts:
            if rates[utt][0] != ref_rates[utt]:
                raise TsekitError(f"{inputs.sources[role]}: {utt}: {getattr(inputs, role)[utt]}: sample rate "
                                  f"{rates[utt][0]} Hz, but the {what} has {ref_rates[utt]} Hz")
    if inputs.turns is not None:
        # every job checks every recording, so that no job writes a part of a run another one refuses
        for utt, (rate, frames) in key_headers.items():
            check_turn_ends(inputs.turns[inputs.utt2reco[utt]], rate, frames, inputs.turns_source,
                            f"{inputs.sources[inputs.key]}: {utt}")
    return ref_rates


def load_utterance(inputs: ScoreInputs, utt: str) -> tuple[Utterance, list[str]]:
    """Read an utterance's audio (checked by ``check_headers``); unequal lengths are trimmed to the shortest, with
    a warning, as is a silent or short enrollment (``enrollment_doubt``)."""
    from tsekit.data.audio import load_audio
    from tsekit.data.enroll import enrollment_doubt

    audio, warnings = {}, []
    for role in ("ref", "est", "mix", "enroll"):
        table = getattr(inputs, role)
        if table is not None:
            where = f"{inputs.sources[role]}: {utt}"
            audio[role] = load_audio(table[utt], where)  # mono, at the reference's rate: check_headers saw to it
            if role == "enroll" and (doubt := enrollment_doubt(*audio[role])):
                warnings.append(f"{where}: {table[utt]}: {doubt}")
    rate = audio[inputs.key][1]
    lengths = {role: len(audio[role][0]) for role in ("ref", "est", "mix") if role in audio}
    shortest = min(lengths.values())
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{role} {n}" for role, n in lengths.items())
        warnings.append(f"{utt}: lengths differ ({shown} samples); trimmed to {shortest}")
    utterance = Utterance(
        utt=utt, rate=rate,
        estimate=audio["est"][0][:shortest], reference=audio["ref"][0][:shortest] if "ref" in audio else None,
        mixture=audio["mix"][0][:shortest] if "mix" in audio else None,
        enroll=audio["enroll"][0] if "enroll" in audio else None,
        enroll_rate=audio["enroll"][1] if "enroll" in audio else None,
        text=inputs.text.get(utt) if inputs.text is not None else None,
        untranscribed=inputs.text is not None and utt not in inputs.text,
        hyp_text=inputs.hyp_text[utt] if inputs.hyp_text is not None else None,
        regions=None if inputs.turns is None else regions(inputs.turns[inputs.utt2reco[utt]], inputs.utt2spk[utt],
                                                          rate, shortest),
    )
    return utterance, warnings


# --- parts on disk ---------------------------------------------------------------------------

def read_parts(out: Path) -> dict[str, dict]:
    """Finished utterances of every part file (a torn last line from a kill is ignored)."""
    done: dict[str, dict] = {}
    for part in sorted((out / "parts").glob("*.jsonl")):
        with open(part, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill; that utterance is scored again
                done[record["utt"]] = record
    return done


def write_settings(out: Path, settings: dict) -> None:
    """Remember what OUT is scoring; a rerun with other inputs or metrics must use another OUT."""
    path = out / "parts" / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            raise TsekitError(f"{out}: already scored with other settings ({', '.join(changed)}); "
                              "use another --out or remove it")
        return
    with atomic_open(path) as f:
        json.dump(settings, f, indent=1, sort_keys=True)


# --- worker processes ------------------------------------------------------------------------

_worker: tuple[Scorer, ScoreInputs] | None = None
# one math thread per worker process: N workers on N cores, not N x N threads
SINGLE_THREAD = {name: "1" for name in THREAD_VARIABLES}


def _init_worker(metrics: list[str], asr_model: str | None, audible_threshold: float, inputs: ScoreInputs) -> None:
    global _worker
    _worker = (Scorer(metrics, asr_model, audible_threshold=audible_threshold), inputs)


def _score_one(utt: str) -> dict:
    scorer, inputs = _worker
    utterance, warnings = load_utterance(inputs, utt)
    result: UtteranceScores = scorer.score(utterance)
    result.warnings += warnings
    return asdict(result)


def run_scoring(inputs: ScoreInputs, out: str | os.PathLike, metrics: str | None = None, nj: int = 1,
                job: int | None = None, asr_model: str | None = None,
                audible_threshold: float = AUDIBLE_THRESHOLD_DB) -> tuple[list[str], list[str]]:
    """Score the utterances of this job (all of them without ``job``) into OUT/parts/.

    Returns (the metrics scored, messages for the user). Without ``job``, ``nj``
    worker processes share the work, each loading its models once; with ``job``,
    ``nj`` is the number of jobs and this process scores its shard alone.
    ``audible_threshold``: absent_energy (dB) above which an absent-target row counts as audible.
    """
    from tqdm import tqdm

    out = Path(out)
    utts = inputs.utts()
    mine = shard(utts, job, nj) if job is not None else utts
    ref_rates = check_headers(inputs, mine)
    have = {role for role in ("mix", "enroll", "text", "hyp_text") if getattr(inputs, role) is not None}
    if asr_model is not None:
        have.add("asr")
    if inputs.ref is None:
        have.add("absent")
    if inputs.turns is not None:
        have.add("rttm")
    from tsekit.metrics.dnsmos import dnsmos_supported

    if all(dnsmos_supported(rate) for rate in set(ref_rates.values())):
        have.add("16k")  # DNSMOS works: 16 kHz, or higher rates resampled down to it
    chosen, messages = choose_metrics(metrics, have)
    settings = {"metrics": chosen, "inputs": inputs.sources, "asr_model": asr_model, "utterances": len(utts)}
    if "audible" in chosen:  # only then: the settings of every other run stay as they were, and resume
        settings["audible_threshold"] = audible_threshold
    # one writer per shard (tsekit.lock): the jobs of one run share OUT, each with its own lock
    with writer_lock(out, f"job{job}" if job is not None else ""):
        write_settings(out, settings)
        done = read_parts(out)
        todo = [u for u in mine if u not in done]
        if not todo:
            return chosen, messages + [f"all {len(mine)} utterances already scored"]
        part = out / "parts" / (f"job{job}.jsonl" if job is not None else "local.jsonl")
        workers = min(nj if job is None else 1, len(todo))
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"scoring {out}", unit="utt", disable=None)
        drop_torn_line(part)
        with open(part, "a", encoding="utf-8") as sink:
            if workers == 1:
                _init_worker(chosen, asr_model, audible_threshold, inputs)
                _consume(map(_score_one, todo), sink, bar)
            else:
                import multiprocessing

                # spawn: fresh interpreters (no forked torch/onnx state), which read the
                # thread settings from the environment when they import numpy
                context = multiprocessing.get_context("spawn")
                saved = {name: os.environ.get(name) for name in SINGLE_THREAD}
                os.environ.update(SINGLE_THREAD)
                try:
                    pool = context.Pool(workers, _init_worker, (chosen, asr_model, audible_threshold, inputs))
                finally:
                    for name, value in saved.items():
                        if value is None:
                            os.environ.pop(name)
                        else:
                            os.environ[name] = value
                with pool:
                    _consume(pool.imap_unordered(_score_one, todo), sink, bar)
        bar.close()
        return chosen, messages


def _consume(results, sink, bar) -> None:
    for record in results:
        sink.write(json.dumps(record, allow_nan=True) + "\n")
        sink.flush()
        bar.update(1)
