"""Evaluation metrics, each a pure function usable from Python; the scorer runs them over manifests.

  sdr.py      si_sdr, snr, bss_eval (SDR/SIR/SAR)
  quality.py  pesq_score, stoi_score (STOI / ESTOI)
  dnsmos.py   DNSMOS SIG/BAK/OVRL/P.808 (speechmos onnx models)
  asr.py      Whisper ASR, text normalisation, WER/CER counts (jiwer)
  speaker.py  speaker embeddings (resemblyzer) and cosine similarity
  scorer.py   `tsekit score`: all of the above over scp manifests, in parallel, resumable
"""

# environment variables that set the math-library thread count (read when numpy/torch load)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
