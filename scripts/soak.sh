#!/usr/bin/env bash
# Soak: 10 minutes of moderate mixed load (failovers included) at the gateway, its RSS sampled
# every 10 s. Not part of CI (it takes the whole 10 minutes); run it after changes that could leak
# and record the result in tuning.md.
#
# Usage: scripts/soak.sh [duration] [concurrency]   (defaults: 600s 16)
# Prints the samples, then the first- and last-minute means and the least-squares slope in MB per
# minute. Traffic goes to 127.0.0.1 only; the harness starts and stops the mock and the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-600s}"
CONCURRENCY="${2:-16}"
out="target/soak"
mkdir -p "$out"
cargo build --release --quiet --bin codex-lb
cargo build --release --quiet -p loadtest

./target/release/loadtest run --scenario mixed --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --out "$out/run.json" >"$out/run.log" 2>&1 &
harness=$!

# The gateway is the harness's child once it listens.
pid=""
for _ in $(seq 1 900); do
    pid="$(pgrep -P "$harness" -x codex-lb | head -n1 || true)"
    [ -n "$pid" ] && break
    sleep 0.2
done
if [ -z "$pid" ]; then
    echo "soak: the gateway did not start; see $out/run.log" >&2
    kill "$harness" 2>/dev/null || true
    exit 1
fi

echo "seconds,rss_kb" >"$out/rss.csv"
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$(( $(date +%s) - start )),$rss" >>"$out/rss.csv"
    sleep 10
done
wait "$harness" || { echo "soak: the load run failed; see $out/run.log" >&2; exit 1; }

cat "$out/rss.csv"
python3 - "$out/rss.csv" <<'PY'
import csv, sys
rows = [(int(r["seconds"]), int(r["rss_kb"]) / 1024) for r in csv.DictReader(open(sys.argv[1]))]
rows = [r for r in rows if r[0] >= 10]  # past start-up
if len(rows) < 3:
    sys.exit("soak: too few samples")
n = len(rows)
mx = sum(t for t, _ in rows) / n
my = sum(m for _, m in rows) / n
slope = sum((t - mx) * (m - my) for t, m in rows) / sum((t - mx) ** 2 for t, _ in rows)
first = [m for t, m in rows if t < rows[0][0] + 60]
last = [m for t, m in rows if t > rows[-1][0] - 60]
print(f"soak: {n} samples; RSS min {min(m for _, m in rows):.1f} MB, max {max(m for _, m in rows):.1f} MB")
print(f"soak: first minute {sum(first)/len(first):.1f} MB, last minute {sum(last)/len(last):.1f} MB, slope {slope*60:+.2f} MB/min")
PY
tail -n 25 "$out/run.log"
