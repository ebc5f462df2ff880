"""Print the pip requirements of tsekit and the chosen extras, one per line.

    python tools/requirements.py setup.cfg asr,metrics             normal requirements
    python tools/requirements.py setup.cfg asr,metrics --no-deps-only

Packages whose declared dependencies cannot be installed as declared here are
split out (see tools/install.sh for why each one is on the list); the second
form prints only those, for `pip install --no-deps`.
"""

import configparser
import re
import sys

# name -> why it is installed without its declared dependencies
NO_DEPS = {
    "openai-whisper": "requires triton, used only by its CUDA kernels",
    "torchaudio": "its wheel's compiled extension is CUDA-only; the Python parts suffice",
    "encodec": "requires torchaudio, whose wheel pins another torch release",
    "vocos": "requires torchaudio, as encodec does",
    "descript-audio-codec": "requires torchaudio, as encodec does, and descript-audiotools",
    "descript-audiotools": "pins protobuf < 3.20, which the ONNX models of scoring cannot load, and pulls IPython, "
                           "librosa, matplotlib, ...: the dac extra lists what it imports",
}
# Installed --no-deps when their extra is chosen; not in setup.cfg because a
# plain `pip install tsekit[metrics]` would pull webrtcvad, which fails to import.
EXTRA_NO_DEPS = {"metrics": ["resemblyzer==0.1.4"]}


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def requirements(setup_cfg: str, extras: list[str]) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in extras:
        if extra not in cfg["options.extras_require"]:
            sys.exit(f"requirements.py: unknown extra {extra!r} in {setup_cfg}")
        lines += cfg["options.extras_require"][extra].splitlines()
    seen, out = set(), []
    for line in (line.strip() for line in lines):
        if line and not line.startswith("#") and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def main() -> None:
    setup_cfg, extras = sys.argv[1], [e for e in sys.argv[2].split(",") if e]
    reqs = requirements(setup_cfg, extras)
    if "--no-deps-only" in sys.argv:
        chosen = [r for r in reqs if name_of(r) in NO_DEPS]
        chosen += [r for extra in extras for r in EXTRA_NO_DEPS.get(extra, [])]
    else:
        chosen = [r for r in reqs if name_of(r) not in NO_DEPS]
    print("\n".join(chosen))


if __name__ == "__main__":
    main()
