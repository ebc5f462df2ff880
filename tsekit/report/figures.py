"""PNG figures of the report: spectrograms (one colour scale per utterance) and the metric plots.

matplotlib is imported inside the functions (``tsekit --help`` stays fast) and
used through ``Figure`` + its Agg canvas, never pyplot: no global backend or
figure state, so reports can be drawn from any process.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SPECTROGRAM_SIZE = (320, 120)  # pixels (width, height): 4 x 1.5 inch at 80 dpi
DYNAMIC_RANGE_DB = 80.0  # the colour scale spans this much below the loudest bin of the row
PLOT_DPI = 80
COLORMAP = "magma"


def require_matplotlib() -> None:
    """Fail in one line, before any work, when the drawing library is missing."""
    import importlib.util

    from tsekit import TsekitError

    if importlib.util.find_spec("matplotlib") is None:
        raise TsekitError("tsekit report draws with matplotlib, which is not installed "
                          "(pip install -c tools/constraints.txt 'tsekit[report]')")


def _pool(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Average ``values`` along ``axis`` into ``size`` groups (fewer when there are fewer entries)."""
    length = values.shape[axis]
    if length <= size:
        return values
    edges = np.linspace(0, length, size + 1).astype(int)[:-1]
    return np.add.reduceat(values, edges, axis=axis) / np.diff(np.append(edges, length)).reshape(
        (-1, 1) if axis == 0 else (1, -1))


def power_spectrogram(samples: np.ndarray, rate: int) -> np.ndarray:
    """Power STFT (32 ms Hann window, 8 ms hop) pooled to SPECTROGRAM_SIZE; shape (frequency, time), low first."""
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    n_fft = 1 << max(6, round(math.log2(0.032 * rate)))
    hop = n_fft // 4
    if len(samples) < n_fft:
        samples = np.pad(samples, (0, n_fft - len(samples)))
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    width, height = SPECTROGRAM_SIZE
    return _pool(_pool(power.T, height, axis=0), width, axis=1)


def write_spectrogram_row(signals: list[tuple[np.ndarray, int]], paths: list[Path]) -> None:
    """One PNG per signal, all on the same dB colour scale: the row's loudest bin down DYNAMIC_RANGE_DB."""
    from matplotlib.image import imsave

    decibels = [10.0 * np.log10(power_spectrogram(samples, rate) + 1e-12) for samples, rate in signals]
    vmax = max(float(d.max()) for d in decibels)
    vmin = max(min(float(d.min()) for d in decibels), vmax - DYNAMIC_RANGE_DB)
    for image, path in zip(decibels, paths, strict=True):
        imsave(path, image, cmap=COLORMAP, vmin=vmin, vmax=vmax, origin="lower", format="png")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colors(count: int) -> list:
    from matplotlib import colormaps

    return [colormaps["tab10"](i % 10) for i in range(count)]


def box_plot(path: Path, metric: str, values: dict[str, list[float]], baseline: list[float] | None) -> None:
    """Distribution of one metric per system (a box each), the mixture's first when given."""
    labels = (["mixture"] if baseline is not None else []) + list(values)
    columns = ([baseline] if baseline is not None else []) + list(values.values())
    columns = [[v for v in column if not math.isnan(v)] or [math.nan] for column in columns]
    figure = _figure(max(3.2, 0.9 * len(labels) + 1.0), 2.6)
    axes = figure.add_subplot()
    boxes = axes.boxplot(columns, patch_artist=True, widths=0.6)
    fills = (["lightgray"] if baseline is not None else []) + _colors(len(values))
    for box, color in zip(boxes["boxes"], fills, strict=True):
        box.set_facecolor(color)
    axes.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
    axes.set_title(metric, fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    figure.savefig(path, format="png")


def improvement_scatter(path: Path, points: dict[str, tuple[list[float], list[float]]], threshold: float) -> None:
    """SI-SDRi against the mixture's SI-SDR, one colour per system; the acceptance threshold dashed."""
    figure = _figure(5.0, 3.6)
    axes = figure.add_subplot()
    for (name, (inputs, gains)), color in zip(points.items(), _colors(len(points)), strict=True):
        axes.scatter(inputs, gains, s=14, alpha=0.75, color=color, label=name)
    axes.axhline(threshold, color="gray", linestyle="--", linewidth=1, label=f"{threshold:g} dB (acceptance)")
    axes.set_xlabel("input SI-SDR (dB)")
    axes.set_ylabel("SI-SDRi (dB)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.savefig(path, format="png")


def acceptance_bars(path: Path, rates: dict[str, tuple[int, int]], threshold: float) -> None:
    """Percentage of utterances with SI-SDRi above the threshold, per system."""
    figure = _figure(max(3.2, 0.9 * len(rates) + 1.2), 2.6)
    axes = figure.add_subplot()
    percent = [100.0 * accepted / total for accepted, total in rates.values()]
    bars = axes.bar(range(len(rates)), percent, color=_colors(len(rates)), width=0.6)
    axes.bar_label(bars, [f"{p:.1f}%" for p in percent], fontsize=8)
    axes.set_xticks(range(len(rates)), list(rates), rotation=20, ha="right", fontsize=8)
    axes.set_ylim(0, 110)
    axes.set_ylabel("%")
    axes.set_title(f"acceptance (SI-SDRi > {threshold:g} dB)", fontsize=10)
    figure.savefig(path, format="png")
