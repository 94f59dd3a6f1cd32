#!/bin/bash
# Benchmark: PE build times (cold: empty cache; rootfs cached, agent changed; all cached) and the
# initramfs size. Uses a throwaway cache directory, so the user's cache is neither used nor
# disturbed; the cold run downloads the packages (mmdebstrap) and the kernel package.
#
#   bench/pe_build.sh            -> bench/results/pe_build.json
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cache=$(mktemp -d /var/tmp/peagent-bench-cache.XXXXXX)
out=$(mktemp -d /var/tmp/peagent-bench-pe.XXXXXX)
stamp="$top/peagent/_bench_stamp.py"
trap 'rm -rf "$cache" "$out" "$stamp"' EXIT

timed() { local t0; t0=$(date +%s.%N); "$@" > /dev/null 2>&1; awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }'; }

cold=$(PEAGENT_CACHE=$cache timed "$top/buildroot/build-pe.sh" "$out")
echo "# a change to the agent's source" > "$stamp"
repack=$(PEAGENT_CACHE=$cache timed "$top/buildroot/build-pe.sh" "$out")
cached=$(PEAGENT_CACHE=$cache timed "$top/buildroot/build-pe.sh" "$out")
initrd=$(stat -c %s "$out/initrd.zst")

cat > "$top/bench/results/pe_build.json" <<JSON
{
  "when": "$(date '+%Y-%m-%d %H:%M')",
  "cold_seconds": $cold,
  "agent_changed_seconds": $repack,
  "all_cached_seconds": $cached,
  "initrd_zst_bytes": $initrd,
  "build_info": $(cat "$out/build-info.json")
}
JSON
printf 'PE build: cold %.0f s, agent changed %.0f s, all cached %.1f s; initrd.zst %s bytes\n' \
    "$cold" "$repack" "$cached" "$initrd"
