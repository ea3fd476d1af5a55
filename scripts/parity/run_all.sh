#!/usr/bin/env bash
# Runs the side-by-side scripts in order and prints each one's verdict line (README.md beside this file).
#   PARITY_WORK (default ./parity-work), XARES_SRC (default ./xares-llm): see kit.py.
#   PYTHON (default: python; may carry a prefix, e.g. "nice -n 10 python").
#   SCRIPTS (default: every script below; name a subset to run fewer).
#   LOSS_ARGS (default "--decoder both"), GENERATE_ARGS (default "--decoder tiny"), STATE_ARGS (default "--steps 10"),
#   ORDER_ARGS (default "--steps 2000"), RANKS_ARGS (default "--steps 200").
# Each script's stdout goes to $PARITY_WORK/out/<script>.out, stderr to <script>.err. Exit status 1 when any
# script missed a target or failed.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "$HERE/../.." && pwd)"
export PARITY_WORK="$(realpath -m "${PARITY_WORK:-./parity-work}")"
export XARES_SRC="$(realpath -m "${XARES_SRC:-./xares-llm}")"
PYTHON="${PYTHON:-python}"
SCRIPTS="${SCRIPTS:-metrics_side_by_side inputs_side_by_side mixture_weights compare_yamls loss_side_by_side encoder_state_side_by_side generate_side_by_side data_order_side_by_side ranks_order_side_by_side}"
LOSS_ARGS="${LOSS_ARGS:---decoder both}"
GENERATE_ARGS="${GENERATE_ARGS:---decoder tiny}"
STATE_ARGS="${STATE_ARGS:---steps 10}"
ORDER_ARGS="${ORDER_ARGS:---steps 2000}"
RANKS_ARGS="${RANKS_ARGS:---steps 200}"

fail() { echo "run_all.sh: $*" >&2; exit 1; }
[ -f "$XARES_SRC/src/xares_llm/__init__.py" ] || fail "XARES_SRC=$XARES_SRC holds no src/xares_llm: extract commit 105be68 there (README.md)"
[ -f "$PARITY_WORK/shim/torchaudio/functional.py" ] || fail "no torchaudio stand-in in $PARITY_WORK/shim: run $PYTHON $HERE/make_shim.py"
[ -f "$PARITY_WORK/tinydec/config.json" ] || fail "no tiny decoder in $PARITY_WORK/tinydec: run $PYTHON $HERE/make_decoders.py"
[ -f "$PARITY_WORK/demo/train.yaml" ] || fail "no demo shards in $PARITY_WORK/demo: run lalmbench demo --data-only $PARITY_WORK/demo"

# the torchaudio stand-in first (the published system imports torchaudio), this folder (kit, parity_encoders),
# the published source, then this checkout's source
export PYTHONPATH="$PARITY_WORK/shim:$HERE:$XARES_SRC/src:$PROJECT/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="$PARITY_WORK/out"
mkdir -p "$OUT" "$PARITY_WORK/run"
cd "$PARITY_WORK/run"  # the published system writes ./xares_data into the working directory
$PYTHON -c "import lalmbench, xares_llm, torchaudio; print('lalmbench', lalmbench.__file__); print('xares_llm', xares_llm.__file__); print('torchaudio', torchaudio.__file__)" || fail "imports failed"
git -C "$PROJECT" log -1 --format='project at %h %s' 2>/dev/null
[ -z "$(git -C "$PROJECT" status --porcelain -- src 2>/dev/null)" ] || echo "(with uncommitted changes under src/)"

status=0; summary=""
for script in $SCRIPTS; do
  case "$script" in
    loss_side_by_side) args="$LOSS_ARGS" ;;
    generate_side_by_side) args="$GENERATE_ARGS" ;;
    encoder_state_side_by_side) args="$STATE_ARGS" ;;
    data_order_side_by_side) args="$ORDER_ARGS" ;;
    ranks_order_side_by_side) args="$RANKS_ARGS" ;;
    compare_yamls) args="$XARES_SRC" ;;
    *) args="" ;;
  esac
  echo "=================== $script $args"
  start=$SECONDS
  # shellcheck disable=SC2086
  $PYTHON "$HERE/$script.py" $args 2> "$OUT/$script.err" | tee "$OUT/$script.out"
  rc=${PIPESTATUS[0]}
  verdict="$(grep -E '^#####.*(met|missed)|pairs compared' "$OUT/$script.out" | tail -1)"
  [ "$rc" = 0 ] || { status=1; [ -n "$verdict" ] || verdict="failed: see $OUT/$script.err"; }
  summary="$summary$script: exit $rc, $((SECONDS - start)) s; ${verdict#\#\#\#\#\# }"$'\n'
done
echo "=================== summary"
printf "%s" "$summary"
exit $status
