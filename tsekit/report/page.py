"""The report folder: index.html (inline CSS, no scripts, no external URL), audio/ and img/.

Everything the page refers to lies under the folder by a relative path, so the
folder can be zipped and published as it is, and opened without a network.
"""

from __future__ import annotations

import datetime
import html
import math
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np

from tsekit import TsekitError, __version__
from tsekit.data.audio import audio_info, entry_path, is_ark, is_pipe, load_audio, write_audio
from tsekit.data.datadir import atomic_dir
from tsekit.data.enroll import ENROLLMENT_FILES
from tsekit.data.table import read_table, sorted_keys
from tsekit.lock import writer_lock
from tsekit.metrics.results import ACCEPTANCE_THRESHOLD, LOWER_IS_BETTER, ZERO_IS_BEST, display_scale
from tsekit.metrics.scorer import IMPROVEMENTS, NO_BASELINE
from tsekit.report import figures
from tsekit.report.experiments import (
    Cell,
    Summary,
    System,
    load_system,
    ranking_metric,
    select_utterances,
    summarize,
)

ENROLLMENT_LABELS = {"enroll": "enrollment", "enroll_pos": "positive enrollment",
                     "enroll_neg": "negative enrollment"}
# shown under each player, the first few a system has
ROW_METRICS = ("si_sdri", "si_sdr", "si_sdr_active", "interferer_suppression", "target_kept", "absent_energy",
               "pesq", "stoi", "spk_sim", "wer")
ROW_METRICS_SHOWN = 3
# wav encodings browsers play as they are (and FLAC); anything else (ark, pipe, other formats) becomes 16-bit wav
PLAYABLE_WAV = {"PCM_16", "PCM_24", "PCM_U8", "FLOAT"}
# a longer row (a conversation of minutes) is shown as an excerpt this long, where its target speaks most
# (excerpt_window): a page of a dozen ten-minute recordings times every system would weigh gigabytes, and its
# spectrograms, 320 pixels wide, would show nothing
EXCERPT_SECONDS = 30.0
EXCERPT_STEP_SECONDS = 0.5  # where an excerpt may start

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 150em; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; } h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; } .wide { overflow-x: auto; }
table.summary td, table.summary th { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right;
  white-space: nowrap; font-size: 0.9em; }
