#!/usr/bin/env bash
# Runs every test file through node:test + tsx. The shell expands the globs:
# node --test does not expand quoted .ts globs itself. Files run one at a
# time because the privileged ones build network namespaces and cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
files=(test/unit/*.test.ts test/integration/*.test.ts test/kube/*.test.ts bench/test/*.test.ts)
exec node --import tsx --test --test-concurrency=1 --test-timeout=600000 "${files[@]}"
