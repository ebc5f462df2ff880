#!/usr/bin/env bash
# Debian/Ubuntu packages tsekit needs: the TTS voices and sox for the mini
# corpus (tsekit prepare mini-libri2mix), libsndfile for soundfile; with
# --slurm also Slurm and munge, for the tests that start a real one-node
# Slurm cluster on localhost (tests/test_slurm.py); with --browser Chromium,
# which tests/test_report.py opens the results page in (headless).
#
#   tools/system_packages.sh [--slurm] [--browser]           install what is missing (as root, or through sudo)
#   tools/system_packages.sh [--slurm] [--browser] --check   exit 1 naming what is missing; installs nothing
set -euo pipefail

packages=(flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng sox libsndfile1)
slurm_packages=(slurmctld slurmd slurm-client munge)
browser_packages=(chromium)

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

check=false
given=""
for arg in "$@"; do
  case "$arg" in
    --check) check=true ;;
    --slurm) packages+=("${slurm_packages[@]}"); given="$given --slurm" ;;
    --browser) packages+=("${browser_packages[@]}"); given="$given --browser" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

missing=()
for package in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done

if "$check"; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing Debian packages: ${missing[*]} (install them with: sudo $0$given)" >&2
    exit 1
  fi
  echo "all system packages installed: ${packages[*]}"
  exit 0
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "all system packages installed: ${packages[*]}"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "apt-get not found: install these packages with your system's package manager: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "not root and no sudo: as root, run: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
