# Recipe variables every egs/*/run.sh shares; a run.sh sources this first, then
# sets its corpus variables (and may override these), then parses the options.
stage=1               # first stage to run
stop_stage=9          # last stage to run
system=spex_plus      # experiment config conf/<system>.yaml; results in exp/<system>/
nj=8                  # parallel jobs (inference, scoring)
ngpu=1                # GPUs per training job
train_threads=4       # CPU cores per training job (Slurm: --cpus-per-task)
seed=0                # enrollment choice and pos/neg enrollments
enroll_map=           # optional published enrollment list for the test sets
posneg=false          # also build noisy positive/negative enrollments (set by systems that need them)
posneg_interferers=1  # talkers beside the target in a positive clip (2: the paper's 3-speaker positives)
posneg_noise=         # noise in both clips: scp (the data dir's noise1.scp, WHAM! in mix_both) or a wav folder
codec=                # stage 3: a codec (registered name or exp/<name>, trained from conf/<name>.yaml); empty: the system config's codec.spec
vocoder=              # stage 3: a vocoder, likewise; empty: the system config's vocoder.spec
codec_params=         # stage 3: constructor params of a registered --codec, a YAML mapping ('{bandwidth: 6.0}')
vocoder_params=       # stage 3: likewise for --vocoder ('{checkpoint: /models/hifigan/g_02500000}')
asr_model=            # Whisper for WER in stage 7 (name, .pt or CTranslate2 folder); empty: no WER
score_metrics=        # comma list for stage 7 (the corpus's test sets; --conversations sets get all of their own); empty: every metric whose inputs exist
no_transcripts=       # why the corpus has no target transcripts (text); set by recipes without them, checked for systems that need text
refine=               # another system whose test outputs $system refines in stages 6-7 (X+DDTSE): exp/$system/decode_<set>_refine_<refine>
infer_params=         # stage 6: decoding settings, NAME=VALUE separated by spaces (each a `tsekit infer --param`; VALUE is YAML without spaces): 'temperature=0.5 flow_steps=20'
conversations=false   # stages 1-2 also build data/<first test set>_conv (conversations) and _absent (absent target) and add them to test_sets
conv_prepare=         # the command that writes a conversation data dir (its last argument); set by recipes that can build one