table.summary td:first-child, table.summary th:first-child { text-align: left; }
table.summary tr.mixture { color: #666; font-style: italic; }
td.best { background: #e3f4e1; font-weight: bold; }
small.gain { color: #555; } .note { color: #555; font-size: 0.9em; }
.plots img { margin: 0.3em; border: 1px solid #eee; vertical-align: top; }
.utt { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em; margin: 1em 0; }
.utt .transcript { font-style: italic; margin: 0.3em 0 0.6em; }
.signals { display: flex; flex-wrap: wrap; gap: 0.8em; }
.signal { width: 320px; } .signal .label { font-weight: bold; font-size: 0.9em; }
.signal audio { width: 320px; height: 32px; } .signal img { width: 320px; height: 120px; display: block; }
.signal .values { font-size: 0.8em; color: #444; min-height: 1.2em; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.85em; white-space: pre-wrap; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _url(path: str) -> str:
    return _e(quote(path))


def _number(value: float, metric: str) -> str:
    return "–" if value is None or math.isnan(value) else f"{display_scale(metric) * value:.2f}"


def excerpt_window(reference: np.ndarray | None, length: int, rate: int,
                   seconds: float = EXCERPT_SECONDS) -> tuple[int, int] | None:
    """(start, stop) in samples of the part of a row of ``length`` samples the page plays, or None for all of it.

    A row up to ``seconds`` long is shown whole. A longer one: the ``seconds`` in which ``reference`` (the
    target's own track, spk1.scp; for a conversation row, silent where she does not speak) has the most energy,
    starting on a multiple of ``EXCERPT_STEP_SECONDS`` (the earliest of equals), so the excerpt holds as much of
    her speech as any; without a reference (an absent-target row) the first ``seconds``.
    """
    size = int(round(seconds * rate))
    if length <= size:
        return None
    if reference is None:
        return 0, size
    energy = np.concatenate([[0.0], np.cumsum(np.square(reference[:length], dtype=np.float64))])
    energy = np.pad(energy, (0, length + 1 - len(energy)), mode="edge")  # a reference shorter than the row
    starts = np.arange(0, length - size + 1, max(1, int(round(EXCERPT_STEP_SECONDS * rate))))
    start = int(starts[np.argmax(energy[starts + size] - energy[starts])])
    return start, start + size


def _publish_audio(entry: str, what: str, dest: Path, link: bool,
                   window: tuple[int, int] | None = None) -> tuple[np.ndarray, int, Path]:
    """Read one scp entry and put a playable copy (or a link to it) at ``dest`` (suffix chosen here); with
    ``window`` (start, stop), only those samples, written anew."""
    import soundfile as sf

    if window is not None:
        start, stop = window
        samples, rate = load_audio(entry, what, start=start, frames=stop - start)
        dest = dest.with_suffix(".wav")
        write_audio(dest, samples, rate)
        return samples, rate, dest
    samples, rate = load_audio(entry, what)
    source = None if is_pipe(entry) or is_ark(entry.strip()) else entry_path(entry.strip())
    if source is not None:
        info = sf.info(source)
        if info.format == "FLAC" or (info.format == "WAV" and info.subtype in PLAYABLE_WAV):
            dest = dest.with_suffix(source.suffix.lower())
            if link:
                dest.symlink_to(source.resolve())
            else:
                shutil.copyfile(source, dest)
            return samples, rate, dest
    dest = dest.with_suffix(".wav")
    write_audio(dest, samples, rate)
    return samples, rate, dest


def _row_window(data: dict[str, dict[str, str]], data_dir: Path, utt: str) -> tuple[tuple[int, int] | None, str]:
    """(``excerpt_window`` of a row's signals, the page's note on it)."""
    rate, length = audio_info(data["wav.scp"][utt], f"{data_dir / 'wav.scp'}: {utt}")
    reference = None
    if length > EXCERPT_SECONDS * rate and utt in data.get("spk1.scp", {}):  # read only when it is needed
        reference, _ = load_audio(data["spk1.scp"][utt], f"{data_dir / 'spk1.scp'}: {utt}")
    window = excerpt_window(reference, length, rate)
    if window is None:
        return None, ""
    start, stop = window
    where = "where the reference is loudest" if reference is not None else "its start: no reference"
    return window, f"excerpt {start / rate:.1f}-{stop / rate:.1f} s of {length / rate:.1f} s ({where})"


def _direction(metric: str) -> str:
    return "↓" if metric in LOWER_IS_BETTER else "→0" if metric in ZERO_IS_BEST else "↑"


def _summary_html(summary: Summary, systems: list[System], n: int) -> str:
    head = "".join(f"<th>{_e(m)}{' (%)' if display_scale(m) != 1 else ''} {_direction(m)}</th>"
                   for m in summary.metrics)
    accept = bool(summary.acceptance)
    if accept:
        head += f"<th>acceptance (SI-SDRi &gt; {summary.threshold:g} dB) ↑</th>"
    rows = [f"<tr><th>system</th>{head}</tr>"]

    def cell(metric: str, item: Cell | None) -> str:
        if item is None:
            return "<td>–</td>"
        text = f"{_number(item.mean, metric)} ± {_number(item.std, metric)}"
        if item.improvement is not None:
            text += f"<br><small class='gain'>{display_scale(metric) * item.improvement:+.2f}</small>"
        return f"<td class='best'>★ {text}</td>" if item.best else f"<td>{text}</td>"

    def mixture_cell(metric: str) -> str:
        if metric in NO_BASELINE:  # not applicable: the mixture has no transcript of its own, no artifacts (SAR)
            return "<td>n/a</td>"
        if metric in IMPROVEMENTS or metric not in summary.mixture:
            return "<td>–</td>"
        return cell(metric, Cell(summary.mixture[metric].mean, summary.mixture[metric].std))

    mixture = "".join(mixture_cell(m) for m in summary.metrics)
    rows.append(f"<tr class='mixture'><td>mixture (input)</td>{mixture}{'<td>–</td>' if accept else ''}</tr>")
    rates = {name: 100.0 * a / t for name, (a, t) in summary.acceptance.items()}
    for system in systems:
        cells = "".join(cell(m, summary.systems[system.name].get(m)) for m in summary.metrics)
        if accept:
            if system.name in summary.acceptance:
                accepted, total = summary.acceptance[system.name]
                best = " class='best'" if rates[system.name] == max(rates.values()) else ""
                star = "★ " if best else ""
                cells += f"<td{best}>{star}{rates[system.name]:.1f}% ({accepted}/{total})</td>"
            else:
                cells += "<td>–</td>"
        rows.append(f"<tr><td>{_e(system.name)}</td>{cells}</tr>")
    return (f"<div class='wide'><table class='summary'>{''.join(rows)}</table></div>"
            f"<p class='note'>Mean ± std over the {n} utterances of the data dir, as each system's RESULTS.md "
            "computes them (leaving out the rows without a value: a conversation row without solo turns of the "
            "kind); under each value its difference from the mixture's (from the system's own mixture.tsv; "
            "SI-SDRi and SNRi are such differences already). ★ marks the best system per column (↑ higher is "
            "better, ↓ lower, →0 closest to 0 dB).</p>")


def _plots(img: Path, summary: Summary, systems: list[System], utts: list[str]) -> list[tuple[str, str]]:
    """Draw the plots into img/; (relative path, caption) of each."""
    drawn = []
    for metric in summary.metrics:
        values = {s.name: [s.scores[u][metric] for u in utts] for s in systems if metric in s.metrics}
        with_mixture = [s for s in systems if s.mixture and metric in s.mixture[utts[0]]]
        baseline = [with_mixture[0].mixture[u][metric] for u in utts] if with_mixture else None
        figures.box_plot(img / f"{metric}.png", metric, values, baseline)
        drawn.append((f"img/plots/{metric}.png", f"distribution of {metric}"))
    points = {}
    for system in (s for s in systems if "si_sdri" in s.metrics):
        gains = [system.scores[u]["si_sdri"] for u in utts]
        if system.mixture and "si_sdr" in system.mixture[utts[0]]:
            inputs = [system.mixture[u]["si_sdr"] for u in utts]
        else:  # SI-SDRi = SI-SDR of the estimate - SI-SDR of the mixture
            inputs = [system.scores[u]["si_sdr"] - system.scores[u]["si_sdri"] for u in utts]
        points[system.name] = (inputs, gains)
    if points:
        figures.improvement_scatter(img / "si_sdri_scatter.png", points, summary.threshold)
        drawn.append(("img/plots/si_sdri_scatter.png", "SI-SDRi against the input SI-SDR"))
        figures.acceptance_bars(img / "acceptance.png", summary.acceptance, summary.threshold)
        drawn.append(("img/plots/acceptance.png", "acceptance rate"))
    return drawn


def _values_html(scores: dict[str, float]) -> str:
    shown = [m for m in ROW_METRICS if m in scores][:ROW_METRICS_SHOWN]
    return ", ".join(f"{_e(m)} {_number(scores[m], m)}" for m in shown)


def _signal_html(label: str, audio: str, image: str, values: str = "") -> str:
    return (f"<div class='signal'><div class='label'>{_e(label)}</div>"
            f"<audio controls preload='metadata' src='{_url(audio)}'></audio>"
            f"<img src='{_url(image)}' alt='spectrogram of {_e(label)}' width='320' height='120'>"
            f"<div class='values'>{values}</div></div>")


def _utterance_html(out: Path, utt: str, data: dict[str, dict[str, str]], data_dir: Path, enrollments: list[str],
                    systems: list[System], link: bool) -> str:
    """Publish one utterance's audio and spectrograms under out/; its block of the page."""
    signals = [("mixture", "mixture", data["wav.scp"][utt], data_dir / "wav.scp")]
    signals += [(key, ENROLLMENT_LABELS[key], data[key][utt], data_dir / ENROLLMENT_FILES[key]) for key in enrollments]
    signals += [(f"system-{s.name}", s.name, s.estimates[utt], s.decode_dir / "wav.scp") for s in systems]
    if "spk1.scp" in data:
        signals += [("reference", "reference (ground truth)", data["spk1.scp"][utt], data_dir / "spk1.scp")]
    (out / "audio" / utt).mkdir(parents=True)
    (out / "img" / utt).mkdir(parents=True)
    window, excerpt = _row_window(data, data_dir, utt)
    loaded, audio_paths = [], []
    for name, _, entry, scp in signals:
        what = f"{scp}: {utt}"
        part = window
        if name in ENROLLMENT_FILES:  # not of the row's length: a long one plays its first seconds
            enroll_rate, enroll_length = audio_info(entry, what)
            part = excerpt_window(None, enroll_length, enroll_rate)
        samples, rate, path = _publish_audio(entry, what, out / "audio" / utt / name, link, part)
        loaded.append((samples, rate))
        audio_paths.append(path.relative_to(out).as_posix())
    image_paths = [f"img/{utt}/{name}.png" for name, *_ in signals]
    figures.write_spectrogram_row(loaded, [out / p for p in image_paths])
    mixture_scores = next((s.mixture[utt] for s in systems if s.mixture), {})
    values = {"mixture": _values_html(mixture_scores)}
    values.update({f"system-{s.name}": _values_html(s.scores[utt]) for s in systems})
    cells = "".join(_signal_html(label, audio, image, values.get(name, ""))
                    for (name, label, *_), audio, image in zip(signals, audio_paths, image_paths, strict=True))
    speaker = f"speaker {_e(data['utt2spk'][utt])}" if utt in data.get("utt2spk", {}) else ""
    transcript = data.get("text", {}).get(utt)
    text = f"<div class='transcript'>“{_e(transcript)}”</div>" if transcript else ""
    note = "; ".join(x for x in (speaker, _e(excerpt)) if x)
    return f"<div class='utt' id='{_e(utt)}'><h3>{_e(utt)}</h3><div class='note'>{note}</div>{text}" \
           f"<div class='signals'>{cells}</div></div>"


STEP_NAMES = {"teacher": "training of the distillation teacher", "train": "training", "infer": "inference",
              "score": "scoring"}


def _commands_html(system: System) -> str:
    parts = [f"<h3>{_e(system.name)}</h3><p class='note'>experiment dir <code>{_e(system.exp_dir)}</code>; "
             f"output <code>{_e(system.decode_dir / 'wav.scp')}</code>; enrollment: "
             f"{_e(', '.join(ENROLLMENT_FILES[k] for k in system.enrollments) or 'none')}</p>"]
    for step, commands in system.commands.items():
        what = STEP_NAMES[step]
        if commands:
            listed = "\n".join(c.command for c in commands)
            parts.append(f"<p>{what} (from the first line of {_e(', '.join(c.log.name for c in commands))}):</p>"
                         f"<pre>{_e(listed)}</pre>")
        else:
            parts.append(f"<p>{what}: <span class='note'>no log with a command header found</span></p>")
    for stage, text in system.configs.items():
        parts.append(f"<details><summary>{_e(stage)}/config.yaml (resolved)</summary><pre>{_e(text)}</pre></details>")
    return "".join(parts)


def build_report(data_dir: str | os.PathLike, exp_dirs: list[str | os.PathLike], out: str | os.PathLike,
                 n: int = 12, select: str = "best", seed: int = 0, utt_list: str | os.PathLike | None = None,
                 link: bool = False, threshold: float = ACCEPTANCE_THRESHOLD, progress: bool = True) -> Path:
    """Write the report of EXP_DIRS' results on DATA_DIR into OUT (replaced whole, atomically); return index.html.

    Holds OUT's writer lock (``tsekit.lock``) while it writes: a second report into the same OUT is refused.

    Each experiment must have been scored on the data dir:
    EXP/decode_<name of DATA_DIR>/scores/scores.tsv (recipe stage 7).
    """
    from tqdm import tqdm

    figures.require_matplotlib()
    data_dir = Path(data_dir)
    if not exp_dirs:
        raise TsekitError("give at least one experiment (--exp)")
    if n < 1:
        raise TsekitError(f"--n {n}: show at least one utterance")
    if not data_dir.is_dir():
        raise TsekitError(f"{data_dir}: data directory not found")
    data = {"wav.scp": read_table(data_dir / "wav.scp")}
    # spk1.scp is optional: an absent-target set has no target to show
    for name in ("spk1.scp", "text", "utt2spk"):
        if (data_dir / name).is_file():
            data[name] = read_table(data_dir / name)
    utts = sorted_keys(data["wav.scp"])
    if not utts:
        raise TsekitError(f"{data_dir / 'wav.scp'}: no utterances")
    systems = [load_system(e, data_dir, utts) for e in exp_dirs]
    names = [s.name for s in systems]
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise TsekitError(f"two --exp folders are both named {twice[0]!r}; the report tells systems apart by name")
    used = [k for k in ENROLLMENT_FILES if any(k in s.enrollments for s in systems)]
    # a data dir prepared again without some enrollment (tsekit enroll without --posneg) still shows its systems
    enrollments = [k for k in used if (data_dir / ENROLLMENT_FILES[k]).is_file()]
    absent = [data_dir / ENROLLMENT_FILES[k] for k in used if k not in enrollments]
    for key in enrollments:
        data[key] = read_table(data_dir / ENROLLMENT_FILES[key])
        missing = [u for u in utts if u not in data[key]]
        if missing:
            raise TsekitError(f"{data_dir / ENROLLMENT_FILES[key]}: no enrollment for {missing[0]}")
    chosen = select_utterances(systems, utts, select, n, seed, utt_list)
    summary = summarize(systems, utts, threshold)
    with writer_lock(out), atomic_dir(out) as tmp:
        (tmp / "img" / "plots").mkdir(parents=True)
        plots = _plots(tmp / "img" / "plots", summary, systems, utts)
        blocks = [_utterance_html(tmp, utt, data, data_dir, enrollments, systems, link)
                  for utt in tqdm(chosen, desc="report", unit="utt", disable=not progress)]
        how = {"best": f"the {len(chosen)} best", "worst": f"the {len(chosen)} worst",
               "random": f"{len(chosen)} random (seed {seed})", "list": f"the {len(chosen)} listed"}[select]
        if select in ("best", "worst"):
            how += f" by {ranking_metric(systems)} (mean over the systems)"
        page = _page(data_dir, systems, summary, len(utts), plots, blocks, how, enrollments, absent)
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return Path(out) / "index.html"


def _page(data_dir: Path, systems: list[System], summary: Summary, n: int, plots: list[tuple[str, str]],
          blocks: list[str], how: str, enrollments: list[str], absent: list[Path]) -> str:
    title = f"tsekit report: {data_dir}"
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    uses = "; ".join(f"{s.name}: {', '.join(ENROLLMENT_FILES[k] for k in s.enrollments) or 'no enrollment'}"
                     for s in systems)
    if absent:
        uses += f"; not shown, not in the data dir: {', '.join(map(str, absent))}"
    images = "".join(f"<img src='{_url(path)}' alt='{_e(caption)}' title='{_e(caption)}'>" for path, caption in plots)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body><h1>{_e(title)}</h1>
<p class="note">{n} utterances, {len(systems)} systems ({_e(', '.join(s.name for s in systems))}); made by tsekit
{_e(__version__)} on {made}.</p>
<h2>Summary</h2>{_summary_html(summary, systems, n)}
<h2>Plots</h2><div class="plots">{images}</div>
<h2>Examples</h2><p class="note">{_e(how)}. Enrollments shown:
{_e(', '.join(ENROLLMENT_LABELS[k] for k in enrollments))} ({_e(uses)}).
Spectrograms share one colour scale per utterance
({figures.DYNAMIC_RANGE_DB:g} dB below its loudest bin).</p>
{''.join(blocks)}
<h2>How each system was made</h2>{''.join(_commands_html(s) for s in systems)}
</body></html>
"""
