"""Codec tokens of a data dir (recipe stage 3, ``tsekit tokenize``): one integer matrix per signal a token
system reads.

Layout of OUT::

    codec.yaml                     codec spec, bandwidth, sample_rate, frame_rate, num_codebooks, codebook_size,
                                   weights_sha256 (the hash of the codec's weights, ``registry.hash_weights``)
    <signal>/tokens.scp            key -> <ark>:<offset> (absolute), written once the signal is complete
    <signal>/tokens.ark            the matrices of a run without --job
    <signal>/tokens.<J>.ark        the matrices of job J
    <signal>/parts/<all|J>.scp     what that run or job has written so far: its resume record

Signals and their keys (the keys of the source table, so they are data-dir row keys):

- ``mixture``: ``wav.scp``, one matrix per row;
- ``target``: ``spk1.scp``, one matrix per row;
- ``enroll``: ``enroll.scp``, one matrix per row, the tokens of the enrollment *of* that row;
- ``enroll_pos``, ``enroll_neg``: ``enroll_pos.scp``, ``enroll_neg.scp`` (``tsekit enroll --posneg``), one matrix
  per row, the tokens of that row's noisy positive and negative enrollment clips.

The enrollment signals are optional: a data dir without one of those tables has no tokens of it.

Finding the tokens of an enrollment (what the dataset does): a fixed enrollment (``enroll.scp``) of row R is
``enroll/tokens.scp[R]``; an enrollment sampled from ``spk2enroll`` is the ``spk1.scp`` audio of a row R, so
its tokens are ``target/tokens.scp[R]`` (as are those of a row enrolled by its own target). Every row
``spk2enroll`` lists is checked to be a row of ``spk1.scp``, so all of them have tokens; nothing is encoded
twice under two names. ``enrollment_tokens`` says this in code.

Which codec made the tokens: ``codec.yaml`` names it by its spec (a trained codec's experiment dir as an absolute
path) and knows it by the hash of its weights, so tokens are never read through a codec retrained in the
same place: the trainer compares the hash with that of the codec the experiment speaks through
(``check_token_codec``), and a rerun into the same OUT with other weights is refused. A codec.yaml without the
hash (written before it was recorded) or with a null one (a toolkit codec built by name: random weights) is
read as before, checked by its token grid only.

A matrix is (codebooks x frames) int32. Kaldi has no integer matrices, so kaldiio stores each as an NPY
blob inside the ark (``write_function="numpy"``); ``read_tokens`` reads only such blobs (it checks the
``NPY`` flag, so no pickle in a foreign ark is ever loaded) and checks them against ``codec.yaml``.

Every signal is resampled from its file's rate to the codec's (``registry.resample``) and encoded whole.
Before anything is written (``codec.yaml`` included), every file still to encode is checked from its header
(``tsekit.data.audio.check_audio``: found, readable, not empty, mono), so a bad file leaves OUT as it was.

Resuming and jobs (as ``tsekit infer``): ``job=J, nj=N`` takes the J-th of N contiguous shards of the
sorted rows, with all three signals of those rows. A job appends each matrix to its ark, flushes it, and
only then appends the scp line to its part record, so a killed job leaves at worst an unreferenced tail in
the ark (harmless) and a torn last line in its record (dropped). A rerun skips every key any record holds,
whichever run or job wrote it. Whoever finds a signal complete writes its ``tokens.scp`` atomically (the
last job to finish; a rerun after all are done writes it too): there is never a half-written
``tokens.scp``. A second process on the same shard is refused (``tsekit.lock``, ``.OUT.jobJ.lock``). A
rerun with another codec, bandwidth or weights into the same OUT is refused (``codec.yaml`` differs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.table import read_list_table, read_table, sorted_keys, write_table_if_changed, write_text_if_changed
from tsekit.jobs import job_and_speed
from tsekit.lock import writer_lock

# signal -> the data-dir table it is read from
SIGNALS = {"mixture": "wav.scp", "target": "spk1.scp", "enroll": "enroll.scp", "enroll_pos": "enroll_pos.scp",
           "enroll_neg": "enroll_neg.scp"}
# what codec.yaml records (and weights_sha256, absent from older ones); a rerun into the same OUT must agree on all
CODEC_FIELDS = ("codec", "bandwidth", "sample_rate", "frame_rate", "num_codebooks", "codebook_size")


@dataclass
class TokenizeSummary:
    """What one call did; ``str()`` is the line the CLI prints."""

    out: Path
    codec: str
    total: int  # matrices of the data dir, all signals
    mine: int  # matrices of this job
    encoded: int  # encoded now
    skipped: int  # already there
    audio_seconds: float  # of the signals encoded now
    seconds: float  # wall time of the encoding
    complete: list[str]  # signals whose tokens.scp is written
    signals: list[str]  # signals of this data dir
    job: int | None = None
    nj: int | None = None

    def __str__(self) -> str:
        who, speed = job_and_speed(self.job, self.nj, self.encoded, self.seconds, self.audio_seconds)
        line = (f"{who}{self.encoded} of {self.mine} signals encoded with {self.codec}{speed}, "
                f"{self.skipped} already done")
        if self.complete == self.signals:
            return f"{line}; all {self.total} done: {', '.join(str(self.out / s / 'tokens.scp') for s in self.signals)}"
        return f"{line}; the tokens.scp files are written once every job is done"


def enrollment_tokens(row: str, enroll_row: str = "") -> tuple[str, str]:
    """(signal, key) of the tokens of row ``row``'s enrollment: its fixed ``enroll.scp`` entry when
    ``enroll_row`` is empty, else the target (``spk1.scp``) of row ``enroll_row`` (sampled from spk2enroll,
    or the row itself when it is enrolled by its own target)."""
    return ("target", enroll_row) if enroll_row else ("enroll", row)


def read_signals(data_dir: Path) -> dict[str, dict[str, str]]:
    """signal -> key -> audio entry of every signal the data dir has, checked to cover every row."""
    if not data_dir.is_dir():
        raise TsekitError(f"{data_dir}: data directory not found")
    mixtures = read_table(data_dir / "wav.scp")
    if not mixtures:
        raise TsekitError(f"{data_dir / 'wav.scp'}: no utterances")
    signals = {"mixture": mixtures}
    for signal in list(SIGNALS)[1:]:
        path = data_dir / SIGNALS[signal]
        if signal != "target" and not path.is_file():
            continue  # no fixed enrollments (yet): a training set may enroll from spk2enroll only; no pos/neg clips
        table = read_table(path)
        missing = [utt for utt in mixtures if utt not in table]
        if missing:
            raise TsekitError(f"{path}: no line for {len(missing)} rows of wav.scp (e.g. {sorted_keys(missing)[0]})")
        signals[signal] = {utt: table[utt] for utt in mixtures}  # rows only: extra lines have no row to serve
    if (data_dir / "spk2enroll").is_file():
        for spk, rows in read_list_table(data_dir / "spk2enroll").items():
            strangers = [row for row in rows if row not in signals["target"]]
            if strangers:
                raise TsekitError(f"{data_dir / 'spk2enroll'}: speaker {spk} lists row {strangers[0]} that "
                                  "spk1.scp lacks (rerun tsekit enroll on this data dir)")
    return signals


def codec_info(codec, spec: str) -> dict:
    """What codec.yaml records of a loaded codec."""
    bandwidth = getattr(codec, "bandwidth", None)
    return {"codec": spec, "bandwidth": None if bandwidth is None else float(bandwidth),
            "sample_rate": int(codec.sample_rate), "frame_rate": float(codec.frame_rate),
            "num_codebooks": int(codec.num_codebooks), "codebook_size": int(codec.codebook_size),
            "weights_sha256": codec.weights_sha256}


def read_codec_info(out_dir: str | os.PathLike) -> dict:
    """OUT/codec.yaml of a tokenized data dir."""
    import yaml

    path = Path(out_dir) / "codec.yaml"
    if not path.is_file():
        raise TsekitError(f"{path}: file not found (run tsekit tokenize into {Path(out_dir)} first)")
    info = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(info, dict) or any(field not in info for field in CODEC_FIELDS):
        raise TsekitError(f"{path}: expected the fields {', '.join(CODEC_FIELDS)}")
    return info


def _write_codec_info(out: Path, info: dict) -> None:
    import yaml

    path = out / "codec.yaml"
    if path.is_file():
        old = read_codec_info(out)
        if any(old[k] != info[k] for k in CODEC_FIELDS):
            raise TsekitError(f"{path}: {out} holds tokens of {old['codec']} (bandwidth {old['bandwidth']}, "
                              f"{old['num_codebooks']} codebooks), not of {info['codec']} (bandwidth "
                              f"{info['bandwidth']}, {info['num_codebooks']} codebooks); tokenize into another "
                              "OUT or remove it")
        check_token_codec(out, old, info["codec"], info["weights_sha256"])
        if "weights_sha256" not in old:
            return  # tokens of unknown weights: this run cannot vouch for those already there
    write_text_if_changed(path, yaml.safe_dump(info, sort_keys=False))


def check_token_codec(tokens_dir: Path, info: Mapping, spec: str | None, sha256: str | None) -> None:
    """A one-line error naming ``tokens_dir``'s codec.yaml (``info``) and the codec ``spec`` unless the tokens were
    made with weights of hash ``sha256`` (``registry.same_weights``: an unknown hash on either side passes)."""
    from tsekit.codec.registry import same_weights, short_hash

    recorded = info.get("weights_sha256")
    if not same_weights(recorded, sha256):
        raise TsekitError(f"{Path(tokens_dir) / 'codec.yaml'}: tokens of {info['codec']} with weights sha256 "
                          f"{short_hash(recorded)}, but codec {spec} holds weights sha256 {short_hash(sha256)} "
                          f"(retrained or replaced since): remove {tokens_dir} and tokenize again (recipe stage 3)")


def _load_codec(spec: str, params: Mapping):
    from tsekit.codec.registry import Codec, load_codec

    if Path(spec).is_dir():
        spec = str(Path(spec).resolve())  # codec.yaml must name it from any directory
    codec = load_codec(spec, **dict(params))
    if not isinstance(codec, Codec):
        raise TsekitError(f"--codec {spec}: {type(codec).__name__} is a vocoder, not a codec: it has no tokens")
    return codec, spec


def _part_name(job: int | None) -> str:
    return "all" if job is None else str(job)


def _ark_path(out: Path, signal: str, job: int | None) -> Path:
    return out / signal / ("tokens.ark" if job is None else f"tokens.{job}.ark")


def _read_part(path: Path) -> dict[str, str]:
    """key -> ark entry of one part record; a torn last line (a job killed while writing it) is dropped."""
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return dict(line.split(maxsplit=1) for line in text.splitlines() if line.strip())


def _done(out: Path, signal: str) -> dict[str, str]:
    """Every key of ``signal`` that any run or job has written (first part in sorted order wins a tie)."""
    done: dict[str, str] = {}
    for part in sorted((out / signal / "parts").glob("*.scp"), reverse=True):
        done.update(_read_part(part))
    return done


def _drop_torn_line(path: Path) -> None:
    """Cut a torn last line off a part record before appending to it."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_tokens(entry: str | os.PathLike, info: Mapping | object, what: str = "") -> np.ndarray:
    """One token matrix (codebooks x frames, int32) from a ``tokens.scp`` value ``<ark>:<offset>`` or a ``.npy``
    file, checked against ``info`` (``read_codec_info``'s dict, or a Codec): its codebook count and index range.

    ``what`` names the source in errors (e.g. ``"dump/enc/test/enroll/tokens.scp: utt1"``); every error is
    one TsekitError line naming the file.
    """
    import kaldiio

    where = f"{what}: " if what else ""
    entry = str(entry).strip()
    path, _, offset = entry.rpartition(":")
    try:
        if path and offset.isdigit():
            if not Path(path).is_file():
                raise TsekitError(f"{where}{path}: file not found")
            with open(path, "rb") as f:
                f.seek(int(offset))
                flag = f.read(3)
            # only NPY blobs: kaldiio would unpickle a PKL one, and a float matrix is not tokens
            if flag != b"NPY":
                raise TsekitError(f"{where}{entry}: not a token matrix written by tsekit tokenize")
            tokens = kaldiio.load_mat(entry)
        else:
            if not Path(entry).is_file():
                raise TsekitError(f"{where}{entry}: file not found")
            tokens = np.load(entry, allow_pickle=False)
    except TsekitError:
        raise
    except Exception as err:  # a truncated ark, a corrupt blob: name the file on one line
        raise TsekitError(f"{where}{entry}: cannot read tokens ({str(err).splitlines()[0] if str(err) else err!r})"
                          ) from None
    get = info.get if isinstance(info, Mapping) else lambda name: getattr(info, name)
    num_codebooks, codebook_size = int(get("num_codebooks")), int(get("codebook_size"))
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu" or tokens.ndim != 2:
        raise TsekitError(f"{where}{entry}: expected integer tokens (codebooks x frames), got {tokens.dtype} "
                          f"of shape {tokens.shape}")
    if tokens.shape[0] != num_codebooks:
        raise TsekitError(f"{where}{entry}: {tokens.shape[0]} codebooks, but the codec uses {num_codebooks}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= codebook_size):
        raise TsekitError(f"{where}{entry}: token indices in [{tokens.min()}, {tokens.max()}], outside "
                          f"[0, {codebook_size})")
    return tokens.astype(np.int32, copy=False)


def tokenize_data_dir(codec: str | os.PathLike, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                      params: Mapping | None = None, nj: int | None = None, job: int | None = None,
                      device: str = "cpu") -> TokenizeSummary:
    """Encode every signal of ``data_dir`` (this job's shard of its rows) with ``codec`` into ``out_dir``.

    ``codec``: a registered codec name (``params`` go to its constructor, e.g. bandwidth and weights; none
    keeps its defaults) or the experiment dir of a codec the toolkit trained. ``nj``/``job``: as ``tsekit infer``.
    """
    import kaldiio
    import torch
    from tqdm import tqdm

    from tsekit.codec.registry import resample
    from tsekit.data.audio import check_audio, load_audio
    from tsekit.jobs import check_job, set_threads, shard, torch_device

    data_dir, out = Path(data_dir), Path(out_dir)
    check_job(job, nj)
    signals = read_signals(data_dir)
    device = torch_device(device)
    model, spec = _load_codec(str(codec), params or {})
    model = model.to(device)
    info = codec_info(model, spec)
    rows = sorted_keys(signals["mixture"])
    mine = shard(rows, job, nj) if job is not None else rows
    items = [(signal, row, table[row]) for signal, table in signals.items() for row in mine]
    total = sum(len(table) for table in signals.values())
    part = _part_name(job)
    with writer_lock(out, f"job{job}" if job is not None else ""):
        done = {signal: _done(out, signal) for signal in signals}
        todo = [item for item in items if item[1] not in done[item[0]]]
        # every file to encode, from its header, before the first token is written (any rate: resampled)
        check_audio({data_dir / SIGNALS[signal]: {key: entry for s, key, entry in todo if s == signal}
                     for signal in signals})
        _write_codec_info(out, info)  # after the checks: a failed run leaves OUT as it was
        previous_threads = set_threads(nj, job)
        started = time.perf_counter()
        audio_seconds = 0.0
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"tokenizing into {out}", unit="signal",
                   disable=None)
        files = {}
        try:
            for signal, key, entry in todo:
                if signal not in files:
                    record = out / signal / "parts" / f"{part}.scp"
                    record.parent.mkdir(parents=True, exist_ok=True)
                    _drop_torn_line(record)
                    files[signal] = (open(_ark_path(out, signal, job), "ab"), open(record, "a", encoding="utf-8"))
                ark, record = files[signal]
                what = f"{data_dir / SIGNALS[signal]}: {key}"
                samples, rate = load_audio(entry, what)  # mono: checked above
                with torch.inference_mode():
                    wav = resample(torch.from_numpy(samples)[None], rate, model.sample_rate).to(device)
                    tokens = model.encode(wav)[0].cpu().numpy().astype(np.int32)
                offset = ark.tell() + len(key.encode()) + 1  # the blob starts after "key "
                kaldiio.save_ark(ark, {key: tokens}, write_function="numpy", write_kwargs={"allow_pickle": False})
                ark.flush()  # the matrix is in the file before the record points at it
                record.write(f"{key} {_ark_path(out, signal, job).resolve()}:{offset}\n")
                record.flush()
                audio_seconds += len(samples) / rate
                bar.update(1)
        finally:
            bar.close()
            for ark, record in files.values():
                ark.close()
                record.close()
            torch.set_num_threads(previous_threads)  # a library call leaves the process as it found it
        seconds = time.perf_counter() - started
        complete = []
        for signal, table in signals.items():
            written = _done(out, signal)
            if all(key in written for key in table):
                write_table_if_changed(out / signal / "tokens.scp", {key: written[key] for key in table})
                complete.append(signal)
    return TokenizeSummary(out=out, codec=spec, total=total, mine=len(items), encoded=len(todo),
                           skipped=len(items) - len(todo), audio_seconds=audio_seconds, seconds=seconds,
                           complete=complete, signals=list(signals), job=job, nj=nj)
