#!/usr/bin/env bash
# Install every dependency of ovseg-d2 into the Python environment given as $1 (a python executable).
# Idempotent: packages already present are kept. Works offline against the package registries only.
#
# Detectron2 has no PyPI release under its own name. In order of preference we use
#   1. an already-installed detectron2,
#   2. upstream from GitHub (when reachable),
#   3. the registry's `sal-detectron2` snapshot (a cp310-tagged pure-Python wheel, renamed to py3).
set -euo pipefail
PY=${1:?usage: install_env.sh PYTHON}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
pipi() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[install_env] torch 2.14.1 + torchvision 0.29.2"
  pipi torch==2.14.1 torchvision==0.29.2
fi

echo "[install_env] runtime and test requirements"
pipi -r "$ROOT/requirements/base.txt" -r "$ROOT/requirements/test.txt"

if ! "$PY" -c "import detectron2" 2>/dev/null; then
  if timeout 15 git ls-remote https://github.com/facebookresearch/detectron2.git HEAD >/dev/null 2>&1; then
    echo "[install_env] detectron2 from upstream"
    pipi --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'
  else
    echo "[install_env] detectron2 from the registry snapshot sal-detectron2==0.7.2"
    tmp=$(mktemp -d)
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
      --python-version 3.10 --platform any sal-detectron2==0.7.2 -d "$tmp"
    whl=$(ls "$tmp"/sal_detectron2-0.7.2-*.whl | head -n1)
    cp "$whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
    pipi --no-deps "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
    rm -rf "$tmp"
  fi
fi

# Fonts for demo overlays (ovseg_d2/utils/visualization.py): Noto for Latin/Greek/Cyrillic and CJK,
# Symbola for emoji. Optional: without them labels fall back to DejaVu Sans (with a warning).
FONT_PACKAGES="fonts-noto-core fonts-noto-cjk fonts-symbola"
if command -v fc-list >/dev/null && fc-list | grep "NotoSansCJK-Regular" >/dev/null; then  # no -q: pipefail
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[install_env] demo fonts: apt-get install $FONT_PACKAGES"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $FONT_PACKAGES >/dev/null; } \
    || echo "[install_env] WARNING: could not install $FONT_PACKAGES; demo labels fall back to DejaVu Sans"
else
  echo "[install_env] WARNING: Noto fonts missing; for CJK/emoji class names in demo overlays run" \
    "sudo apt-get install $FONT_PACKAGES (labels fall back to DejaVu Sans)"
fi

# Chromium for the web demo's browser test (tests/tools/test_web_demo.py, driven by Playwright) and its
# screenshot script; Playwright's own browser download needs a network this project does not assume.
if command -v chromium >/dev/null; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[install_env] browser for the web demo test: apt-get install chromium"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "[install_env] WARNING: could not install chromium; the web demo's browser test will fail as root"
else
  echo "[install_env] WARNING: chromium missing; for the web demo's browser test run sudo apt-get install chromium" \
    "(without it the test is skipped)"
fi

echo "[install_env] ovseg-d2 (editable)"
pipi --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c "import torch, detectron2, open_clip, ovseg_d2; print('[install_env] ok: torch', torch.__version__, '| detectron2', detectron2.__version__, '| open_clip', open_clip.__version__)"
