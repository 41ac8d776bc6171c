#!/usr/bin/env bash
# Sets up ./.venv with keras-skipblock installed (editable) and, where apt-get
# is available, the Debian packages the project uses offline: python3-venv and
# dataset-fashion-mnist (Fashion-MNIST's IDX files under /usr/share/datasets).
# Usage: tools/bootstrap.sh          # the package
#        tools/bootstrap.sh test     # the package and its test extras
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "test" ] && extras="[test]"

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
  fi
  need=()
  python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
  if [ ${#need[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${need[*]}"
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" \
      || echo "bootstrap: could not install ${need[*]}; see README (Data) for other ways to get Fashion-MNIST." >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
echo "bootstrap: ready (.venv/bin/python)"
