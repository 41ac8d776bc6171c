#!/usr/bin/env bash
# Sets up ./.venv with keras-skipblock installed (editable) and, where apt-get
# is available, the Debian packages the project uses offline: python3-venv and
# dataset-fashion-mnist (Fashion-MNIST's IDX files under /usr/share/datasets).
# Usage: tools/bootstrap.sh          # the package
#        tools/bootstrap.sh test     # the package and its test extras
#        tools/bootstrap.sh oldest   # .venv-oldest: the test extras on the oldest versions we claim
#                                    # (tools/oldest-versions.txt), where CI runs the fast tests
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
venv=.venv
constraints=()
case "${1:-}" in
  test) extras="[test]" ;;
  oldest) extras="[test]"; venv=.venv-oldest; constraints=(-c tools/oldest-versions.txt) ;;
esac

if command -v apt-get >/dev/null 2>&1 && ! python3 -c "import ensurepip, venv" 2>/dev/null; then
  sudo=""
  [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
fi
# The offline data set (the main job and some tests read it).
bash recipes/get_fashion_mnist.sh || echo "bootstrap: continuing without Fashion-MNIST" >&2

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${constraints[@]}" -e ".${extras}"
echo "bootstrap: ready ($venv/bin/python)"
