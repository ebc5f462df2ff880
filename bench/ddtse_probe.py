"""Where a trained DDTSE stands: its first prediction, the whole sampler, the near-clean pass-through, and
whether the speaker embedding steers it.

    .venv/bin/python bench/ddtse_probe.py EXP DATA [--rows 20]

On every fourth row of DATA (up to --rows), the mean SI-SDR (dB) against spk1.scp of: the mixture; the
first prediction x0 = f(x_T, 1) alone (the sampler with no further steps); the whole sampler (``extract``);
and one refinement step from the true target at t_eps + 0.001 (how well the network passes a nearly clean
input through, the ceiling of its last step). Then, on the mixtures that hold two rows, the first
prediction for one row's target given that row's enrollment against the same given the other talker's
enrollment: equal values mean the network ignores who it is asked for. Last, the network's x0 error (mean
squared, compressed spectrogram, x 1e3) at t = 0.03, 0.3 and 1 from x_t drawn around the true target, given
the row's enrollment and a wrong one (the next row's), beside two predictions that need no network: half
the mixture (what a network that cannot tell the talkers apart should learn at t = 1) and silence.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from tsekit.data.table import read_table, sorted_keys
    from tsekit.infer.extract import load_mono
    from tsekit.metrics.sdr import si_sdr
    from tsekit.train.experiment import load_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()

    model, cfg = load_experiment(args.exp)
    rate = cfg.data.sample_rate
    tables = {name: read_table(args.data / name) for name in ("wav.scp", "spk1.scp", "enroll.scp")}
    utts = sorted_keys(tables["wav.scp"])

    def audio(name: str, utt: str) -> torch.Tensor:
        return torch.from_numpy(load_mono(tables[name][utt], f"{args.data / name}: {utt}", rate))[None]

    steps = model.steps

    def first_prediction(mixture: torch.Tensor, enroll: torch.Tensor) -> np.ndarray:
        model.steps = 0  # the sampler without its re-perturbation steps: f(x_T, 1) alone
        try:
            return model.extract(mixture, enroll)[0].numpy()
        finally:
            model.steps = steps

    def pass_through(mixture: torch.Tensor, target: torch.Tensor, enroll: torch.Tensor) -> np.ndarray:
        model.steps = 1  # one refinement step from the true target, just above t_eps
        try:
            return model.refine(mixture, {"enroll": enroll}, target, start=model.t_eps + 1e-3)[0].numpy()
        finally:
            model.steps = steps

    rows = {"mixture": [], "first prediction": [], "sampler": [], "pass-through at t_eps": []}
    for utt in utts[::4][: args.rows]:
        mixture, target, enroll = audio("wav.scp", utt), audio("spk1.scp", utt), audio("enroll.scp", utt)
        reference = target[0].numpy()
        rows["mixture"].append(si_sdr(mixture[0].numpy(), reference))
        rows["first prediction"].append(si_sdr(first_prediction(mixture, enroll), reference))
        rows["sampler"].append(si_sdr(model.extract(mixture, enroll)[0].numpy(), reference))
        rows["pass-through at t_eps"].append(si_sdr(pass_through(mixture, target, enroll), reference))
    print(f"{args.exp} on {len(rows['mixture'])} rows of {args.data}: mean SI-SDR (dB)")
    for name, values in rows.items():
        print(f"  {name:<24} {np.mean(values):7.2f}")

    by_mixture: dict[str, list[str]] = {}
    for utt, path in tables["wav.scp"].items():
        by_mixture.setdefault(path, []).append(utt)
    pairs = [sorted(group) for group in by_mixture.values() if len(group) == 2][: args.rows // 2]
    own, other = [], []
    for a, b in pairs:
        mixture, reference = audio("wav.scp", a), audio("spk1.scp", a)[0].numpy()
        own.append(si_sdr(first_prediction(mixture, audio("enroll.scp", a)), reference))
        other.append(si_sdr(first_prediction(mixture, audio("enroll.scp", b)), reference))
    print(f"first prediction on {len(pairs)} two-row mixtures, against the row's target: its own enrollment "
          f"{np.mean(own):.2f} dB, the other talker's {np.mean(other):.2f} dB")

    errors: dict[float, dict[str, list[float]]] = {}
    generator = torch.Generator().manual_seed(0)
    chosen = utts[::4][: args.rows]
    with torch.no_grad():
        for utt, wrong in zip(chosen, chosen[1:] + chosen[:1], strict=True):
            mixture, target = audio("wav.scp", utt), audio("spk1.scp", utt)
            peak = model._peaks(mixture)
            y, x0 = model.stft(mixture / peak), model.stft(target / peak)
            own_embedding = model._embed({"enroll": audio("enroll.scp", utt)})
            wrong_embedding = model._embed({"enroll": audio("enroll.scp", wrong)})
            for t in (model.t_eps, 0.3, 1.0):
                times = torch.full((1,), t)
                x_t = model.sde.perturb(x0, y, times, torch.randn(y.shape, generator=generator))
                for name, estimate in (("network", model._x0(x_t, y, times, own_embedding)),
                                       ("wrong enrollment", model._x0(x_t, y, times, wrong_embedding)),
                                       ("half the mixture", 0.5 * y), ("silence", torch.zeros_like(y))):
                    errors.setdefault(t, {}).setdefault(name, []).append(1e3 * (estimate - x0).pow(2).mean().item())
    print("x0 error x 1e3 by time: " + ", ".join(errors[1.0]))
    for t, by_name in errors.items():
        print(f"  t = {t:.2f}  " + "  ".join(f"{np.mean(values):7.3f}" for values in by_name.values()))


if __name__ == "__main__":
    main()
