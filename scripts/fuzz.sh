#!/bin/bash
# Runs every fuzz target for SECONDS (default 60) each with cargo-fuzz on the nightly
# toolchain, growing the committed corpora in fuzz/corpus. A crash is written to
# fuzz/artifacts/TARGET/; once fixed, copy it to fuzz/regressions/TARGET/ so that
# `cargo test` replays it for good (crates/tandem/tests/fuzz_corpora.rs).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
# A crash ends that target's run, not the campaign: every target gets its turn, and the
# script fails at the end naming the targets that crashed.
crashed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    if ! cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096; then
        crashed+=("$target")
    fi
done
if [ ${#crashed[@]} -gt 0 ]; then
    echo "crashed: ${crashed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
