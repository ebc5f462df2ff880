#!/usr/bin/env bash
# Libri2Mix (or Libri3Mix) target speaker extraction.
#   ./run.sh --librimix-root /data/LibriMix/Libri2Mix [--librispeech-root /data/LibriSpeech]
#            [--stage 1] [--stop-stage 9] [--system spex_plus] [--nj 8] [--ngpu 1]
#   ./run.sh --num-speakers 3 --librimix-root /data/LibriMix/Libri3Mix ...   (3-speaker mixtures)
#   pos/neg systems: [--posneg-interferers 2] [--posneg-noise scp|/data/wham_noise/tr]
#   stage 6 decoding settings (generative systems): [--infer-params 'temperature=0.5 flow_steps=20']
# Stages: 1 data prep, 2 enrollment lists, 3 codec tokens, 4-5 training,
# 6 inference, 7 scoring, 8 report, 9 packaged model (docs/recipes.md has the table).
set -euo pipefail
. ./path.sh
. ./cmd.sh
. ./defaults.sh

librimix_root=/path/to/LibriMix/Libri2Mix   # the folder holding wav8k/ wav16k/
num_speakers=2                              # 2: Libri2Mix, 3: Libri3Mix
librispeech_root=                           # optional: transcripts for WER
enroll_map=                                 # optional: published map_mixture2enrollment (BUT format)
sample_rate=16000
mode=min
mixture=mix_clean
train_set=train-100
valid_set=dev
test_sets=test

. utils/parse_options.sh

case "$num_speakers" in
  2|3) corpus=libri${num_speakers}mix ;;
  *) echo "run.sh: --num-speakers must be 2 or 3, got '$num_speakers'" >&2; exit 1 ;;
esac
corpus_root=$librimix_root
prepare_opts="--sample-rate $sample_rate --mode $mode --mixture $mixture"
prepare_opts="$prepare_opts --splits $(echo $train_set $valid_set $test_sets | tr ' ' ,)"
if [ -n "$librispeech_root" ]; then
  prepare_opts="$prepare_opts --librispeech $librispeech_root"
else
  no_transcripts="Libri2Mix's transcripts come from LibriSpeech: pass --librispeech-root"
fi
enroll_opts=""
[ -n "$enroll_map" ] && enroll_opts="--from-map $enroll_map --map-format but"

. ./tse.sh
