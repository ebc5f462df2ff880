"""How good is a pos/neg system's distilled cue, and how much does it hold the extractor back?

    .venv/bin/python bench/posneg_cue.py --exp egs/mini_libri2mix/exp/tfgridnet_posneg_early \\
        [--teacher egs/mini_libri2mix/exp/tfgridnet_speaker] [--data egs/mini_libri2mix/data/dev] \\
        [--train-data egs/mini_libri2mix/data/train-100] [--extractor-steps 400]

(a) On crops of every other row of --data (the experiment's data.chunk_seconds / enroll_seconds), five maps of
    the positive enrollment: the student's cue (stage-1 checkpoint of --exp), the teacher's map of the NOISY
    positive, that map minus half the time-mean of the teacher's map of the negative (centred over the crops: the
    simplest comparison of the two clips, no training), a zero map, and the teacher's map of the clean positive
    (the distillation target). For each: the distillation MSE against the target, and how well the map tells
    speakers apart once averaged over time: d' = (mean cosine of same-speaker pairs - mean cosine of
    different-speaker pairs) / std of all pairs. The comparison row shows how much speaker information the two
    clips hold for a student to find, and how little the frame-level MSE rewards finding it.
(b) With --extractor-steps N (> 0): trains the extractor of the stage-1 checkpoint for N steps twice from the same
    start and seed, once on the student's cue (what recipe stage 5 does) and once on the teacher's map of the clean
    positive (an oracle cue), with the experiment's optimiser and scheduler; prints the dev SI-SDRi (dB) of both
    every 200 steps and at the end. The gap is what a better cue is worth to the extractor at this budget.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "egs" / "mini_libri2mix"
NEEDS = frozenset({"target", "enroll_pos", "enroll_neg", "enroll_clean"})


def separability(maps: torch.Tensor, speakers: list[str]) -> float:
    """d' of the time-averaged maps (B, D, T, F): same- against different-speaker cosine similarity."""
    pooled = maps.mean(2).flatten(1)
    pooled = torch.nn.functional.normalize(pooled - pooled.mean(0), dim=1)
    cosine = pooled @ pooled.T
    same = torch.tensor([[a == b for b in speakers] for a in speakers])
    other = ~torch.eye(len(speakers), dtype=torch.bool)
    return float((cosine[same & other].mean() - cosine[~same].mean()) / cosine[other].std())


def cue_report(student, teacher, cfg, data: Path) -> None:
    from tsekit.data.dataset import TSEDataset, collate
    from tsekit.data.table import read_table

    dataset = TSEDataset(data, NEEDS, cfg.data.sample_rate, train=True, chunk_seconds=cfg.data.chunk_seconds,
                         enroll_seconds=cfg.data.enroll_seconds)
    batch = collate([dataset[i] for i in range(0, len(dataset), 2)])
    utt2spk = read_table(data / "utt2spk")
    speakers = [utt2spk[utt] for utt in batch["utts"]]
    with torch.no_grad():
        target = teacher.distillation_targets(batch)["teacher_features"]
        positive = teacher.features(batch["enroll_pos"], batch["enroll_pos_lengths"])[0]
        negative = teacher.features(batch["enroll_neg"], batch["enroll_neg_lengths"])[0].mean(2, keepdim=True)
        maps = {
            "student cue": student.posneg_cue(batch["enroll_pos"], batch["enroll_pos_lengths"],
                                              batch["enroll_neg"], batch["enroll_neg_lengths"])[0],
            "teacher, noisy positive": positive,
            "teacher, positive - negative / 2": positive - 0.5 * (negative - negative.mean(0)),
            "zero map": torch.zeros_like(target),
            "teacher, clean positive (target)": target,
        }
    print(f"(a) {len(speakers)} crops of {data}, {len(set(speakers))} speakers")
    print(f"{'map of the positive':36s} {'MSE to target':>14s} {'speaker d-prime':>16s}")
    for name, value in maps.items():
        d_prime = "" if name == "zero map" else f"{separability(value, speakers):16.2f}"
        print(f"{name:36s} {float((value - target).pow(2).mean()):14.3f} {d_prime}")


