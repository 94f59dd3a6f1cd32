#!/bin/bash
# build-pe.sh [OUTDIR]: build the peagent PE from Debian bookworm packages into OUTDIR
# (default build/pe):
#
#   vmlinuz            Debian's kernel (linux-image-amd64)
#   initrd.zst         zstd cpio: the root filesystem, the kernel modules of pe-modules.list
#                      with their dependencies, the overlay (/init) and this working tree's agent
#   peagent.iso        hybrid ISO (GRUB): boots BIOS and UEFI, from CD or as a USB stick
#   peagent-usb.img    GPT disk image, one FAT32 ESP labelled PEAGENT: GRUB for UEFI, SYSLINUX
#                      for BIOS; writable, so /peagent.cfg can carry the boot parameters
#   build-info.json    what went in, sizes
#
# PEAGENT_PE_WINDOWS=1: add pe-packages-windows.list (wimlib, for Windows images; +~14 MB).
# PEAGENT_TRUSTED_KEYS: a directory of ed25519 public keys (*.pub, from `peagent keys`) that the PE
# trusts for images, copied to /etc/peagent/keys (keys can also be given at boot: peagent.key=).
#
# Two caches under $PEAGENT_CACHE (see cache.sh): the mmdebstrap root filesystem, keyed on
# its package list and script (the slow part, ~40 s), and the finished artifacts, keyed on
# every input including the agent's source, so an unchanged tree rebuilds in a second and a
# changed agent only repacks (a few seconds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=cache.sh
. "$here/cache.sh"
out=$(mkdir -p "${1:-$top/build/pe}" && cd "${1:-$top/build/pe}" && pwd)
ZSTD_LEVEL=${PEAGENT_ZSTD_LEVEL:-12}
USB_ESP_MIB=128
started=$(date +%s)

[ "$(id -u)" -eq 0 ] || { echo "build-pe.sh: must run as root (mmdebstrap, device nodes)" >&2; exit 1; }

# --- 1. root filesystem (cached) -------------------------------------------------------------
if [ "${PEAGENT_PE_WINDOWS:-0}" = 1 ]; then
    rootfs_key=$(inputs_hash "$here/pe-rootfs.sh" "$here/pe-packages.list" "$here/pe-packages-windows.list")
else
    rootfs_key=$(inputs_hash "$here/pe-rootfs.sh" "$here/pe-packages.list")
fi
rootfs_tar="$PEAGENT_CACHE/pe-rootfs/$rootfs_key.tar"
if [ ! -f "$rootfs_tar" ]; then
    stage "rootfs: building with mmdebstrap (cache key $rootfs_key)"
    mkdir -p "$(dirname "$rootfs_tar")"
    "$here/pe-rootfs.sh" "$rootfs_tar.tmp.$$" > "$rootfs_tar.log" 2>&1 ||
        { tail -n 40 "$rootfs_tar.log" >&2; rm -f "$rootfs_tar.tmp.$$"; exit 1; }
    mv "$rootfs_tar.tmp.$$" "$rootfs_tar"
    prune "$PEAGENT_CACHE/pe-rootfs" 4  # two entries per rootfs: the tarball and its log
fi

# --- 2. kernel package (cached by its exact name) --------------------------------------------
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1; }
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ]; then
    stage "kernel: apt has no package lists; running apt-get update"
    apt-get update -q >/dev/null
    kpkg=$(kernel_pkg)
