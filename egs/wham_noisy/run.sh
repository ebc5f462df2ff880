#!/usr/bin/env bash
# WHAM! (noisy WSJ0-2mix) target speaker extraction.
#   ./run.sh --wham-root /data/wham_mix [--mixture mix_both] [--stage 1] [--stop-stage 9] [--system spex_plus]
#   stage 6 decoding settings (generative systems): [--infer-params 'temperature=0.5 flow_steps=20']
# Stages: 1 data prep, 2 enrollment lists, 3 codec tokens, 4-5 training,
# 6 inference, 7 scoring, 8 report, 9 packaged model (docs/recipes.md has the table).
set -euo pipefail
. ./path.sh
. ./cmd.sh
. ./defaults.sh

wham_root=/path/to/wham_mix   # the folder holding wav8k/ wav16k/
sample_rate=8000
mode=min
mixture=mix_both
train_set=tr
valid_set=cv
test_sets=tt

. utils/parse_options.sh

corpus=wham
no_transcripts="WHAM! has no transcripts in its layout (its mixtures are WSJ0-2mix's, whose WSJ0 .dot transcripts are not part of it)"
corpus_root=$wham_root
prepare_opts="--sample-rate $sample_rate --mode $mode --mixture $mixture"
prepare_opts="$prepare_opts --splits $(echo $train_set $valid_set $test_sets | tr ' ' ,)"
enroll_opts=""
[ -n "$enroll_map" ] && enroll_opts="--from-map $enroll_map --map-format spex"

. ./tse.sh
