#!/usr/bin/env bash
# Miri over ringside's unsafe code (docs/security.md, "Miri"): core's guest
# memory (the RAM mapping, the host pointers of RAM, ROM and monitor
# pages), the software TLB and its fast paths through host pointers, the
# generated-code ABI's published TLB rule, and the KVM engine's copies of
# ROM slots in an anonymous mapping (the ioctls themselves, and the 4 GiB
# scan of the slot planner, which has no unsafe code, are not Miri's to
# run). Installs Miri on the nightly toolchain when it is
# missing.
#
# usage: scripts/miri.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup component add miri rust-src --toolchain nightly
fi
cargo +nightly miri setup >/dev/null
# Isolation off: vm-memory maps guest RAM with mmap, which Miri emulates
# for anonymous mappings; nothing else reaches the host.
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-disable-isolation"
cargo +nightly miri test -p ringside-core --lib -- memory:: mmu:: abi:: cpu::boundary::
cargo +nightly miri test -p ringside-kvm --lib -- slots::tests::rom_slots
