# Shared stages of every TSE recipe; sourced by egs/<corpus>/run.sh after it
# has set its corpus variables and parsed the options. See the stage table in
# docs/recipes.md. Variables it reads:
#   stage stop_stage system nj ngpu seed       recipe variables
#   train_threads                              (egs/TEMPLATE/defaults.sh)
#   corpus corpus_root prepare_opts            stage 1: tsekit prepare $corpus $corpus_root data $prepare_opts
#   train_set valid_set test_sets              Kaldi data dirs under data/
#   enroll_opts posneg posneg_interferers      stage 2 options
#   posneg_noise
#   codec vocoder                              stage 3: override the system config's codec.spec / vocoder.spec
#   codec_params vocoder_params                stage 3: the params of those overrides (YAML mappings)
#   asr_model score_metrics                    stage 3 and 7 scoring options (egs/TEMPLATE/defaults.sh)
#   refine infer_params                        stage 6: refine another system's outputs, decoding settings
#   conversations conv_prepare                 stages 1-2: the conversation and absent-target test sets
#   prep_cmd infer_cmd score_cmd train_cmd     from cmd.sh (local runner or Slurm)

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "$0")) $*"; }

# A stage whose tsekit command does not exist yet stops the recipe with a
# message naming it (exit 3) instead of crashing half-way.
require_command() {
  local command=$1 what=$2 n=$3
  if ! tsekit "$command" --help > /dev/null 2>&1; then
    log "stage $n ($what) needs 'tsekit $command', which this version of tsekit does not provide yet."
    log "stopping before stage $n; stages up to $((n - 1)) are done."
    exit 3
  fi
}

run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

