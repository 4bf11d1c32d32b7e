#!/usr/bin/env bash
# Make sure Fashion-MNIST is present. Order: what fedshield already finds ($FEDSHIELD_DATA, the Debian
# package's folder, ~/.cache/fedshield); else the Debian package when apt-get is there and we are root;
# else a download of the official files into ~/.cache/fedshield.
set -euo pipefail
PY=${1:-python3}
check() { "$PY" -c "from fedshield.data import load_dataset; load_dataset('fashion_mnist', download=False)" >/dev/null 2>&1; }
check && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Fashion-MNIST: apt-get install dataset-fashion-mnist"
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || true
  check && exit 0
fi
echo "downloading Fashion-MNIST into ~/.cache/fedshield"
"$PY" -c "from fedshield.data import load_dataset; load_dataset('fashion_mnist', download=True)"
