"""Frozen networks loaded from outside weights, shared by scoring (``tsekit.metrics``) and systems (``tsekit.models``).

  whisper.py        load_whisper: a Whisper name (cache, registry packages, download), a .pt or a CTranslate2 folder
  ct2.py            CTranslate2 (faster-whisper) model folder -> openai-whisper checkpoint, cached
  speaker.py        SpeakerEncoder: resemblyzer's GE2E d-vectors
  dnsmos.py         load_dnsmos: the DNSMOS P.835 and P.808 onnx sessions (speechmos's models)
  codec_base.py     Codec, Vocoder, register_codec: what every codec and vocoder implements, published or not
  mel.py            LogMel: the log-mel of Vocos and HiFi-GAN and its frame convention
  encodec_codec.py  encodec_24khz (the encodec package)
  dac_codec.py      dac_16khz (descript-audio-codec)
  vocoders.py       the published Vocos and HiFi-GAN mel vocoders, by path

A model's own package (whisper, resemblyzer, onnxruntime, encodec, dac, vocos) is imported only when the model is
built. Codecs and vocoders are looked up by name through ``tsekit.codec.registry``, which registers these beside the
toolkit's own.
"""
