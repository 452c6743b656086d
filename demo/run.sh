#!/usr/bin/env bash
# `make demo` runs this once the venv, the local cluster and the images are ready (see docs/demo.md).
# Options go to demo/demo.py: --operator auto|helm|host, --rate N.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(cluster/env.sh)"
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python demo/demo.py "$@"
