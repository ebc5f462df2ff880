#!/usr/bin/env bash
# The demo: a small Libri2Mix-layout corpus synthesized with Debian TTS voices
# (stage 0), then the Libri2Mix stages on it. Runs in minutes on 2 CPU cores.
#   ./run.sh [--size demo] [--stage 0] [--stop-stage 9] [--system spex_plus]
#   stage 6 decoding settings (generative systems): [--infer-params 'temperature=0.5 flow_steps=20']
#   conversation and absent-target test sets (stages 1-2, scored with test): [--conversations true]
set -euo pipefail
. ./path.sh
. ./cmd.sh
. ./defaults.sh

stage=0
system=zspex
nj=2
ngpu=0
train_threads=2                 # the demo's machine: 2 cores
size=demo                       # tiny | small | demo | medium | number of training mixtures
corpus_dir=downloads/mini       # where stage 0 writes Libri2Mix/ and LibriSpeech/
mixture=mix_both                # mix_clean | mix_both (noisy) | mix_single
train_set=train-100
valid_set=dev
test_sets=test
conv_opts="--recordings 3 --minutes 1"  # the conversations of --conversations true (tsekit prepare mini-conversations)

. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: synthesize the mini corpus into $corpus_dir (resumes if interrupted)"
  tsekit prepare mini-libri2mix "$corpus_dir" --size "$size" --seed "$seed" --jobs "$nj"
fi

corpus=libri2mix
corpus_root=$corpus_dir/Libri2Mix
prepare_opts="--sample-rate 16000 --mode min --mixture $mixture --librispeech $corpus_dir/LibriSpeech"
prepare_opts="$prepare_opts --splits $(echo $train_set $valid_set $test_sets | tr ' ' ,)"
enroll_opts=""
# shellcheck disable=SC2034  # read by tse.sh
conv_prepare="tsekit prepare mini-conversations $corpus_dir --seed $seed --jobs $nj $conv_opts"

. ./tse.sh
