#!/usr/bin/env bash
# Set up EMONAS Studio on a fresh Debian/Ubuntu machine: system libraries for Qt and VTK, a virtual
# environment in .venv, the CPU build of PyTorch, the project with its app (gui), test and Ray extras.
# GPU machines: set TORCH_SPEC (e.g. TORCH_SPEC="torch" for the default CUDA build) before running.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends \
    python3-venv libegl1 libgl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon0 libxkbcommon-x11-0 \
    libfontconfig1 libdbus-1-3 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcursor1 \
    libxrender1 libxi6 libsm6 libice6 xvfb xauth >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "${TORCH_SPEC:-torch==2.13.0}"   # CPU build by default: no multi-GB CUDA download
.venv/bin/pip install -q -e ".[gui,test,ray]"
echo "EMONAS Studio is installed in .venv"
