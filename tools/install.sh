#!/usr/bin/env bash
# Create a virtual environment with tsekit and its extras, torch pinned first.
#
#   tools/install.sh VENV [EXTRAS]        e.g. tools/install.sh .venv asr,codec,dac,docs,metrics,report,test
#
# Order matters:
#  1. torch==2.13.0 from tools/constraints.txt, before anything that depends on
#     it (plain `torch` would pull a multi-GB CUDA build); every later pip call
#     passes the same constraints so torch is never replaced.
#  2. The requirements of tsekit and the chosen extras, except the packages in
#     NO_DEPS below, which are installed with --no-deps because their declared
#     dependencies do not work here: openai-whisper wants triton (about 1 GB,
#     used only by its CUDA kernels), torchaudio's wheel carries a CUDA
#     extension, resemblyzer wants webrtcvad (fails to import; we use
#     webrtcvad-wheels, which provides the same module).
#  3. With CPU torch, torchaudio's compiled extension is removed so that its
#     pure-Python parts (resample, MelSpectrogram, kaldi fbank) import. With
#     CUDA torch nothing is pruned and triton is installed.
set -euo pipefail

venv=${1:-.venv}
extras=${2:-asr,codec,dac,docs,metrics,report,test}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
constraints="$here/constraints.txt"
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check -c "$constraints")
[ -d /opt/wheels ] && pip+=(--find-links /opt/wheels)

echo "[install] torch (pinned by $constraints)"
"${pip[@]}" "$(grep -E '^torch==' "$constraints")"

echo "[install] requirements of tsekit[$extras]"
mapfile -t reqs < <("$py" "$here/requirements.py" "$root/setup.cfg" "$extras")
[ ${#reqs[@]} -eq 0 ] || "${pip[@]}" "${reqs[@]}"

cuda=$("$py" -c 'import torch; print(int(torch.version.cuda is not None))')
mapfile -t nodeps < <("$py" "$here/requirements.py" "$root/setup.cfg" "$extras" --no-deps-only)
if [ ${#nodeps[@]} -gt 0 ]; then
  echo "[install] without dependencies: ${nodeps[*]}"
  "${pip[@]}" --no-deps "${nodeps[@]}"
  if [ "$cuda" = 1 ] && printf '%s\n' "${nodeps[@]}" | grep -q '^openai-whisper'; then
    "${pip[@]}" triton
  fi
fi

if [ "$cuda" = 0 ]; then
  "$py" "$here/prune_torchaudio.py"
fi

echo "[install] tsekit (editable)"
"${pip[@]}" --no-deps -e "$root"
"$venv/bin/tsekit" --version
