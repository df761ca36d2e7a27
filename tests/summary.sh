#!/bin/sh
# Prints the closing line over every test run recorded in build/test-counts, then clears it.
[ -f build/test-counts ] || { echo "0 passed, 1 failed"; exit 1; }
cat build/test-counts
awk '{ for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f; exit f > 0 }' build/test-counts
rc=$?
rm -f build/test-counts
exit $rc
