# Environment of every recipe: the tsekit of this checkout's .venv (made by
# `make install` at the top of the repository) comes first on PATH.
recipe_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
tsekit_root=$(cd "$recipe_root/../.." && pwd -P)
if [ -x "$tsekit_root/.venv/bin/tsekit" ]; then
  export PATH="$tsekit_root/.venv/bin:$PATH"
fi
if ! command -v tsekit > /dev/null; then
  echo "path.sh: no tsekit command found; run 'make install' in $tsekit_root" >&2
  exit 1
fi
export LC_ALL=C
export PYTHONUNBUFFERED=1
