"""Codec tokens on disk: what ``tsekit tokenize`` (``tsekit.codec.tokenize``) writes and the dataset reads.

Layout of a tokens dir OUT::

    codec.yaml                     codec spec, bandwidth, sample_rate, frame_rate, num_codebooks, codebook_size,
                                   weights_sha256 (the hash of the codec's weights, ``tsekit.checkpoint.hash_weights``)
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

Resume records: a run or job appends each matrix to its ark, flushes it, and only then appends the scp line
to its part record (``TokenWriter``), so a kill leaves at worst an unreferenced tail in the ark (harmless)
and a torn last line in its record (dropped). Every key any record holds is done (``written_tokens``),
whichever run or job wrote it. Whoever finds a signal complete writes its ``tokens.scp`` atomically
(``write_complete_scps``): there is never a half-written ``tokens.scp``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.table import read_list_table, read_table, sorted_keys, write_table_if_changed, write_text_if_changed
from tsekit.jobs import drop_torn_line

# signal -> the data-dir table it is read from
SIGNALS = {"mixture": "wav.scp", "target": "spk1.scp", "enroll": "enroll.scp", "enroll_pos": "enroll_pos.scp",
           "enroll_neg": "enroll_neg.scp"}
# what codec.yaml records (and weights_sha256, absent from older ones); a rerun into the same OUT must agree on all
CODEC_FIELDS = ("codec", "bandwidth", "sample_rate", "frame_rate", "num_codebooks", "codebook_size")


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


def write_codec_info(out: Path, info: dict) -> None:
    """Write OUT/codec.yaml (``info``: what ``tsekit.codec.tokenize.codec_info`` records of the codec), unless OUT
    already holds tokens of another codec or weights: then a one-line error."""
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
    made with weights of hash ``sha256`` (``same_weights``: an unknown hash on either side passes)."""
    recorded = info.get("weights_sha256")
    if not same_weights(recorded, sha256):
        raise TsekitError(f"{Path(tokens_dir) / 'codec.yaml'}: tokens of {info['codec']} with weights sha256 "
                          f"{short_hash(recorded)}, but codec {spec} holds weights sha256 {short_hash(sha256)} "
                          f"(retrained or replaced since): remove {tokens_dir} and tokenize again (recipe stage 3)")


def same_weights(recorded: str | None, loaded: str | None) -> bool:
    """False only when both hashes are known and differ: a record without one (written before hashes were
    recorded, or of a randomly initialised codec) is accepted silently, as it was before; there is nothing a
    user could do about a warning but tokenize or train again."""
    return recorded is None or loaded is None or recorded == loaded


def short_hash(sha256: str) -> str:
    """The first 16 hex digits, which tell weights apart in a one-line error."""
    return sha256[:16]


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


def written_tokens(out: Path, signal: str) -> dict[str, str]:
    """key -> ark entry of every key of ``signal`` that any run or job has written (the first part in sorted order
    wins a tie)."""
    done: dict[str, str] = {}
    for part in sorted((out / signal / "parts").glob("*.scp"), reverse=True):
        done.update(_read_part(part))
    return done


class TokenWriter:
    """Appends the matrices of one run (``job`` None) or job to its arks and part records, the ark first."""

    def __init__(self, out: Path, job: int | None):
        self.out, self.job = out, job
        self.files: dict[str, tuple] = {}  # signal -> (ark, record), opened at its first matrix

    def write(self, signal: str, key: str, tokens: np.ndarray) -> None:
        import kaldiio

        ark_path = _ark_path(self.out, signal, self.job)
        if signal not in self.files:
            record = self.out / signal / "parts" / f"{_part_name(self.job)}.scp"
            record.parent.mkdir(parents=True, exist_ok=True)
            drop_torn_line(record)
            self.files[signal] = (open(ark_path, "ab"), open(record, "a", encoding="utf-8"))
        ark, record = self.files[signal]
        offset = ark.tell() + len(key.encode()) + 1  # the blob starts after "key "
        kaldiio.save_ark(ark, {key: tokens}, write_function="numpy", write_kwargs={"allow_pickle": False})
        ark.flush()  # the matrix is in the file before the record points at it
        record.write(f"{key} {ark_path.resolve()}:{offset}\n")
        record.flush()

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, *exc) -> None:
        for ark, record in self.files.values():
            ark.close()
            record.close()


def write_complete_scps(out: Path, signals: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Write ``<signal>/tokens.scp`` of every signal (signal -> key -> audio entry) whose keys all have tokens,
    from any run or job; returns those signals."""
    complete = []
    for signal, table in signals.items():
        written = written_tokens(out, signal)
        if all(key in written for key in table):
            write_table_if_changed(out / signal / "tokens.scp", {key: written[key] for key in table})
            complete.append(signal)
    return complete


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
