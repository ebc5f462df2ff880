"""Frozen networks loaded from outside weights, shared by scoring (``tsekit.metrics``) and systems (``tsekit.models``).

  whisper.py        load_whisper: a Whisper name (cache, registry packages, download), a .pt or a CTranslate2 folder
  ct2.py            CTranslate2 (faster-whisper) model folder -> openai-whisper checkpoint, cached
  speaker.py        SpeakerEncoder: resemblyzer's GE2E d-vectors
  dnsmos.py         load_dnsmos: the DNSMOS P.835 and P.808 onnx sessions (speechmos's models)

A model's own package (whisper, resemblyzer, onnxruntime) is imported only when the model is built.
"""
