#!/bin/sh
# Bounded fuzzing with libFuzzer + ASan + UBSan.
#
#   sh tests/fuzz/run.sh CLANG SECONDS [TARGET...]
#
# TARGET is a name like fuzz_safetensors (or a path tests/fuzz/fuzz_safetensors.c); with none, every
# tests/fuzz/fuzz_*.c is run. Each target is built with the whole library (src/*/*.c except
# src/cli/main.c) into build-fuzz/<target>, its seed corpus is made in build-fuzz/corpus-<target>/
# (files from tests/fuzz/corpus/<target>/ if that folder exists, plus whatever the binary writes when
# run with ZL_FUZZ_WRITE_SEEDS=<dir>: a target opts in by handling that in LLVMFuzzerInitialize),
# then it is fuzzed for SECONDS seconds. A crash, leak, sanitizer report, timeout or build failure
# fails the target; the reproducer is left as build-fuzz/<target>-crash-* (or -leak-, -timeout-, ...).
#
# Ends with "fuzz: N passed, M failed", also appended to build/test-counts for tests/summary.sh, and
# exits non-zero when any target failed. Without clang or libFuzzer it says "skipped" and exits 0.

CLANG=${1:-clang}
SECS=${2:-20}
[ $# -ge 2 ] && shift 2 || shift $#
case "$SECS" in ''|*[!0-9]*) SECS=20 ;; esac
[ "$SECS" -gt 0 ] || SECS=1

OUT=build-fuzz
mkdir -p build "$OUT"

record() { # passed failed [note]
    echo "fuzz: $1 passed, $2 failed$3"
    echo "fuzz: $1 passed, $2 failed$3" >> build/test-counts
}

if [ $# -eq 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do [ -f "$f" ] && set -- "$@" "$f"; done
fi
if [ $# -eq 0 ]; then
    echo "fuzz: skipped (no tests/fuzz/fuzz_*.c targets)"
    record 0 0 " (skipped: no targets)"
    exit 0
fi

# --- can we build libFuzzer binaries at all?
if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "fuzz: skipped ('$CLANG' not found; install clang to fuzz)"
    record 0 0 " (skipped: no clang)"
    exit 0
fi
PROBE=$OUT/probe
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' > "$PROBE.c"
if ! "$CLANG" -fsanitize=fuzzer,address,undefined "$PROBE.c" -o "$PROBE" > "$PROBE.log" 2>&1; then
    echo "fuzz: skipped ('$CLANG' cannot build libFuzzer+ASan+UBSan binaries; see $PROBE.log)"
    record 0 0 " (skipped: no libFuzzer)"
    exit 0
fi
OMP=-fopenmp
if ! "$CLANG" -fsanitize=fuzzer,address,undefined -fopenmp "$PROBE.c" -o "$PROBE" >> "$PROBE.log" 2>&1; then
    echo "fuzz: note: '$CLANG' cannot link -fopenmp; building without OpenMP"
    OMP=
fi
rm -f "$PROBE" "$PROBE.c"

LIB_SRC=$(ls src/*/*.c | grep -v '^src/cli/main\.c$')
CFLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread -D_GNU_SOURCE -std=c11"
# libraries and defines come from the Makefile (FUZZ_LIBS / FUZZ_DEFS) so they never drift apart
LIBS="${FUZZ_LIBS:--lcjson -lpcre2-8 -lutf8proc -lpng -ljpeg -lwebp -llapacke -lopenblas -lm -lpthread} $OMP"
CFLAGS="$CFLAGS ${FUZZ_DEFS:-}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

passed=0
failed=0
for arg in "$@"; do
    t=$(basename "$arg" .c)
    src=tests/fuzz/$t.c
    bin=$OUT/$t
    log=$OUT/$t.log
    if [ ! -f "$src" ]; then
        echo "fuzz: $t: FAILED (no $src)"
        failed=$((failed + 1))
        continue
    fi
    echo "== fuzz $t (${SECS}s)"
    # shellcheck disable=SC2086
    if ! "$CLANG" $CFLAGS $OMP -o "$bin" "$src" $LIB_SRC $LIBS > "$OUT/$t.build.log" 2>&1; then
        cat "$OUT/$t.build.log"
        echo "fuzz: $t: FAILED (build)"
        failed=$((failed + 1))
        continue
    fi
    corpus=$OUT/corpus-$t
    mkdir -p "$corpus"
    if [ -d "tests/fuzz/corpus/$t" ]; then cp tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null; fi
    ZL_FUZZ_WRITE_SEEDS=$corpus "$bin" -runs=0 "$corpus" > "$OUT/$t.seeds.log" 2>&1 || true
    nseeds=$(ls "$corpus" | wc -l)
    "$bin" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 -timeout=30 \
        -artifact_prefix="$OUT/$t-" -print_final_stats=1 "$corpus" > "$log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz: $t: FAILED (exit $rc; reproducer: $(ls "$OUT/$t"-* 2>/dev/null | grep -v '\.log$' | head -n 1); log: $log)"
        failed=$((failed + 1))
        continue
    fi
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    echo "fuzz: $t: ok (${runs:-?} runs, $nseeds seeds, corpus now $(ls "$corpus" | wc -l) files)"
    passed=$((passed + 1))
done

record "$passed" "$failed"
[ "$failed" -eq 0 ]
