#!/bin/sh
# Runs one test binary (plain or sanitizer build), shows its output, and records its closing
# "N passed, N failed" line in build/test-counts for tests/summary.sh.
bin=$1; tag=$2
mkdir -p build
echo "== tests ($tag)"
"$bin" > build/test-$tag.out; rc=$?
cat build/test-$tag.out
tail -n 1 build/test-$tag.out | sed "s/^/$tag: /" >> build/test-counts
exit $rc
