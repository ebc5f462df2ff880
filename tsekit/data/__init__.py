"""Kaldi data directories, audio io, enrollment lists."""