fi
[ -n "$kpkg" ] || { echo "build-pe.sh: cannot resolve linux-image-amd64 with apt-cache" >&2; exit 1; }
kdir="$PEAGENT_CACHE/kernel"
mkdir -p "$kdir"
kdeb=$(find "$kdir" -maxdepth 1 -name "${kpkg}_*.deb" | head -n 1)
if [ -z "$kdeb" ]; then
    stage "kernel: downloading $kpkg"
    (cd "$kdir" && apt-get download -q "$kpkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    kdeb=$(find "$kdir" -maxdepth 1 -name "${kpkg}_*.deb" | head -n 1)
    [ -n "$kdeb" ] || { echo "build-pe.sh: apt-get download $kpkg failed" >&2; exit 1; }
fi

# --- 3. finished artifacts (cached on every input) -------------------------------------------
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$top/peagent/__init__.py")
key=$( { echo "$rootfs_key $(basename "$kdeb") $ZSTD_LEVEL $USB_ESP_MIB";
         inputs_hash "$here/build-pe.sh" "$here/cache.sh" "$here/pe-modules.list" "$here/overlay" \
                     "$here/boot" "$top/peagent" "$top/pyproject.toml" ${PEAGENT_TRUSTED_KEYS:+"$PEAGENT_TRUSTED_KEYS"}; } |
       sha256sum | cut -c1-16)
cached="$PEAGENT_CACHE/pe/$key"
artifacts="vmlinuz initrd.zst peagent.iso peagent-usb.img build-info.json"
if [ -f "$cached/build-info.json" ]; then
    stage "pe: cached build $key"
    touch "$cached"  # most recently used: pruning keeps it
    for f in $artifacts; do cp --reflink=auto "$cached/$f" "$out/$f"; done
    exit 0
fi

mkdir -p "$PEAGENT_CACHE/tmp"
work=$(mktemp -d "$PEAGENT_CACHE/tmp/pe.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root" "$work/kernel" "$work/result"

stage "pe: assembling (build $key)"
tar -C "$root" --numeric-owner -xpf "$rootfs_tar"

# Trim what a PE never runs. __pycache__ stays: without it every boot spends ~8 s (TCG)
# compiling the agent's imports.
rm -rf "$root"/var/cache/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
       "$root"/usr/share/info "$root"/usr/share/common-licenses \
       "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/lib/x86_64-linux-gnu/perl-base \
       "$root"/usr/bin/perl "$root"/usr/bin/perl5.* "$root"/usr/share/perl5
for d in test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data distutils; do
    rm -rf "$root/usr/lib/python3.11/$d"
done
# Build-time Python packages that came with tenacity's dependency on pbr; nothing imports them.
rm -rf "$root"/usr/lib/python3/dist-packages/{setuptools,pkg_resources,pbr,_distutils_hack}* \
       "$root"/usr/lib/python3/dist-packages/distutils-precedence.pth
# requests falls back to charset_normalizer without chardet; the agent needs no sqlite or dbm (but keep
# asyncio: tenacity imports it).
rm -rf "$root"/usr/lib/python3/dist-packages/chardet* \
       "$root"/usr/lib/python3.11/lib-dynload/_{sqlite3,dbm,tkinter}.* "$root"/usr/lib/x86_64-linux-gnu/libsqlite3.*
# Tools nobody runs in a PE that would drag in a TLS stack (ntfsdecrypt: gnutls, p11-kit) or Berkeley
# DB (arpd).
rm -f "$root"/usr/bin/ntfsdecrypt "$root"/usr/sbin/arpd "$root"/usr/lib/x86_64-linux-gnu/libgnutls.* \
      "$root"/usr/lib/x86_64-linux-gnu/libp11-kit.*

# Kernel and modules: the listed drivers with their dependencies, resolved by modprobe.
dpkg -x "$kdeb" "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
cp "$work/kernel/boot/vmlinuz-$kver" "$work/result/vmlinuz"
depmod -b "$work/kernel" "$kver"
modules=$(grep -v '^\s*\(#\|$\)' "$here/pe-modules.list")
mdest="$root/usr/lib/modules/$kver"
mkdir -p "$mdest"
for m in $modules; do
    deps=$(modprobe -d "$work/kernel" -S "$kver" --show-depends "$m") ||
        { echo "build-pe.sh: module $m (pe-modules.list) is not in $kpkg" >&2; exit 1; }
    for ko in $(printf '%s\n' "$deps" | awk '$1 == "insmod" { print $2 }'); do
        rel=${ko#"$work/kernel/lib/modules/$kver/"}
        install -D -m 0644 "$ko" "$mdest/$rel"
    done
done
cp "$work/kernel/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$mdest/"
depmod -b "$root" "$kver"
nmods=$(find "$mdest" -name '*.ko' | wc -l)

# The overlay (/init, udhcpc hook) and the agent from this working tree.
cp -a "$here/overlay/." "$root/"
site="$root/usr/lib/python3/dist-packages"
# Not peagent/server: a DP (with its SQLite store and dashboard) runs on a server, never in the PE,
# whose Python is pruned of what the agent does not need (sqlite among it).
(cd "$top" && find peagent -path peagent/server -prune -o -name '*.py' -print0 |
    xargs -0 -I{} install -D -m 0644 {} "$site/{}")
cat > "$root/usr/bin/peagent" <<'EOF'
#!/usr/bin/python3
import sys

from peagent.cli import main

sys.exit(main())
EOF
chmod 0755 "$root/usr/bin/peagent"
chroot "$root" /usr/bin/python3 -m compileall -q /usr/lib/python3/dist-packages/peagent
echo "$version (build $key)" > "$root/etc/peagent-release"
mkdir -p "$root/etc/peagent/keys"
if [ -n "${PEAGENT_TRUSTED_KEYS:-}" ]; then
    find "$PEAGENT_TRUSTED_KEYS" -maxdepth 1 -name '*.pub' -exec install -m 0644 {} "$root/etc/peagent/keys/" \;
fi
echo peagent > "$root/etc/hostname"
# The kernel opens /dev/console for /init before devtmpfs is mounted: it must be in the cpio.
rm -f "$root/dev/console" && mknod -m 0600 "$root/dev/console" c 5 1

stage "pe: packing initrd.zst (zstd -$ZSTD_LEVEL)"
rootfs_bytes=$(du -sb "$root" | cut -f1)
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
    cpio --quiet --null -o -H newc --owner=0:0 --reproducible) |
    zstd -q -T0 "-$ZSTD_LEVEL" > "$work/result/initrd.zst"

stage "pe: hybrid ISO"
iso="$work/iso"
mkdir -p "$iso/boot/grub"
cp "$work/result/vmlinuz" "$work/result/initrd.zst" "$iso/"
cp "$here/boot/grub.cfg" "$iso/boot/grub/grub.cfg"
grub-mkrescue -o "$work/result/peagent.iso" "$iso" -- -volid PEAGENT 2>"$work/mkrescue.log" ||
    { cat "$work/mkrescue.log" >&2; exit 1; }

stage "pe: USB image"
esp="$work/esp.img"
mkfs.vfat -F 32 -n PEAGENT -C "$esp" $((USB_ESP_MIB * 1024)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/boot ::/boot/grub ::/syslinux
mcopy -i "$esp" "$work/result/vmlinuz" "$work/result/initrd.zst" ::/
mcopy -i "$esp" "$here/boot/grub.cfg" ::/boot/grub/grub.cfg
mcopy -i "$esp" "$here/boot/syslinux.cfg" ::/syslinux/syslinux.cfg
mcopy -i "$esp" "$here/boot/peagent.cfg" ::/peagent.cfg
grub-mkstandalone -O x86_64-efi -o "$work/bootx64.efi" \
    --modules="part_gpt part_msdos fat search search_label serial terminal normal linux configfile echo test" \
    "boot/grub/grub.cfg=$here/boot/grub-usb-early.cfg"
mcopy -i "$esp" "$work/bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
syslinux --directory /syslinux --install "$esp"
usb="$work/result/peagent-usb.img"
truncate -s $((USB_ESP_MIB + 2))M "$usb"
# Partition 1 from 1 MiB; attribute bit 2 = "legacy BIOS bootable", which gptmbr.bin looks for.
sgdisk -Z -n 1:2048:+${USB_ESP_MIB}M -t 1:ef00 -c 1:PEAGENT -A 1:set:2 "$usb" >/dev/null
dd if="$esp" of="$usb" bs=1M seek=1 conv=notrunc status=none
dd if=/usr/lib/SYSLINUX/gptmbr.bin of="$usb" bs=440 count=1 conv=notrunc status=none

size() { stat -c %s "$work/result/$1"; }
cat > "$work/result/build-info.json" <<EOF
{
  "peagent_version": "$version",
  "build_key": "$key",
  "rootfs_key": "$rootfs_key",
  "windows": $([ "${PEAGENT_PE_WINDOWS:-0}" = 1 ] && echo true || echo false),
  "kernel_package": "$(basename "$kdeb")",
  "kernel_version": "$kver",
  "kernel_modules": $nmods,
  "rootfs_bytes": $rootfs_bytes,
  "initrd_zstd_level": $ZSTD_LEVEL,
  "sizes": {"vmlinuz": $(size vmlinuz), "initrd.zst": $(size initrd.zst),
            "peagent.iso": $(size peagent.iso), "peagent-usb.img": $(size peagent-usb.img)},
  "build_seconds": $(( $(date +%s) - started ))
}
EOF

mkdir -p "$PEAGENT_CACHE/pe"
rm -rf "$cached.tmp.$$" && cp -a "$work/result" "$cached.tmp.$$" && mv "$cached.tmp.$$" "$cached"
prune "$PEAGENT_CACHE/pe" 4
for f in $artifacts; do cp --reflink=auto "$cached/$f" "$out/$f"; done
stage "pe: done in $(( $(date +%s) - started )) s: initrd.zst $(size initrd.zst) bytes ($nmods modules)," \
      "rootfs $rootfs_bytes bytes"
