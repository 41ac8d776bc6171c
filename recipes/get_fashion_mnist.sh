#!/usr/bin/env bash
# Make sure Fashion-MNIST's IDX files are on this machine; install them with apt where possible.
# Usage: bash recipes/get_fashion_mnist.sh [folder]   (exit 0 when the files are there)
set -u
FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
DIRS="${1:-} /usr/share/datasets/fashion-mnist ${KERAS_HOME:-$HOME/.keras}/datasets/fashion-mnist"

have_files() {
  for f in $FILES; do [ -f "$1/$f" ] || [ -f "$1/${f%.gz}" ] || return 1; done
}
for d in $DIRS; do
  if [ -n "$d" ] && have_files "$d"; then echo "Fashion-MNIST found in $d"; exit 0; fi
done

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "Installing the Debian package dataset-fashion-mnist ..."
  if $SUDO apt-get install -y dataset-fashion-mnist || { $SUDO apt-get update && $SUDO apt-get install -y dataset-fashion-mnist; }; then
    have_files /usr/share/datasets/fashion-mnist && { echo "Fashion-MNIST installed in /usr/share/datasets/fashion-mnist"; exit 0; }
  fi
fi
cat >&2 <<MSG
Fashion-MNIST not found (looked in: $DIRS) and could not be installed with apt-get.
Get the four files ($FILES) with one of:
  sudo apt-get install dataset-fashion-mnist          (Debian/Ubuntu: /usr/share/datasets/fashion-mnist)
  download them from https://github.com/zalandoresearch/fashion-mnist (data/fashion)
    into ~/.keras/datasets/fashion-mnist, or any folder and pass --data_dir=<folder>.
MSG
exit 1
