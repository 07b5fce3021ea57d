#!/usr/bin/env bash
# Fuzzes Herald's parsers of untrusted input with cargo-fuzz (libFuzzer):
#
#   scripts/fuzz.sh SECONDS [TARGET…]
#
# runs each target (all by default: command cursor channel token data
# websocket; see
# fuzz/fuzz_targets/) for SECONDS and prints one line per target: its name,
# the seconds it ran, its executions and "no finding". A crash, a failed
# property or a hang fails the script with the fuzzer's report and the input
# that did it (under fuzz/artifacts/TARGET/).
#
# The committed seeds are in fuzz/corpus/TARGET/ and are only read; what the
# fuzzer finds on top of them goes to a corpus of its own under
# $HERALD_FUZZ_DIR/corpus/TARGET, kept between runs on one machine.
# The build has its own directory ($HERALD_FUZZ_DIR/target) so it never
# invalidates the main build cache (different RUSTFLAGS).
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/fuzz.sh SECONDS [TARGET…]"
seconds=${1:?$usage}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "$usage" >&2; exit 2; }
shift
all=(command cursor channel token data websocket)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ -f fuzz/fuzz_targets/$t.rs ]] || { echo "no fuzz target $t (have: ${all[*]})" >&2; exit 2; }
done

fuzz_dir=${HERALD_FUZZ_DIR:-$HOME/.cache/herald/fuzz}
export CARGO_TERM_COLOR=never
mkdir -p "$fuzz_dir"

if ! cargo fuzz --version >/dev/null 2>&1; then
  # built in a temporary directory of cargo's, not in any build cache
  env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked
fi
export CARGO_TARGET_DIR=$fuzz_dir/target

# Stable Rust is enough: `--sanitizer none` leaves out -Zsanitizer (the only
# nightly flag cargo-fuzz adds; Herald's code is safe Rust, so the coverage
# instrumentation and debug assertions are what matter), and everything else
# cargo-fuzz passes (-Cpasses=sancov-module, -Cllvm-args=…) is stable.
fuzz=(cargo fuzz)
flags=(--sanitizer none --fuzz-dir fuzz)

# One build of the targets asked for (cargo fuzz builds one, or all), then
# no rebuild per run.
build_log=$fuzz_dir/logs/build.log
mkdir -p "$(dirname "$build_log")"
build_started=$SECONDS
build_what=()
[[ ${#targets[@]} -eq 1 ]] && build_what=("${targets[0]}")
if ! "${fuzz[@]}" build "${flags[@]}" "${build_what[@]}" >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  echo "building the fuzz targets failed (full log: $build_log)" >&2
  exit 1
fi
echo "fuzz targets built in $((SECONDS - build_started)) s"

failed=0
for t in "${targets[@]}"; do
  corpus=$fuzz_dir/corpus/$t
  log=$fuzz_dir/logs/$t.log
  mkdir -p "$corpus" "$(dirname "$log")" "fuzz/artifacts/$t"
  started=$SECONDS
  # The first corpus directory is where libFuzzer writes what it finds; the
  # committed seeds come second and are only read.
  if "${fuzz[@]}" run "${flags[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    # libFuzzer's own count: "Done 528557 runs in 20 second(s)"
    read -r runs ran < <(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 \2/p' "$log" | tail -n 1) || true
    echo "$t: ${ran:-$((SECONDS - started))} s, ${runs:-?} executions, no finding"
  else
    failed=$((failed + 1))
    echo "$t: FINDING after $((SECONDS - started)) s (full log: $log)"
    grep -E -A 30 'panicked|ERROR: libFuzzer|deadly signal|SUMMARY|Test unit written|Base64' "$log" | head -n 60 || tail -n 60 "$log"
  fi
done
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed"
[[ $failed -eq 0 ]]
