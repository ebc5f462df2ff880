"""Inference: loading a trained experiment, single-waveform extraction (chunked when long), data-dir runs."""

from tsekit.infer.batch import InferSummary, infer_data_dir
from tsekit.infer.extract import extract_file, extract_waveform, find_checkpoint, load_experiment

__all__ = ["InferSummary", "extract_file", "extract_waveform", "find_checkpoint", "infer_data_dir", "load_experiment"]
