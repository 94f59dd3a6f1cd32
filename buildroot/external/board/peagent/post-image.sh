#!/bin/sh
# Post-image script: $1 is Buildroot's images directory. Gives the kernel and the initramfs the
# names the Debian build (buildroot/build-pe.sh) produces, so netboot/ and the boot media take
# either build unchanged.
set -eu

images=$1
for f in bzImage rootfs.cpio.zst; do
    [ -f "$images/$f" ] || { echo "post-image.sh: $images/$f is missing" >&2; exit 1; }
done
cp -f "$images/bzImage" "$images/vmlinuz"
cp -f "$images/rootfs.cpio.zst" "$images/initrd.zst"
