"""tsekit score: metrics of extracted speech against references (recipe stage 7)."""

import click

# kept equal to tsekit.metrics.scorer.METRICS by a test; not imported here to keep --help fast
METRIC_NAMES = ("si_sdr si_sdri snr snri sdr sir sar pesq stoi estoi dnsmos_sig dnsmos_bak dnsmos_ovrl "
                "dnsmos_p808 wer cer tsasr_wer spk_sim spk_sim_ref absent_energy audible si_sdr_active sdr_active "
                "interferer_suppression target_kept")
METRIC_HELP = (f"Comma list of metrics; default: every one whose inputs are given, except cer and "
               f"spk_sim_ref (absent-target rows: absent_energy, audible; conversations: the *_active ones, "
               f"interferer_suppression, target_kept, wer, tsasr_wer). Names: {METRIC_NAMES}.")


@click.group(invoke_without_command=True)
@click.option("--data", type=click.Path(file_okay=False),
              help="A data dir: its spk1.scp, wav.scp, enroll.scp, text (with --asr-model or --hyp-text), and a "
                   "conversation set's rttm/utt2reco/utt2spk or an absent-target set's utt2present; with --est.")
@click.option("--ref", type=click.Path(dir_okay=False), help="scp of clean target references (spk1.scp).")
@click.option("--est", type=click.Path(dir_okay=False), help="scp of estimates (the wav.scp of tsekit infer).")
@click.option("--mix", type=click.Path(dir_okay=False), help="scp of mixtures: baseline, SI-SDRi/SNRi, SIR/SAR.")
@click.option("--enroll", type=click.Path(dir_okay=False), help="scp of enrollments: speaker similarity.")
@click.option("--text", type=click.Path(dir_okay=False),
              help="Reference transcripts (Kaldi text) for wer (else: ASR of the reference) and tsasr_wer.")
@click.option("--hyp-text", type=click.Path(dir_okay=False),
              help="The system's own transcripts (Kaldi text, e.g. the text of tsekit infer's OUT): tsasr_wer "
                   "against --text.")
@click.option("--absent", is_flag=True,
              help="Rows whose target is not in the mixture (no --ref): absent_energy and audible from --est, --mix.")
@click.option("--audible-threshold", type=float, default=-20.0, show_default=True,
              help="absent_energy (dB, output over mixture energy) above which an absent-target row is audible.")
@click.option("--rttm", type=click.Path(dir_okay=False),
              help="Who speaks when in each recording (conversation rows; with --utt2reco, --utt2spk).")
@click.option("--segments", type=click.Path(dir_okay=False),
              help="Instead of --rttm: a segments file in tsekit's layout (ids <rec>-<spk>-<start>-<end>).")
