#!/usr/bin/env bash
# Run fuzz targets one after another, each for SECONDS, from the checked-in
# seeds (fuzz/seeds/TARGET) and the local corpus (fuzz/corpus/TARGET, which
# keeps what a run finds), and print one line per target: executions,
# executions per second, coverage (libFuzzer's cov: and ft:), corpus size.
# A crash, leak or timeout stops the run with the reproducer's path
# (fuzz/artifacts/TARGET/) and a non-zero status.
#
# usage: fuzz/run.sh SECONDS [TARGET...]     (default: every target)
#   CI's smoke run:      fuzz/run.sh 20
#   the long campaign:   fuzz/run.sh 600, or split across machines by
#                        naming targets: fuzz/run.sh 600 guest_jit diff_interp_jit
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# Without compare tracing: it makes Cranelift (which the jit targets run
# for every block) about thirty times slower, and the seeds and the CRC
# framing of the state target get past the magic values it would find.
cargo +nightly fuzz build -O --no-trace-compares
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/corpus/$t.log"
    # -rss_limit_mb: a 4 MiB guest and Cranelift's code fit well inside it;
    # -timeout: no input may take 10 s (a hang is a finding).
    if ! cargo +nightly fuzz run -O --no-trace-compares "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $t failed after $(grep -c '' "$log") log lines; reproducer in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo 0)
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo 0)
    corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo 0)
    printf '%-16s %6ss %10s runs %7s exec/s  cov %6s  ft %7s  corpus %5s\n' \
        "$t" "$seconds" "$runs" "$speed" "$cov" "$ft" "$corp" | tee -a "$summary"
done
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, no crash, leak or timeout"
