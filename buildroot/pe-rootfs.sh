#!/bin/bash
# pe-rootfs.sh OUT.tar: the PE's root filesystem from Debian bookworm packages, as a tarball.
#
# mmdebstrap's "essential" variant plus buildroot/pe-packages.list (and pe-packages-windows.list
# with PEAGENT_PE_WINDOWS=1), with documentation, man
# pages, locales and the udev hardware database filtered out at unpack time. The merged-usr
# hook keeps apt from pulling usrmerge (and ~50 MB of perl). No mirror is named: mmdebstrap
# uses its default. build-pe.sh caches the result under a hash of this script and the list.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: pe-rootfs.sh OUT.tar}

lists=("$here/pe-packages.list")
[ "${PEAGENT_PE_WINDOWS:-0}" = 1 ] && lists+=("$here/pe-packages-windows.list")  # wimlib (see that list)
packages=$(cat "${lists[@]}" | grep -v '^\s*\(#\|$\)' | paste -sd, -)

mmdebstrap --quiet \
    --format=tar \
    --variant=essential \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/lib/udev/hwdb.d/*' \
    --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/*' \
    --skip=essential/unlink \
    bookworm "$out"
