#!/usr/bin/env bash
# Checks the convergent.v1 contract: `buf lint` (STANDARD, exceptions in buf.yaml) and
# `buf breaking` (FILE rules) against every released contract in released/ — the buf images
# cut at each release (docs/api.md "Releasing the contract"). Run from anywhere; needs buf
# (the pinned `buf-bin` of [dev]; BUF overrides the binary).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
buf="${BUF:-$(command -v buf || true)}"
if [ -z "$buf" ]; then
  echo "buf not found: install the dev dependencies (make install) or set BUF" >&2
  exit 2
fi
buf="$(cd "$(dirname "$buf")" && pwd)/$(basename "$buf")"
cd "$here"
"$buf" lint
released=(released/*.binpb)
if [ ! -e "${released[0]}" ]; then
  echo "no released contract in proto/released/: nothing to check breaking changes against" >&2
  exit 1
fi
for image in "${released[@]}"; do
  "$buf" breaking --against "$image"
  echo "contract: no breaking change against $image"
done
