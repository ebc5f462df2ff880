"""tsekit infer (a data dir, recipe stage 6) and tsekit extract (one file) with a trained experiment."""

import click

from tsekit.train.config import OUTPUT_LEVELS

# tsekit.infer.presence.METHODS, spelled out: importing tsekit.infer imports torch, which `--help` should not wait for
PRESENCE_METHODS = ("energy", "speaker")

EXP_HELP = ("A packaged model (tsekit export; or a Hugging Face hub cache folder holding one), an experiment root "
            "exp/<system> (uses its last trained stage) or a stage folder exp/<system>/stageN; an experiment's "
            "checkpoint: averaged.pt, else the best, else latest.pt. --model and --exp-dir are the same option.")
CHUNK_HELP = ("Inputs longer than this (seconds) are extracted in overlapping chunks blended with a linear "
              "cross-fade; 0 = always whole. Default: 4 x the config's data.chunk_seconds.")

LEVEL_HELP = ("Level of the output: mixture_fit (least-squares gain to the mixture, once per utterance), none, or "
              "peak (infer.peak). Default: the experiment's infer.output_level (mixture_fit for SI-SDR-trained "
              "systems).")


def _common(command):
    """Options shared by infer and extract."""
    options = [
        click.option("--model", "--exp-dir", "exp_dir", required=True, type=click.Path(file_okay=False),
                     help=EXP_HELP),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--checkpoint", default=None,
                     help="A checkpoint file, or a file name in the stage's checkpoints/ (epoch3.pt)."),
        click.option("--chunk-seconds", type=click.FloatRange(min=0), default=None, help=CHUNK_HELP),
        click.option("--overlap-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Overlap of neighbouring chunks (at most half a chunk)."),
        click.option("--output-level", type=click.Choice(OUTPUT_LEVELS), default=None, help=LEVEL_HELP),
        click.option("--refine-passes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="With --refine: how many times the sampler's schedule runs over the estimate."),
        click.option("--refine-start", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
                     help="With --refine: the diffusion time the schedule starts from (1: all of it, as X+DDTSE; "
                          "smaller keeps more of the estimate)."),
        click.option("--presence", type=click.Choice(PRESENCE_METHODS), default="energy", show_default=True,
                     help="With --segments: how the target's presence is decided, per 0.2 s frame of speech from "
                          "a window around it: the output's energy against the mixture's, or the output's speaker "
                          "similarity to the enrollment."),
        click.option("--presence-threshold", type=float, default=None,
                     help="With --segments: a frame holds the target when its window's score is above this: dB of "
                          "the output's energy over the mixture's (energy; default -6), or the cosine similarity "
                          "(speaker; default 0.6)."),
        click.option("--presence-window", type=click.FloatRange(min=0.2), default=None,
                     help="With --segments: seconds of the window each frame is scored over (default: 1 for "
                          "energy, 1.8 for speaker; rounded to an odd number of 0.2 s frames)."),
        click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                     help="Replace a model parameter for this run (repeatable; VALUE is YAML), e.g. a generative "
                          "system's decoding settings: --param temperature=0.5 --param flow_steps=20."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def parse_params(values: tuple[str, ...]) -> dict:
    """``NAME=VALUE`` options -> {NAME: VALUE parsed as a training override's}; load_experiment checks names and
    types against the model."""
    from tsekit import TsekitError
    from tsekit.typed_config import parse_yaml_value

    params = {}
    for value in values:
        name, equals, text = value.partition("=")
        if not equals or not name.strip():
            raise TsekitError(f"--param {value!r}: expected NAME=VALUE (e.g. temperature=0.5)")
        params[name.strip()] = parse_yaml_value(text, f"--param {value!r}")
    return params


@click.command()
@_common
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Data dir: wav.scp (mixtures) and enroll.scp.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Writes OUT/wav/<utt>.wav, OUT/wav.scp (and, for a transcribing system, OUT/txt/<utt>.txt, "
                   "OUT/text).")
@click.option("--nj", type=click.IntRange(min=1), default=None,
              help="With --job: the number of jobs. Without: torch threads of this process.")
@click.option("--job", type=click.IntRange(min=1), default=None,
              help="Extract only shard JOB of --nj (Kaldi runners); the last job to finish writes wav.scp.")
@click.option("--refine", type=click.Path(dir_okay=False), default=None,
              help="wav.scp of another system's outputs for these rows: a diffusion system (ddtse) starts its "
                   "sampler from them instead of from the mixture (X+DDTSE).")
@click.option("--segments", is_flag=True,
              help="Write OUT/rttm, where each row's target speaks (Silero VAD + --presence), and silence the "
                   "outputs elsewhere.")
def infer(exp_dir, device, checkpoint, chunk_seconds, overlap_seconds, output_level, refine_passes, refine_start,
          presence, presence_threshold, presence_window, params, data, out, nj, job, refine, segments) -> None:
    """Extract the target speaker of every row of a data dir.

    \b
    tsekit infer --exp-dir exp/zspex --data data/test --out exp/zspex/decode_test
    $infer_cmd JOB=1:4 LOG tsekit infer ... --job JOB --nj 4
    tsekit infer --exp-dir exp/ddtse --refine exp/zspex/decode_test/wav.scp --data data/test \\
                 --out exp/ddtse/decode_test_refine_zspex
    A rerun skips utterances whose wav exists (resume after a kill).
    """
    from tsekit import TsekitError
    from tsekit.infer.batch import infer_data_dir

    if job is not None and nj is None:
        raise TsekitError("--job needs --nj (the number of jobs)")
    if job is not None and job > nj:
        raise TsekitError(f"--job {job} is larger than --nj {nj}")
    summary = infer_data_dir(exp_dir, data, out, nj=nj, job=job, device=device, checkpoint=checkpoint,
                             chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds, output_level=output_level,
                             refine=refine, refine_passes=refine_passes, refine_start=refine_start,
                             model_params=parse_params(params), segments=segments, presence=presence,
                             presence_threshold=presence_threshold, presence_window=presence_window)
    click.echo(str(summary), err=True)


@click.command()
@_common
@click.option("--mix", "mixture", required=True, type=click.Path(dir_okay=False), help="Mixture audio file.")
@click.option("--enroll", type=click.Path(dir_okay=False), help="Enrollment of the target speaker.")
@click.option("--enroll-pos", type=click.Path(dir_okay=False),
              help="Positive enrollment (the target among others), for the pos/neg systems.")
@click.option("--enroll-neg", type=click.Path(dir_okay=False),
              help="Negative enrollment (the others without the target), for the pos/neg systems.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Output audio, 16-bit PCM in the format its suffix names (.wav, .flac, ...); a transcribing "
                   "system also writes its transcript to OUT with suffix .txt.")
@click.option("--refine", type=click.Path(dir_okay=False), default=None,
              help="Another system's output for this mixture, for a diffusion system (ddtse) to improve.")
@click.option("--segments", type=click.Path(dir_okay=False), default=None,
              help="Write where the target speaks to this RTTM file (recording id: OUT's stem; Silero VAD + "
                   "--presence) and silence the output elsewhere.")
def extract(exp_dir, device, checkpoint, chunk_seconds, overlap_seconds, output_level, refine_passes, refine_start,
            presence, presence_threshold, presence_window, params, mixture, enroll, enroll_pos, enroll_neg, out, refine,
            segments) -> None:
    """Extract the enrolled speaker from one mixture file, of any length.

    A long recording is read and written in blocks, one batch of chunks in memory, with a progress bar on stderr
    (seconds of audio, real-time factor) when it is a terminal; the output appears complete or not at all.

    \b
    tsekit extract --exp-dir exp/zspex --mix mixture.wav --enroll enroll.wav -o target.wav
    tsekit extract --model exp/zspex/packaged --mix mixture.wav --enroll enroll.wav -o target.wav
    tsekit extract --exp-dir exp/tfgridnet_posneg --mix mixture.wav --enroll-pos pos.wav --enroll-neg neg.wav \\
                   -o target.wav
    """
    from tsekit.infer.extract import extract_file

    given = {"enroll": enroll, "enroll_pos": enroll_pos, "enroll_neg": enroll_neg}
    path, transcript = extract_file(exp_dir, mixture, {k: v for k, v in given.items() if v}, out, device=device,
                                    checkpoint=checkpoint, chunk_seconds=chunk_seconds,
                                    overlap_seconds=overlap_seconds, output_level=output_level, refine=refine,
                                    refine_passes=refine_passes, refine_start=refine_start,
                                    model_params=parse_params(params), segments=segments, presence=presence,
                                    presence_threshold=presence_threshold, presence_window=presence_window)
    click.echo(f"wrote {path}" + (f" and its transcript {transcript}" if transcript else "")
               + (f"; where the target speaks: {segments}" if segments else ""), err=True)
