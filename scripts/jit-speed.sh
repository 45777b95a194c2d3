#!/usr/bin/env bash
# The recompiler's speed as ratios measured in one run (the machines are
# shared and noisy: A and B alternate, ROUNDS times each, and the ratio of
# the medians is printed). Compares `builtin:bench-int` (427.5 million
# instructions) on interp, on jit, and under qemu-system-i386 -kernel (TCG)
# on the exported image when QEMU is installed (skipped with a reason
# otherwise). Also prints jit's compile time as a share of its wall time.
#
# usage: scripts/jit-speed.sh [ROUNDS] [GUEST]     (default: 5 bench-int)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
guest=${2:-bench-int}
cargo build --release -q
bin=target/release/ringside
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" guests --export "$tmp" >/dev/null

wall() { # engine -> wall seconds and compile seconds, from --stats
    "$bin" run "builtin:$guest" --engine "$1" --clock fast --stats 2>&1 >/dev/null | tail -1 |
        python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); c=d["counters"]; print(d["wall_s"], c.get("compile_us_total", 0) / 1e6, d["instructions"])'
}
qemu_wall() {
    local s e
    s=$(date +%s.%N)
    qemu-system-i386 -kernel "$tmp/$guest.elf" -serial null -display none -monitor none \
        -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4 >/dev/null 2>&1 || true
    e=$(date +%s.%N)
    python3 -c "print($e - $s)"
}
have_qemu=1
command -v qemu-system-i386 >/dev/null 2>&1 || { have_qemu=0; echo "qemu: skipped: qemu-system-i386 is not installed"; }

: >"$tmp/interp"; : >"$tmp/jit"; : >"$tmp/qemu"; : >"$tmp/compile"
for r in $(seq "$rounds"); do
    read -r w _ n < <(wall interp); echo "$w" >>"$tmp/interp"
    read -r w c _ < <(wall jit); echo "$w" >>"$tmp/jit"; echo "$c $w" >>"$tmp/compile"
    if [ "$have_qemu" = 1 ]; then qemu_wall >>"$tmp/qemu"; fi
done
python3 - "$tmp" "$n" "$have_qemu" <<'PY'
import statistics, sys
tmp, n, have_qemu = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
runs = lambda f: [float(l) for l in open(f"{tmp}/{f}") if l.strip()]
med = lambda f: statistics.median(runs(f))
i, j = med("interp"), med("jit")
print(f"instructions: {n}")
print(f"interp: {i:.3f} s ({n / i / 1e6:.0f} M/s)   jit: {j:.3f} s ({n / j / 1e6:.0f} M/s)   jit/interp speed: {i / j:.2f}x")
# The fastest run of each is the one the machine disturbed least.
print(f"best runs: interp {min(runs('interp')):.3f} s, jit {min(runs('jit')):.3f} s: {min(runs('interp')) / min(runs('jit')):.2f}x")
comp = [tuple(map(float, l.split())) for l in open(f"{tmp}/compile")]
print(f"jit compile time (CPU time of the compiling thread): {statistics.median(c / w for c, w in comp) * 100:.1f}% of its wall time")
if have_qemu:
    q = med("qemu")
    print(f"qemu -kernel (TCG, including its start-up): {q:.3f} s   jit/qemu speed: {q / j:.2f}x (best runs: {min(runs('qemu')) / min(runs('jit')):.2f}x)")
PY
