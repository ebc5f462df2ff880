"""Inference with a trained experiment (``tsekit.train.experiment``): one waveform (chunked when long), a data dir."""

from tsekit.infer.batch import InferSummary, infer_data_dir
from tsekit.infer.extract import extract_file, extract_waveform

__all__ = ["InferSummary", "extract_file", "extract_waveform", "infer_data_dir"]
