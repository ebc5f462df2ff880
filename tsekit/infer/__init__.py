"""Inference with a trained experiment or packaged model (``tsekit.train.experiment``, ``tsekit.train.package``): one
waveform (chunked when long), a data dir, the Python entry point (``load_model``)."""

from tsekit.infer.batch import InferSummary, infer_data_dir
from tsekit.infer.extract import extract_file, extract_waveform
from tsekit.infer.model import LoadedModel, TranscribingModel, load_model

__all__ = ["InferSummary", "LoadedModel", "TranscribingModel", "extract_file", "extract_waveform", "infer_data_dir",
           "load_model"]
