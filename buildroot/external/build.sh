#!/bin/sh
# build.sh [OUTDIR]: builds the peagent PE from source with Buildroot and this BR2_EXTERNAL
# tree, then copies vmlinuz and initrd.zst into OUTDIR (default: build/pe-buildroot).
#
#   BUILDROOT_SRC   a Buildroot checkout (2026.02.x LTS); required
#   BR2_DL_DIR      Buildroot's download directory (default: $BUILDROOT_SRC/dl); Buildroot
#                   fetches every source it lacks, so without a network fill it beforehand
#   PEAGENT_BR_OUT  Buildroot's output directory, O= (default: build/buildroot-output)
#   PYTHON          the Python whose pip fetches this tree's sdists (default: python3)
#   JOBS            make -j (default: the number of CPUs)
set -eu

die() { echo "build.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
outdir=${1:-$repo/build/pe-buildroot}

[ -n "${BUILDROOT_SRC:-}" ] ||
    die "BUILDROOT_SRC is not set: point it at a Buildroot checkout (2026.02.x LTS), e.g." \
        "BUILDROOT_SRC=\$HOME/src/buildroot $0"
[ -f "$BUILDROOT_SRC/Makefile" ] && [ -f "$BUILDROOT_SRC/Config.in" ] &&
    [ -d "$BUILDROOT_SRC/package" ] && grep -q '^export BR2_VERSION' "$BUILDROOT_SRC/Makefile" ||
    die "BUILDROOT_SRC=$BUILDROOT_SRC is not a Buildroot tree (it needs a Makefile that sets" \
        "BR2_VERSION, a Config.in and package/)"
version=$(sed -n 's/^export BR2_VERSION *:= *//p' "$BUILDROOT_SRC/Makefile" | head -n 1)
case "$version" in
    2026.02*) ;;
    *) echo "build.sh: warning: Buildroot $version; this tree targets 2026.02.x LTS" >&2 ;;
esac

out=${PEAGENT_BR_OUT:-$repo/build/buildroot-output}
dl=${BR2_DL_DIR:-$BUILDROOT_SRC/dl}
mkdir -p "$out" "$outdir"

# The sdists of this tree's Python packages (external.mk's PEAGENT_SDIST_DIR): pip fetches those
# the download directory lacks, with the versions the .mk files name.
sdists="$out/peagent-sdist"
mkdir -p "$sdists"
for mk in "$here"/package/*/*.mk; do
    grep -q 'PEAGENT_SDIST_DIR' "$mk" || continue
    pkg=$(basename "$mk" .mk)
    var=$(echo "$pkg" | tr 'a-z-' 'A-Z_')
    pkgver=$(sed -n "s/^${var}_VERSION = //p" "$mk")
    # tenacity-$(PYTHON_TENACITY_VERSION).tar.gz -> tenacity
    project=$(sed -n "s/^${var}_SOURCE = \(.*\)-\$(${var}_VERSION)\.tar\.gz$/\1/p" "$mk")
    [ -n "$pkgver" ] && [ -n "$project" ] || die "$mk: cannot read its _VERSION and _SOURCE"
    file="$project-$pkgver.tar.gz"
    [ -f "$dl/$pkg/$file" ] || [ -f "$sdists/$file" ] && continue
    echo "build.sh: fetching $file with pip" >&2
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --no-binary :all: \
        --dest "$sdists" "$project==$pkgver" ||
        die "pip could not fetch $file: put it in $dl/$pkg/ or $sdists/"
done

jobs=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
make -C "$BUILDROOT_SRC" BR2_EXTERNAL="$here" O="$out" peagent_x86_64_defconfig
make -C "$BUILDROOT_SRC" BR2_EXTERNAL="$here" O="$out" BR2_DL_DIR="$dl" -j"$jobs"

for f in vmlinuz initrd.zst; do
    [ -f "$out/images/$f" ] || die "Buildroot finished without $out/images/$f"
    cp -f "$out/images/$f" "$outdir/$f"
done
echo "build.sh: $outdir/vmlinuz and $outdir/initrd.zst (Buildroot $version)" >&2