@click.option("--utt2reco", type=click.Path(dir_okay=False), help="utt -> recording of the --rttm.")
@click.option("--utt2spk", type=click.Path(dir_okay=False), help="utt -> the row's target speaker in the --rttm.")
@click.option("--ref-dir", type=click.Path(file_okay=False), help="Folder of references (instead of --ref).")
@click.option("--est-dir", type=click.Path(file_okay=False), help="Folder of estimates, matched by file name.")
@click.option("--mix-dir", type=click.Path(file_okay=False), help="Folder of mixtures, matched by file name.")
@click.option("--enroll-dir", type=click.Path(file_okay=False), help="Folder of enrollments, matched by name.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder: scores.tsv, RESULTS.md.")
@click.option("--metrics", default=None, help=METRIC_HELP)
@click.option("--nj", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (with --job: the number of jobs).")
@click.option("--job", type=click.IntRange(min=1), default=None,
              help="Score only shard JOB of --nj (cluster runs); then run `tsekit score merge OUT`.")
@click.option("--asr-model", default=None,
              help="Whisper for WER: a model name (tiny.en, base, ...), a .pt checkpoint or a CTranslate2 folder.")
@click.option("--threshold", type=float, default=1.0, show_default=True,
              help="SI-SDRi (dB) above which an utterance counts as accepted (target-confusion rate).")
@click.pass_context
def score(ctx: click.Context, data, ref, est, mix, enroll, text, hyp_text, absent, audible_threshold, rttm, segments,
          utt2reco, utt2spk, ref_dir, est_dir, mix_dir, enroll_dir, out, metrics, nj, job, asr_model,
          threshold) -> None:
    """Score estimates against references; writes OUT/scores.tsv and OUT/RESULTS.md.

    \b
    tsekit score --ref data/test/spk1.scp --est exp/x/decode_test/wav.scp --mix data/test/wav.scp --out DIR
    tsekit score --ref-dir refs/ --est-dir outputs/ --out DIR
    tsekit score ... --job J --nj N --out DIR   (N jobs, then: tsekit score merge DIR)
    tsekit score ... --text data/test/text --hyp-text exp/x/decode_test/text   (tsasr_wer)
    tsekit score --data data/test_conv --est exp/x/decode_test_conv/wav.scp --out DIR   (reads the data dir)
    tsekit score --absent --est E.scp --mix data/test_absent/wav.scp --out DIR   (absent targets)
    tsekit score ... --rttm R --utt2reco U --utt2spk S   (conversations: metrics where each speaker talks)

    A killed run resumes where it stopped when run again with the same options.
    """
    if ctx.invoked_subcommand is not None:
        return
    import os

    # One math thread per process (set before numpy loads): the metrics work on
    # small matrices, where extra BLAS threads cost more than they give (measured
    # in bench/score_bench.py); --nj uses the other cores. An explicit setting wins.
    from tsekit.metrics import THREAD_VARIABLES  # the package's __init__ imports nothing heavy

    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    from tsekit import TsekitError
    from tsekit.metrics.jobs import inputs_from_data_dir, inputs_from_dirs, inputs_from_manifests, run_scoring
    from tsekit.metrics.results import merge_scores

    if out is None:
        raise TsekitError("--out is required")
    folders = ref_dir or est_dir or mix_dir or enroll_dir
    conversation = rttm or segments or utt2reco or utt2spk
    manifests = ref or mix or enroll or text or absent or conversation
    if data and est and not (folders or manifests):
        inputs = inputs_from_data_dir(data, est, hyp_text, with_text=bool(asr_model or hyp_text))
    elif (ref or absent) and est and not (data or folders):
        inputs = inputs_from_manifests(ref, est, mix, enroll, text, hyp_text, absent, rttm, utt2reco, utt2spk,
                                       segments)
    elif ref_dir and est_dir and not (data or ref or est or mix or enroll or absent or conversation):
        if text or hyp_text:
            raise TsekitError(f"{'--text' if text else '--hyp-text'} goes with --ref/--est manifests, not with folders")
        inputs = inputs_from_dirs(ref_dir, est_dir, mix_dir, enroll_dir)
    else:
        raise TsekitError("give --data and --est (a data dir), --ref (or --absent) and --est (scp manifests), or "
                          "--ref-dir and --est-dir (folders)")
    if job is not None and job > nj:
        raise TsekitError(f"--job {job} is larger than --nj {nj}")
    _, messages = run_scoring(inputs, out, metrics=metrics, nj=nj, job=job, asr_model=asr_model,
                              audible_threshold=audible_threshold)
    for message in messages:
        click.echo(message, err=True)
    if job is None:
        click.echo(merge_scores(out, threshold=threshold), nl=False)
    else:
        click.echo(f"job {job}/{nj} scored into {out}/parts; merge with: tsekit score merge {out}", err=True)


@score.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--threshold", type=float, default=1.0, show_default=True, help="SI-SDRi acceptance threshold (dB).")
def merge(out: str, threshold: float) -> None:
    """Join the parts of `--job J --nj N` runs in OUT into scores.tsv and RESULTS.md."""
    from tsekit.metrics.results import merge_scores

    click.echo(merge_scores(out, threshold=threshold), nl=False)
