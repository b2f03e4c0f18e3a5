#!/usr/bin/env bash
# Creates a virtual environment with reuters-ray and its test tools.
#
#   bash scripts/setup.sh                 # .venv, torch chosen by the machine, extras "test"
#   TORCH=cuda bash scripts/setup.sh      # force the CUDA build (e.g. building an image without a GPU)
#   TORCH=cpu  bash scripts/setup.sh      # force the CPU-only build
#   VENV=/opt/rr EXTRAS=test,keras bash scripts/setup.sh
#
# Why a script: PyPI's Linux torch wheel is the CUDA build (several GB with its nvidia-* wheels). A machine
# without an NVIDIA driver gets the CPU build from PyTorch's CPU index instead (about 200 MB). Torch goes in
# first; the package's own `torch>=2.4` is then already satisfied, so pip never pulls the other build.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-test}
TORCH=${TORCH:-auto}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if [ "$TORCH" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TORCH=cuda; else TORCH=cpu; fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip="$VENV/bin/python -m pip"

echo "setup: torch $TORCH_VERSION ($TORCH build) into $VENV"
case "$TORCH" in
  # Ask for the +cpu build by name: first from the indexes pip is already configured with (a mirror or a
  # local wheel folder may have it), else from PyTorch's CPU index.
  cpu)  $pip install -q --no-compile "torch==$TORCH_VERSION+cpu" 2>/dev/null \
          || $pip install -q --no-compile "torch==$TORCH_VERSION+cpu" --extra-index-url "$TORCH_CPU_INDEX" ;;
  cuda) $pip install -q --no-compile "torch==$TORCH_VERSION" ;;
  skip) ;;  # keep whatever torch the environment already has
  *) echo "setup: TORCH must be auto, cpu, cuda or skip, not '$TORCH'" >&2; exit 2 ;;
esac

$pip install -q --no-compile -e ".[$EXTRAS]"
# Byte-compile on every core (pip's own step compiles the ~22,000 files on one; compileall -j 0 took 57 s on 2).
# A few packages ship files that do not compile on purpose (templates, other Pythons): pip ignores them too.
$VENV/bin/python -m compileall -q -j 0 "$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true
$VENV/bin/python -c "import torch, reuters_ray; print('setup: ok, torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"