describe_data_dir() {
  local dir=$1 f
  for f in "$dir"/*; do
    [ -f "$f" ] && printf '    %-16s %7d lines\n' "$(basename "$f")" "$(wc -l < "$f")"
  done
}

corpus_sets="$train_set $valid_set $test_sets"  # what `tsekit prepare $corpus` writes
# --conversations true: two more test sets from the first one's speakers, which bring their own enrollments
extra_sets=""
if "$conversations"; then
  if [ -z "$conv_prepare" ]; then
    log "--conversations true: this recipe does not say how to build conversations (conv_prepare is empty)"
    exit 1
  fi
  conv_base=${test_sets%% *}
  extra_sets="${conv_base}_conv ${conv_base}_absent"
  test_sets="$test_sets $extra_sets"
fi
all_sets="$corpus_sets $extra_sets"
conf=conf/$system.yaml
# a system enrolled by noisy positive/negative clips gets them built in stage 2
if [ -f "$conf" ] && tsekit train --config "$conf" --print-needs | grep -qw enroll_pos; then
  posneg=true
fi
# a system trained on the targets' transcripts (whisper_cfm) cannot run on a corpus without them: say so now
if [ -n "$no_transcripts" ] && [ ! -f "data/$train_set/text" ] && [ -f "$conf" ] \
   && tsekit train --config "$conf" --print-needs | grep -qw text; then
  log "$system is trained on the targets' transcripts (data/<set>/text): $no_transcripts"
  exit 1
fi

if run_stage 1; then
  log "stage 1: data preparation ($corpus from $corpus_root)"
  missing=""
  for set in $corpus_sets; do [ -f "data/$set/wav.scp" ] || missing="$missing $set"; done
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086  # prepare_opts holds several options
    tsekit prepare "$corpus" "$corpus_root" data $prepare_opts
  else
    log "data/{${corpus_sets// /,}} exist; skipping (remove them to prepare again)"
  fi
  if "$conversations"; then
    if [ -f "data/${conv_base}_absent/wav.scp" ]; then
      log "data/${conv_base}_absent exists; skipping"
    else
      log "stage 1: absent-target mixtures of data/$conv_base into data/${conv_base}_absent"
      tsekit prepare absent "data/$conv_base" "data/${conv_base}_absent" --seed "$seed"
    fi
    if [ -f "data/${conv_base}_conv/wav.scp" ]; then
      log "data/${conv_base}_conv exists; skipping"
    else
      log "stage 1: conversations into data/${conv_base}_conv"
      # shellcheck disable=SC2086  # conv_prepare is a command with its options
      $conv_prepare "data/${conv_base}_conv"
    fi
  fi
  for set in $all_sets; do tsekit data validate "data/$set"; done
fi

if run_stage 2; then
  log "stage 2: enrollment lists"
  posneg_opts="--posneg --interferers $posneg_interferers"
  [ -n "$posneg_noise" ] && posneg_opts="$posneg_opts --posneg-noise $posneg_noise"
  for set in $all_sets; do
    # pos/neg clips are always (re)checked: tsekit enroll rebuilds only the rows whose options changed
    if [[ " $extra_sets " == *" $set "* ]]; then
      log "data/$set brings its own enroll.scp (made in stage 1)"
      if "$posneg"; then
        # its pos/neg clips: its own enrollments among interferers cut from the clean targets of data/$conv_base
        # shellcheck disable=SC2086
        tsekit enroll "data/$set" --seed "$seed" $posneg_opts --posneg-sources "data/$conv_base"
      fi
    elif [ -f "data/$set/enroll.scp" ] && ! "$posneg"; then
      log "data/$set/enroll.scp exists; skipping"
    else
      opts="--seed $seed"
      if "$posneg"; then opts="$opts $posneg_opts"; fi
      # shellcheck disable=SC2086
      tsekit enroll "data/$set" $opts $enroll_opts
    fi
    tsekit data validate --require-enroll "data/$set"
    log "data/$set:"
    describe_data_dir "data/$set"
  done
fi

device=cpu
[ "$ngpu" -gt 0 ] && device=cuda
launch="tsekit train"
# several GPUs: one training process each (DistributedDataParallel); docs/cluster.md has multi-node
[ "$ngpu" -gt 1 ] && launch="torchrun --standalone --nproc-per-node $ngpu -m tsekit train"

# Score the estimates EST (a wav.scp) of data/SET into OUT/scores ($score_cmd jobs): stage 7 for the systems'
# outputs, stage 3 for a codec's or vocoder's resynthesis of the clean targets (its ceiling). HYP (stage 7): the
# system's own transcripts (a target-speaker ASR system's OUT/text), scored against data/SET/text as tsasr_wer.
# tsekit score reads data/SET itself: targets, mixtures, enrollments, the text when the ASR model or HYP uses
# it, and a conversation set's rttm (metrics over who speaks when) or an absent-target set's utt2present.
score_estimates() {
  local est=$1 set=$2 out=$3 hyp=${4:-} opts
  opts="--data data/$set --est $est"
  [ -n "$asr_model" ] && opts="$opts --asr-model $asr_model"
  [ -f "data/$set/text" ] && [ -n "$hyp" ] && opts="$opts --hyp-text $hyp"
  # --score-metrics chooses among the metrics of mixtures with a reference; a conversation or absent-target set
  # is scored by its own few (over who speaks when, or the output's energy), all of them
  [ -n "$score_metrics" ] && [[ " $extra_sets " != *" $set "* ]] && opts="$opts --metrics $score_metrics"
  # shellcheck disable=SC2086
  $score_cmd JOB=1:"$nj" "$out/scores/log/score.JOB.log" tsekit score $opts --out "$out/scores" --job JOB --nj "$nj"
  tsekit score merge "$out/scores"
}

if run_stage 3; then
  # the codec and vocoder $system speaks through (codec.spec and .params, vocoder.spec and .params in its
  # config), unless given with --codec / --vocoder (a registered name with --codec-params / --vocoder-params,
  # or exp/<name>, trained here from conf/<name>.yaml)
  for kind in codec vocoder; do
    params_name=${kind}_params
    if [ -z "${!kind}" ] && [ -f "$conf" ]; then
      printf -v "$kind" %s "$(tsekit train --config "$conf" --print-value "$kind.spec")"
      printf -v "$params_name" %s "$(tsekit train --config "$conf" --print-value "$kind.params")"
    fi
    [ -z "${!params_name}" ] && printf -v "$params_name" %s "{}"
  done
  [ -z "$codec$vocoder" ] && log "stage 3: $system needs no codec or vocoder; skipped"
  for kind in codec vocoder; do
    coder=${!kind}
    [ -z "$coder" ] && continue
    params_name=${kind}_params
    params=${!params_name}
    require_command codec "codec and vocoder training" 3
    name=$(basename "$coder")
    if [ "${coder#exp/}" != "$coder" ] && [ ! -f "$coder/codec.pt" ]; then
      if [ ! -f "conf/$name.yaml" ]; then
        log "stage 3: $coder is not trained and there is no conf/$name.yaml to train it"
        exit 1
      fi
      log "stage 3: training $coder (conf/$name.yaml); log: $coder/log/train.log"
      $train_cmd --gpu "$ngpu" --num-threads "$train_threads" "$coder/log/train.log" \
        tsekit codec train --config "conf/$name.yaml" --train-data "data/$train_set" --valid-data "data/$valid_set" \
        --exp-dir "$coder" --device "$device"
      grep -E "valid|already trained" "$coder/log/train.log" | tail -3
    fi
    for set in $test_sets; do
      [ -f "data/$set/spk1.scp" ] || continue  # an absent-target set has no targets to resynthesize
      # the clean targets through the codec (or the vocoder, from their mel): the ceiling of a system using it
      resynth=exp/$name/resynth_$set
      log "stage 3: resynthesizing the targets of data/$set through $coder into $resynth ($nj jobs)"
      $infer_cmd JOB=1:"$nj" "$resynth/log/resynth.JOB.log" \
        tsekit codec resynth --codec "$coder" --params "$params" "data/$set" "$resynth" --job JOB --nj "$nj"
      score_estimates "$resynth/wav.scp" "$set" "$resynth"
    done
    [ "$kind" = vocoder ] && continue  # a vocoder has no tokens: mel systems compute their mels on the fly
    require_command tokenize "codec tokenization" 3
    # the sets a token system trains and validates on; inference encodes the test mixtures and enrollments itself
    for set in $train_set $valid_set; do
      log "stage 3: tokenizing data/$set with $coder into dump/$name/$set ($nj jobs)"
      $infer_cmd JOB=1:"$nj" "dump/$name/$set/log/tokenize.JOB.log" \
        tsekit tokenize --codec "$coder" --params "$params" "data/$set" "dump/$name/$set" --job JOB --nj "$nj"
    done
  done
fi

if run_stage 4; then
  require_command train "training" 4
  if [ ! -f "$conf" ]; then
    log "no $conf; this recipe's systems: $(cd conf && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')"
    exit 1
  fi
  # a system distilled from a teacher (distill.teacher: exp/<teacher>) trains the teacher first, with
  # conf/<teacher>.yaml, unless it is trained already or the config points elsewhere
  teacher=$(tsekit train --config "$conf" --print-value distill.teacher)
  if [ -n "$teacher" ] && [ ! -f "$teacher/stage1/checkpoints/averaged.pt" ] && [ ! -f "$teacher" ]; then
    teacher_conf=conf/$(basename "$teacher").yaml
    if [ ! -f "$teacher_conf" ]; then
      log "$conf distils from $teacher, which is not trained, and there is no $teacher_conf to train it"
      exit 1
    fi
    # the teacher classifies the training speakers, so it is validated on held-out utterances of those speakers
    # (the speakers of $valid_set are unknown to it and would give it a zero loss)
    teacher_train=data/${train_set}_teacher_train
    teacher_valid=data/${train_set}_teacher_valid
    if [ -f "$teacher_train/wav.scp" ] && [ -f "$teacher_valid/wav.scp" ]; then
      log "$teacher_train and $teacher_valid exist; skipping the hold-out split (remove them to split again)"
    else
      tsekit data holdout "data/$train_set" --train-out "$teacher_train" --heldout-out "$teacher_valid" --seed "$seed"
    fi
    log "stage 4: training the distillation teacher $teacher ($teacher_conf); log: $teacher/log/train_stage1.log"
    # shellcheck disable=SC2086
    $train_cmd --gpu "$ngpu" --num-threads "$train_threads" "$teacher/log/train_stage1.log" \
      $launch --config "$teacher_conf" --train-data "$teacher_train" --valid-data "$teacher_valid" \
      --exp-dir "$teacher" --device "$device"
    grep -E "valid loss|already trained" "$teacher/log/train_stage1.log" | tail -3
  fi
  log "stage 4: training $system (stage 1); log: exp/$system/log/train_stage1.log"
  # shellcheck disable=SC2086
  $train_cmd --gpu "$ngpu" --num-threads "$train_threads" "exp/$system/log/train_stage1.log" \
    $launch --config "$conf" --train-data "data/$train_set" --valid-data "data/$valid_set" --exp-dir "exp/$system" \
    --device "$device"
  grep -E "valid loss|already trained" "exp/$system/log/train_stage1.log" | tail -3
fi

if run_stage 5; then
  if [ "$(tsekit train --config "$conf" --print-value stage2.enabled)" = true ]; then
    log "stage 5: training $system (stage 2); log: exp/$system/log/train_stage2.log"
    # shellcheck disable=SC2086
    $train_cmd --gpu "$ngpu" --num-threads "$train_threads" "exp/$system/log/train_stage2.log" \
      $launch --config "$conf" --stage 2 --init-from "exp/$system/stage1/checkpoints/averaged.pt" \
      --train-data "data/$train_set" --valid-data "data/$valid_set" --exp-dir "exp/$system" --device "$device"
    grep -E "valid loss|already trained" "exp/$system/log/train_stage2.log" | tail -3
  else
    log "stage 5: $system has no second training stage; skipped"
  fi
fi

# the decode dirs of one test set: the system's own outputs, and with --refine X its refinement of X's outputs
decodes_of() {
  echo "exp/$system/decode_$1"
  [ -z "$refine" ] || echo "exp/$system/decode_$1_refine_$refine"
}

# --infer-params: each NAME=VALUE becomes a `tsekit infer --param` (a generative system's decoding settings)
read -ra infer_param_list <<< "$infer_params"
param_opts=()
for param in "${infer_param_list[@]}"; do param_opts+=(--param "$param"); done

# The wavs of a decode dir do not say which settings made them and tsekit infer keeps the wavs that exist, so
# DECODE records its --infer-params, and a rerun with other ones stops instead of keeping the old outputs.
record_infer_params() {
  local decode=$1 before=""
  [ -f "$decode/infer_params" ] && before=$(cat "$decode/infer_params")
  if [ -d "$decode/wav" ] && [ "$before" != "${infer_param_list[*]}" ]; then
    log "stage 6: $decode holds outputs decoded with --infer-params '$before'; remove it to decode with" \
      "'${infer_param_list[*]}'"
    exit 1
  fi
  mkdir -p "$decode"
  echo "${infer_param_list[*]}" > "$decode/infer_params"
}

if run_stage 6; then
  require_command infer "inference" 6
  for set in $test_sets; do
    decode=exp/$system/decode_$set
    record_infer_params "$decode"
    log "stage 6: extracting data/$set with exp/$system into $decode ($nj jobs)"
    $infer_cmd --gpu "$((ngpu > 0 ? 1 : 0))" JOB=1:"$nj" "$decode/log/infer.JOB.log" \
      tsekit infer --exp-dir "exp/$system" --data "data/$set" --out "$decode" --job JOB --nj "$nj" --device "$device" \
      "${param_opts[@]}"
    [ -z "$refine" ] && continue
    start=exp/$refine/decode_$set/wav.scp
    if [ ! -f "$start" ]; then
      log "--refine $refine: no $start; run stages 4-6 with --system $refine first"
      exit 1
    fi
    decode=exp/$system/decode_${set}_refine_$refine
    record_infer_params "$decode"
    log "stage 6: refining $start with exp/$system into $decode ($nj jobs)"
    $infer_cmd --gpu "$((ngpu > 0 ? 1 : 0))" JOB=1:"$nj" "$decode/log/infer.JOB.log" \
      tsekit infer --exp-dir "exp/$system" --data "data/$set" --refine "$start" --out "$decode" --job JOB --nj "$nj" \
      --device "$device" "${param_opts[@]}"
  done
fi

if run_stage 7; then
  log "stage 7: scoring"
  for decode in $(for set in $test_sets; do decodes_of "$set"; done); do
    set=${decode#exp/"$system"/decode_}
    set=${set%_refine_*}
    if [ ! -f "$decode/wav.scp" ]; then
      log "no $decode/wav.scp: run stage 6 (inference) first"
      exit 1
    fi
    hyp=""
    [ -f "$decode/text" ] && hyp=$decode/text  # written by stage 6 for systems that transcribe (tsasr_wer)
    score_estimates "$decode/wav.scp" "$set" "$decode" "$hyp"
  done
fi

if run_stage 8; then
  # one page per test set, over every system scored on it (not only $system), so a rerun compares them all
  for set in $test_sets; do
    exps=""
    for scores in exp/*/decode_"$set"/scores/scores.tsv; do
      [ -f "$scores" ] && exps="$exps --exp ${scores%/decode_"$set"/scores/scores.tsv}"
    done
    # refinements show as systems of their own, and so do the codec and vocoder ceilings of stage 3
    for scores in exp/*/decode_"$set"_refine_*/scores/scores.tsv exp/*/resynth_"$set"/scores/scores.tsv; do
      [ -f "$scores" ] && exps="$exps --exp ${scores%/scores/scores.tsv}"
    done
    if [ -z "$exps" ]; then
      log "stage 8: no system is scored on data/$set (no exp/*/decode_$set/scores/scores.tsv); no report for it"
      continue
    fi
    log "stage 8: results report of data/$set for${exps//--exp /}"
    # shellcheck disable=SC2086  # exps holds one --exp option per system
    tsekit report --data "data/$set" $exps --out "exp/report/$set"
    log "report of data/$set: $PWD/exp/report/$set/index.html"
  done
fi

if run_stage 9; then
  # the trained system as a packaged model (weights, config, model card, manifest), usable without the recipe:
  # tsekit extract --model exp/$system/packaged, or tsekit.load_model in Python
  require_command export "export" 9
  log "stage 9: packaging exp/$system into exp/$system/packaged"
  tsekit export "exp/$system" "exp/$system/packaged"
fi

log "done: stages $stage to $stop_stage"
