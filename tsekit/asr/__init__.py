"""Whisper models shared by scoring (tsekit.metrics.asr) and systems (whisper_cfm).

  whisper.py  load_whisper: a Whisper name (cache, registry packages, download), a .pt or a CTranslate2 folder
  ct2.py      CTranslate2 (faster-whisper) model folder -> openai-whisper checkpoint, cached
"""
