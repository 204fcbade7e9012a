#!/usr/bin/env bash
# The pipeline in CI, as iterative/cml does it: pull the data and DVC's run-cache from the remote,
# `dvc repro` (a stage runs only when its code, params or inputs changed; an earlier result of the
# same inputs is restored from the run-cache), push outputs and run-cache back, and write a
# Markdown report: which stages ran, `dvc metrics diff` and `dvc params diff` against BASE.
#
#   bash ci/pipeline.sh [BASE]        BASE: the git revision to compare with (default: origin/main)
#   env REPORT=report.md              where the report goes (`cml comment create report.md` posts it)
#   env DVC_REMOTE=name               the remote to use (default: the repository's default remote)
#   env REQUIRE_REPRODUCED=1          fail when the rerun's metrics differ from the committed ones by
#                                     more than the cross-machine tolerance (tools/check_metrics.py)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-origin/main}
REPORT=${REPORT:-report.md}
profile=$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["profile"])')
REMOTE=()
if [ -n "${DVC_REMOTE:-}" ]; then REMOTE=(--remote "$DVC_REMOTE"); fi

# Missing objects are fine on the first run of a new remote: repro computes them.
dvc pull --run-cache --allow-missing "${REMOTE[@]}"
log=$(mktemp)
dvc repro --pull --allow-missing "${REMOTE[@]}" 2>&1 | tee "$log"
dvc push --run-cache "${REMOTE[@]}"

{
  echo "## sharpkd pipeline"
  echo
  echo "Compared with \`$BASE\`."
  echo
  echo "### Stages"
  echo
  echo "| stage | what happened |"
  echo "|---|---|"
  sed -nE "s/^Running stage '([^']+)'.*/| \1 | ran |/p;
           s/^Stage '([^']+)' is cached - skipping run.*/| \1 | restored from the run-cache |/p;
           s/^Stage '([^']+)' didn't change, skipping.*/| \1 | unchanged |/p" "$log"
  echo
  echo "### Metrics"
  echo
  dvc metrics diff --md "$BASE" || echo "(no metrics to compare with $BASE)"
  echo
  echo "### Params"
  echo
  dvc params diff --md "$BASE" || echo "(no params to compare with $BASE)"
  echo
  echo "### Committed metrics reproduced?"
  echo
  echo '```'
  python tools/check_metrics.py --rev HEAD --profile "$profile" 2>&1 || true
  echo '```'
} > "$REPORT"
rm -f "$log"
echo "wrote $REPORT"
if [ "${REQUIRE_REPRODUCED:-0}" = 1 ] && ! grep -q "reproduces HEAD" "$REPORT"; then
  echo "error: the rerun does not reproduce the committed metrics/$profile (see $REPORT)" >&2
  exit 1
fi