def train_extractor(model, teacher, cfg, train_data: Path, dev_data: Path, steps: int, oracle: bool) -> None:
    """Print the dev SI-SDRi every 200 steps of extractor training on the student's or the oracle cue."""
    from tsekit.data.dataset import TSEDataset, collate
    from tsekit.metrics.sdr import si_sdr
    from tsekit.train.config import LossTerm
    from tsekit.train.losses import compute_loss
    from tsekit.train.trainer import make_optimizer, make_scheduler

    def cue(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            if oracle:
                return teacher.features(batch["enroll_clean"], batch["enroll_pos_lengths"])
            return model.posneg_cue(batch["enroll_pos"], batch["enroll_pos_lengths"], batch["enroll_neg"],
                                    batch["enroll_neg_lengths"])

    def dev_gain() -> float:
        model.extractor.eval()
        gains = []
        with torch.no_grad():
            for index in range(len(dev)):
                batch = collate([dev[index]])
                estimate = model.extractor(batch["mixture"].unsqueeze(1), *cue(batch))[0].numpy()
                mixture, target = batch["mixture"][0].numpy(), batch["target"][0].numpy()
                gains.append(si_sdr(estimate, target) - si_sdr(mixture, target))
        model.extractor.train()
        return sum(gains) / len(gains)

    torch.manual_seed(0)
    data = cfg.data
    train_set = TSEDataset(train_data, NEEDS, data.sample_rate, train=True, chunk_seconds=data.chunk_seconds,
                           enroll_seconds=data.enroll_seconds)
    dev = TSEDataset(dev_data, NEEDS, data.sample_rate, train=False)
    optimizer = make_optimizer(cfg, model.extractor.parameters())
    # one epoch of `steps` steps: the schedule spans the run as in the recipe's stage 5
    scheduler, _ = make_scheduler(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1)),
                                  optimizer, steps)
    loader = torch.utils.data.DataLoader(train_set, batch_size=data.batch_size, shuffle=True, num_workers=1,
                                         collate_fn=collate, drop_last=True)
    model.extractor.train()
    step, started = 0, time.perf_counter()
    while step < steps:
        for batch in loader:
            estimate = model.extractor(batch["mixture"].unsqueeze(1), *cue(batch))
            loss, _ = compute_loss({"estimate": estimate}, batch, [LossTerm("si_sdr")])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.extractor.parameters(), cfg.optim.grad_clip or float("inf"))
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            if step % 200 == 0 or step == steps:
                print(f"{'oracle' if oracle else 'student':7s} cue  step {step:5d}: dev SI-SDRi {dev_gain():+.2f} dB "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            if step >= steps:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", type=Path, required=True, help="pos/neg experiment (its stage1 is used)")
    parser.add_argument("--teacher", type=Path, default=RECIPE / "exp" / "tfgridnet_speaker")
    parser.add_argument("--data", type=Path, default=RECIPE / "data" / "dev")
    parser.add_argument("--train-data", type=Path, default=RECIPE / "data" / "train-100")
    parser.add_argument("--extractor-steps", type=int, default=0)
    args = parser.parse_args()

    from tsekit.train.experiment import load_experiment

    torch.set_num_threads(2)
    teacher, _ = load_experiment(args.teacher)
    student, cfg = load_experiment(args.exp / "stage1")
    cue_report(student, teacher, cfg, args.data)
    if args.extractor_steps > 0:
        print(f"(b) {args.extractor_steps} extractor steps from {args.exp / 'stage1'}, SI-SDR loss, "
              f"batch {cfg.data.batch_size} x {cfg.data.chunk_seconds} s")
        for oracle in (False, True):
            train_extractor(copy.deepcopy(student), teacher, cfg, args.train_data, args.data,
                            args.extractor_steps, oracle)


if __name__ == "__main__":
    main()
