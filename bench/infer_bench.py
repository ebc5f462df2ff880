"""Real-time factor of each system, and whether data loading limits training.

    .venv/bin/python bench/infer_bench.py [--work DIR] [--device cpu|cuda] [--steps 20]
        [--conf-dir egs/libri2mix/conf] [--systems a,b] [--repeats 3] [--seconds 4] [--no-training]

(a) RTF (compute seconds / audio seconds, lower is faster) of every extraction
    system at its published size (the model section of egs/libri2mix/conf/<system>.yaml;
    --conf-dir egs/mini_libri2mix/conf for the demo sizes) on a 4 s mixture with 4 s
    enrollments (a clean one, or a positive and a negative one), best of --repeats after
    a warm-up run (none with --repeats 1), on the chosen device. The diffusion systems'
    RTF includes all their network evaluations (ddtse: 11, its score-model baseline: 60);
(b) training steps per second of the demo config (egs/mini_libri2mix/conf/zspex.yaml)
    on the mini corpus: the dataloader alone versus the full step (load, forward,
    backward, update), measured in the same run; their ratio says how much of a
    step is data loading.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tsekit.train.config import ExperimentConfig

REPO = Path(__file__).resolve().parent.parent


def real_time_factor(cfg: ExperimentConfig, device: torch.device, seconds: float = 4.0,
                     repeats: int = 3) -> tuple[float, int]:
    from tsekit.models.registry import build_model

    model = build_model(cfg.model.name, cfg.model.params).to(device).eval()

    def signal() -> torch.Tensor:
        return torch.randn(1, int(seconds * cfg.data.sample_rate), device=device) * 0.1

    mixture = signal()
    enrollments = {key: signal() for key in model.needs if key.startswith("enroll")}
    if repeats > 1:
        model.extract_enrolled(mixture, enrollments)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.extract_enrolled(mixture, enrollments)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / seconds, sum(p.numel() for p in model.parameters())


def training_rates(work: Path, steps: int, device: torch.device) -> tuple[float, float]:
    """(dataloader-only steps/s, full training steps/s) with the demo's zspex config."""
    from tsekit.corpora.librimix import prepare_libri2mix
    from tsekit.corpora.mini_librimix import make_mini_libri2mix
    from tsekit.data.dataset import TSEDataset, collate
    from tsekit.data.enroll import enroll_data_dir
    from tsekit.models.registry import build_model
    from tsekit.train.config import load_config
    from tsekit.train.losses import compute_loss
    from tsekit.train.trainer import EpochSampler, make_optimizer, training_speakers

    data = work / "data" / "train-100"
    if not (data / "wav.scp").is_file():
        make_mini_libri2mix(work / "mini", size="small", jobs=2)
        prepare_libri2mix(work / "mini" / "Libri2Mix", work / "data", mixture="mix_both", splits=("train-100",))
    if not (data / "spk2enroll").is_file():
        enroll_data_dir(data)
    cfg = load_config(REPO / "egs" / "mini_libri2mix" / "conf" / "zspex.yaml", [])
    speakers = training_speakers(data)
    model = build_model(cfg.model.name, {**cfg.model.params, "num_speakers": len(speakers)}).to(device)
    dataset = TSEDataset(data, model.needs, cfg.data.sample_rate, train=True, chunk_seconds=cfg.data.chunk_seconds,
                         enroll=cfg.data.enroll, enroll_seconds=cfg.data.enroll_seconds, speakers=speakers)
    optimizer = make_optimizer(cfg, model.parameters())

    def loader():
        sampler = EpochSampler(len(dataset), 0, 0, True, 0, 1, cfg.data.batch_size)
        return torch.utils.data.DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=sampler,
                                           num_workers=cfg.data.num_workers, collate_fn=collate, drop_last=True)

    def run(train_step: bool) -> float:
        start, done = time.perf_counter(), 0
        for batch in loader():
            if train_step:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                loss, _ = compute_loss(model(batch), batch, cfg.loss)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            done += 1
            if done == steps:
                break
        return done / (time.perf_counter() - start)

    return run(False), run(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--conf-dir", type=Path, default=REPO / "egs" / "libri2mix" / "conf")
    parser.add_argument("--systems", default="", help="comma list of config names; default: every system")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--no-training", action="store_true", help="skip (b)")
    args = parser.parse_args()
    device = torch.device(args.device)
    from tsekit.models.registry import model_class
    from tsekit.train.config import load_config

    print(f"(a) real-time factor on {device} ({torch.get_num_threads()} threads), {args.seconds:g} s mixture + "
          f"{args.seconds:g} s enrollments, sizes of {args.conf_dir}; best of {args.repeats}")
    print(f"{'system':<24} {'parameters':>11} {'RTF':>7}")
    wanted = set(filter(None, args.systems.split(",")))
    for config in sorted(args.conf_dir.glob("*.yaml")):
        if wanted and config.stem not in wanted:
            continue
        cfg = load_config(config, [])
        if "target" not in model_class(cfg.model.name).needs:
            continue  # not an extraction system (the pos/neg systems' distillation teacher)
        rtf, parameters = real_time_factor(cfg, device, args.seconds, args.repeats)
        print(f"{config.stem:<24} {parameters / 1e6:10.2f}M {rtf:7.3f}", flush=True)
    if args.no_training:
        return
    loading, full = training_rates(args.work, args.steps, device)
    print(f"\n(b) training on the mini corpus, egs/mini_libri2mix/conf/zspex.yaml, {args.steps} steps")
    print(f"dataloader alone: {loading:7.2f} steps/s")
    print(f"full step:        {full:7.2f} steps/s   (loading alone is {loading / full:.1f}x faster than a full step: "
          f"it takes about {100 * full / loading:.0f}% of a step)")


if __name__ == "__main__":
    main()
