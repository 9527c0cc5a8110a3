#!/usr/bin/env bash
# CI smoke run of the asv suite: every benchmark must still import and run once.
#
#     asv_benchmarks/ci_smoke.sh [PYTHON] [extra `asv run` arguments, e.g. -b training]
#
# PYTHON (default: python3) is an interpreter with fastbp, asv and threadpoolctl installed
# (pip install -e ".[bench]" threadpoolctl), plus torch / jax for their peer benchmarks (skipped
# without them). Offline: asv builds nothing and clones nothing (`--python=same` runs against
# the fastbp installed in PYTHON), and nothing is written to the source tree (the results,
# which `--quick` does not keep anyway, go to a temporary folder).
#
# Steps: `asv check` (the suite imports, signatures and params are valid), then
# `asv run --quick` under the fast profile (FASTBP_ASV_PROFILE=fast unless set otherwise:
# small grids, one sample each). Exit status 1 when either fails or any benchmark (any parameter combination) fails;
# asv itself exits with 2 then, and the log is searched for failures as well.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${1:-python3}"
shift || true

if ! "$python" -c "import asv, threadpoolctl, fastbp" 2>/dev/null; then
    echo "ci_smoke: $python needs asv, threadpoolctl and fastbp installed" >&2
    "$python" -c "import asv, threadpoolctl, fastbp" || true
    exit 1
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/fastbp-asv-smoke.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# The project's configuration, with every output folder in $tmp.
"$python" - "$here" "$tmp" <<'EOF'
import json, os, sys
from asv import util
here, tmp = sys.argv[1:3]
conf = util.load_json(os.path.join(here, "asv.conf.json"), js_comments=True)
conf.update(repo=os.path.dirname(here), benchmark_dir=os.path.join(here, "benchmarks"),
            env_dir=os.path.join(tmp, "env"), results_dir=os.path.join(tmp, "results"),
            html_dir=os.path.join(tmp, "html"))
with open(os.path.join(tmp, "asv.conf.json"), "w") as fh:
    json.dump(conf, fh, indent=2)
EOF

export FASTBP_ASV_PROFILE="${FASTBP_ASV_PROFILE:-fast}"
asv=("$python" -m asv --config "$tmp/asv.conf.json")
machine=fastbp-smoke   # an entry of its own in ~/.asv-machine.json, made without questions

cd "$here"
echo "=== asv check (fastbp $("$python" -c 'import fastbp; print(fastbp.__version__)'), $("$python" -m asv --version))"
"${asv[@]}" check --python=same

echo "=== asv run --quick, profile $FASTBP_ASV_PROFILE"
"${asv[@]}" machine --yes --machine "$machine" > /dev/null
start=$SECONDS
set +e
"${asv[@]}" run --python=same --quick --show-stderr --machine "$machine" --durations 10 "$@" \
    2>&1 | tee "$tmp/run.log"
status=${PIPESTATUS[0]}
set -e
echo "=== asv run took $((SECONDS - start)) s, exit status $status"

# Belt and braces: asv marks a benchmark whose process failed "failed" and one whose suite did
# not import "asv: benchmark suite import failed".
failed="$(grep -E '^\[ *[0-9.]+%\] ··· .* failed$|benchmark suite import failed|Traceback' \
    "$tmp/run.log" || true)"
if [ "$status" -ne 0 ] || [ -n "$failed" ]; then
    echo "ci_smoke: FAILED (asv exit status $status)" >&2
    [ -n "$failed" ] && echo "$failed" >&2
    exit 1
fi
if ! grep -qE '^\[ *[0-9.]+%\] ··· .* ok$' "$tmp/run.log"; then
    echo "ci_smoke: FAILED: no benchmark ran" >&2
    exit 1
fi
echo "ci_smoke: every benchmark ran"
