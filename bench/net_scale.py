"""Why DDTSE has ``net_scale``: how fast a small NCSN++ learns the identity on compressed spectrograms.

    .venv/bin/python bench/net_scale.py DATA [--steps 300] [--scales 1,6.667]

The compressed spectrograms DDTSE diffuses over (``0.15 |X|^0.5``, waveforms at unit peak) have values of
about 0.1-0.3. For each scale, the same U-Net (the mini recipe's: nf 8, four levels, 4 input channels),
from the same initialisation and on the same batches (1 s of DATA's spk1.scp targets), is trained to
reproduce its input multiplied by the scale; the table gives the SI-SDR of the waveform of its output
(divided by the scale again) on 8 held-out targets every 100 steps. Scale 1 is the authors' setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from tsekit.data.audio import load_audio
    from tsekit.data.table import read_table, sorted_keys
    from tsekit.metrics.sdr import si_sdr
    from tsekit.models.layers.diffusion import CompressedSTFT
    from tsekit.models.layers.ncsnpp import NCSNpp

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--scales", default="1,6.667")
    args = parser.parse_args()

    targets = read_table(args.data / "spk1.scp")
    wavs = []
    for utt in sorted_keys(targets)[:64]:
        samples = torch.from_numpy(load_audio(targets[utt])[0][:16000].astype(np.float32))
        wavs.append(torch.nn.functional.pad(samples, (0, 16000 - len(samples))))
    wavs = torch.stack(wavs)
    wavs = wavs / wavs.abs().amax(-1, keepdim=True)
    stft = CompressedSTFT()
    spectrograms = stft(wavs)
    train, held_out = spectrograms[:56], spectrograms[56:]
    print(f"SI-SDR (dB) of the reconstructed held-out targets; {args.steps} steps of batch 8")
    print(f"{'net_scale':>9} " + " ".join(f"{f'step {s}':>9}" for s in range(0, args.steps + 1, 100)))
    for scale in map(float, args.scales.split(",")):
        torch.manual_seed(0)
        net = NCSNpp(4, 2, nf=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(), cond_dim=0)
        optimizer = torch.optim.Adam(net.parameters(), 2e-3)
        batches = torch.Generator().manual_seed(1)
        row = []
        for step in range(args.steps + 1):
            x = train[torch.randint(0, len(train), (8,), generator=batches)]
            loss = (net(torch.cat([x, x], 1) * scale) / scale - x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 100 == 0:
                with torch.no_grad():
                    out = stft.inverse(net(torch.cat([held_out, held_out], 1) * scale) / scale, 16000)
                row.append(np.mean([si_sdr(o.numpy(), w.numpy()) for o, w in zip(out, wavs[56:], strict=True)]))
        print(f"{scale:9.3f} " + " ".join(f"{v:9.2f}" for v in row), flush=True)


if __name__ == "__main__":
    main()
