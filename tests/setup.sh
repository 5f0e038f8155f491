#!/usr/bin/env bash
# Installs the Debian packages loupe needs to build and test. Idempotent: packages already present
# are not reinstalled, so running it twice costs a few seconds.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config git ca-certificates
  libpcre2-dev           # tokenizer pre-tokenizer regex (UTF + UCP, JIT)
  libncurses-dev         # TUI (ncursesw)
  libcurl4-openssl-dev   # URL ingestion
  libjson-c-dev          # tokenizer.json import
  libpoppler-glib-dev    # PDF → text
  libxml2-dev            # HTML → text
  libcairo2-dev          # tests make their own PDFs
  clang libclang-rt-14-dev libomp-dev  # libFuzzer target, sanitizers (OpenMP under clang)
  python3                # loopback HTTP server in tests
  tmux                   # TUI tests drive the real binary
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# node + npm run the tokenizer parity reference; a machine may carry them outside Debian's
# packages (nodesource), whose nodejs bundles npm and conflicts with Debian's npm package.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  [ ${#missing[@]} -gt 0 ] || $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends nodejs npm
fi
echo "setup: all ${#pkgs[@]} packages present"
