#!/bin/sh
# list-upstream-symbols.sh BUILDROOT_SRC [DEFCONFIG]
#
# Prints, in the format of upstream-symbols.txt, every BR2_* symbol that DEFCONFIG (default:
# configs/peagent_x86_64_defconfig) sets or unsets and that this tree does not define itself,
# each with the Buildroot file that defines it. Exits 1, naming them on stderr, if some symbol is
# defined nowhere: a typo, or a symbol that this Buildroot removed (a definition only in
# Config.in.legacy counts as removed). Regenerate the committed list with
#   ./list-upstream-symbols.sh "$BUILDROOT_SRC" > upstream-symbols.txt
set -eu
export LC_ALL=C

die() { echo "list-upstream-symbols.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: list-upstream-symbols.sh BUILDROOT_SRC [DEFCONFIG]"
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$1" 2>/dev/null && pwd) || die "$1: no such directory"
defconfig=${2:-$here/configs/peagent_x86_64_defconfig}
[ -f "$src/Makefile" ] && [ -f "$src/Config.in" ] && [ -d "$src/package" ] ||
    die "$src is not a Buildroot tree (no Makefile, Config.in and package/)"
[ -f "$defconfig" ] || die "$defconfig: no such file"
version=$(sed -n 's/^export BR2_VERSION *:= *//p' "$src/Makefile" | head -n 1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# A Kconfig definition: "config SYM" or "menuconfig SYM" at the start of a line.
defs_of() {
    sed -n 's/^[[:space:]]*\(menu\)\{0,1\}config[[:space:]]\{1,\}\(BR2_[A-Za-z0-9_]*\).*/\2/p' "$@"
}

sed -n -e 's/^\(BR2_[A-Za-z0-9_]*\)=.*/\1/p' \
       -e 's/^#[[:space:]]*\(BR2_[A-Za-z0-9_]*\) is not set.*/\1/p' "$defconfig" |
    sort -u > "$work/used"
find "$here" -name 'Config.in*' -type f -exec sed -n \
    's/^[[:space:]]*\(menu\)\{0,1\}config[[:space:]]\{1,\}\(BR2_[A-Za-z0-9_]*\).*/\2/p' {} + |
    sort -u > "$work/own"
comm -23 "$work/used" "$work/own" > "$work/wanted"

# Every definition in the tree as "SYM FILE", the first file in path order winning.
find "$src" \( -path "$src/output" -o -path "$src/dl" -o -name .git \) -prune -o \
    -type f -name 'Config.in*' ! -name 'Config.in.legacy' -print | LC_ALL=C sort |
    while IFS= read -r f; do
        defs_of "$f" | sed "s|\$| ${f#"$src"/}|"
    done | awk '!seen[$1]++' | LC_ALL=C sort > "$work/defs"

echo "# BR2_* symbols that configs/peagent_x86_64_defconfig sets and upstream Buildroot defines,"
echo "# each with the file that defines it. Read from Buildroot ${version:-(unknown version)}."
echo "# Regenerate: ./list-upstream-symbols.sh \"\$BUILDROOT_SRC\" > upstream-symbols.txt"
awk 'NR == FNR { want[$1] = 1; next } ($1 in want) { print }' "$work/wanted" "$work/defs"

awk '{ print $1 }' "$work/defs" | comm -23 "$work/wanted" - > "$work/missing"
if [ -s "$work/missing" ]; then
    echo "list-upstream-symbols.sh: not defined in Buildroot ${version:-at $src}:" $(cat "$work/missing") >&2
    exit 1
fi
