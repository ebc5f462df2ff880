"""Remove torchaudio's compiled extension when torch is a CPU build.

The torchaudio wheel on the registry is built against CUDA torch; with CPU
torch its extension fails to load and takes `import torchaudio` down with it.
Without the extension torchaudio falls back to its pure-Python parts
(functional.resample, transforms.MelSpectrogram, compliance.kaldi), which is
all tsekit and encodec use. Does nothing when torch has CUDA or when
torchaudio is absent or already imports.
"""

import importlib.util
import pathlib
import subprocess
import sys

import torch


def imports_cleanly() -> bool:
    probe = "import torchaudio, torchaudio.functional; torchaudio.functional.resample"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def main() -> None:
    spec = importlib.util.find_spec("torchaudio")
    if torch.version.cuda is not None or spec is None or imports_cleanly():
        return
    package = pathlib.Path(spec.origin).parent
    removed = [p for p in package.rglob("*.so")]
    for path in removed:
        path.unlink()
    print(f"[install] CPU torch: removed torchaudio's CUDA extension ({len(removed)} files)")
    if not imports_cleanly():
        sys.exit("prune_torchaudio: torchaudio still fails to import after pruning")


if __name__ == "__main__":
    main()
