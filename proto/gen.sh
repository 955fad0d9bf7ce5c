#!/usr/bin/env bash
# Regenerates the committed stubs of convergent.v1. Run from anywhere; needs grpcio-tools (pinned in [dev]).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python}"
"$py" -m grpc_tools.protoc -I "$here" \
  --python_out="$here" --pyi_out="$here" --grpc_python_out="$here" \
  "$here"/convergent/v1/*.proto
