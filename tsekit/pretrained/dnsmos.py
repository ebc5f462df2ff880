"""The DNSMOS onnx models (Reddy et al., ICASSP 2022) that the ``speechmos`` package ships: P.835 and P.808.

Only their loading; the scoring procedure around them is ``tsekit.metrics.dnsmos``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_dir() -> Path:
    """Folder of the DNSMOS onnx files inside the installed ``speechmos`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("DNSMOS needs the 'speechmos' package (pip install 'tsekit[metrics]')")
    return Path(next(iter(spec.submodule_search_locations))) / "dnsmos_models"


def load_dnsmos(threads: int = 1) -> tuple[Any, Any]:
    """onnxruntime sessions on the CPU of the P.835 model (raw waveform -> raw SIG, BAK, OVRL) and the P.808 model
    (log-mel -> MOS), each on ``threads`` intra-op threads: speechmos would give each session every core."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    folder = model_dir()
    providers = ["CPUExecutionProvider"]
    p835 = onnxruntime.InferenceSession(str(folder / "sig_bak_ovr.onnx"), options, providers=providers)
    p808 = onnxruntime.InferenceSession(str(folder / "model_v8.onnx"), options, providers=providers)
    return p835, p808
