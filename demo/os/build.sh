#!/bin/bash
# Builds the demo OS: a small, real Debian bookworm disk image (GPT; UEFI and BIOS boot) that
# `make demo` deploys with peagent and then boots, and that the VM tests deploy.
#
#   demo/os/build.sh OUTDIR     -> OUTDIR/demo-os.img, demo-os.img.zst, demo-os.json
#
# Needs root (mmdebstrap's root mode; the root filesystem's files must be owned by real root),
# but no loop devices or mounts of its own: mke2fs -d fills the ext4 image from a directory,
# mtools fills the ESP, sgdisk writes the GPT and dd assembles the disk. The result is cached
# under a hash of demo/os/, so a rebuild with unchanged inputs is a copy. See README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../../buildroot/cache.sh
. "$repo/buildroot/cache.sh"

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
outdir=$1

SUITE=bookworm
NAME=demo-os
HOSTNAME_=demo-os

# Fixed identifiers, so that fstab, the GPT, GRUB and the README agree and two builds are
# comparable. Every machine the image is deployed to shares them (as with any disk image);
# nothing in the image depends on them but fstab, so a deployment may re-randomise them.
ROOT_LABEL=DEMO-ROOT
ESP_LABEL=DEMO-ESP
ROOT_FS_UUID=5e3d0a1c-7a2b-4c6d-9e8f-0d1e2f3a4b5c
ESP_VOLID=DE30E5F0                                   # FAT volume id; fstab spells it DE30-E5F0
DISK_GUID=8d1f6c2a-3b4e-4f50-8a61-7c2d3e4f5a6b
ESP_PARTUUID=0e5f0001-1d2c-4b3a-8e9f-a0b1c2d3e4f5
ROOT_PARTUUID=0e5f0002-1d2c-4b3a-8e9f-a0b1c2d3e4f5
BIOSBOOT_PARTUUID=0e5f0003-1d2c-4b3a-8e9f-a0b1c2d3e4f5

# Layout in MiB: [GPT][BIOS boot p3 @1][ESP p1 @2, 64][root p2 @66 ...][1 MiB for the backup GPT].
# The BIOS boot partition comes first and root last, so root can later grow to fill a bigger disk.
BIOSBOOT_START_MIB=1
BIOSBOOT_MIB=1
ESP_START_MIB=2
ESP_MIB=64
ROOT_START_MIB=$((ESP_START_MIB + ESP_MIB))
# Free space left in the root filesystem beyond its content: first-boot journal, logs, host keys,
# whatever a deployment writes. Small on purpose: the raw image stays well under 512 MiB.
ROOT_HEADROOM_MIB=64

t_start=$SECONDS
elapsed() { echo "$((SECONDS - t_start))s"; }

need_tools() {
    local missing="" t
    for t in mmdebstrap sgdisk mkfs.vfat fsck.vfat mmd mcopy mke2fs e2fsck grub-mkstandalone zstd python3 sha256sum; do
        command -v "$t" >/dev/null || missing="$missing $t"
    done
    for t in x86_64-efi i386-pc; do
        [ -d "/usr/lib/grub/$t" ] || missing="$missing grub:$t"
    done
    if [ -n "$missing" ]; then
        echo "build.sh: missing tools:$missing (scripts/install-deps installs them)" >&2
        exit 1
    fi
}

copy_out() {
    local src=$1
    mkdir -p "$outdir"
    # Copies, not links: whoever boots OUTDIR/demo-os.img directly writes to it, and the cache
    # must stay pristine. --sparse keeps the zero runs as holes.
    cp --sparse=always --reflink=auto "$src/$NAME.img" "$outdir/$NAME.img.tmp"
    mv -f "$outdir/$NAME.img.tmp" "$outdir/$NAME.img"
    cp "$src/$NAME.img.zst" "$src/$NAME.json" "$outdir/"
    rm -rf "$outdir/drivers"
    cp -r "$src/drivers" "$outdir/"
}

# Every input of the build (README.md is not one: editing it must not cost a rebuild). Relative
# paths, so that the key does not depend on where the repository is checked out.
INPUTS=(build.sh packages.list path-exclude.list grub overlay)
key=$(cd "$here" && inputs_hash "${INPUTS[@]}")
cache_dir=$PEAGENT_CACHE/demo-os
final=$cache_dir/$key

if [ -f "$final/$NAME.json" ]; then
    stage "demo-os: cached ($key), copying to $outdir"
    copy_out "$final"
    stage "demo-os: done in $(elapsed): $outdir/$NAME.img"
    exit 0
fi

need_tools
if [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: needs root (mmdebstrap root mode keeps the files owned by root for mke2fs -d)" >&2
    exit 1
fi

mkdir -p "$cache_dir"
# Leftovers of builds that were killed before their trap could run.
for d in "$cache_dir"/*.tmp.*; do
    [ -e "$d" ] || continue
    kill -0 "${d##*.}" 2>/dev/null || rm -rf --one-file-system "$d"
done

work=$cache_dir/$key.tmp.$$
# --one-file-system: should mmdebstrap die with /proc or /dev still mounted in the root
# filesystem, rm must not descend into the host's.
trap 'rm -rf --one-file-system "$work"' EXIT
# A signal stops the long-running child first (mmdebstrap unmounts what it mounted), then
# exits through the EXIT trap. bash runs traps only between commands, hence the child runs in
# the background and is waited for.
child=""
on_signal() {
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" || true
    fi
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
mkdir -p "$work/out"
rootfs=$work/rootfs

# ---------------------------------------------------------------------------------------------
stage "demo-os: building $key (mmdebstrap $SUITE)"

packages=$(sed -e 's/#.*//' "$here/packages.list" | awk 'NF { print $1 }' | paste -sd, -)
dpkg_filters=()
while read -r first second; do
    case "$first" in
        '' | '#'*) ;;
        include) dpkg_filters+=("--dpkgopt=path-include=$second") ;;
        *) dpkg_filters+=("--dpkgopt=path-exclude=$first") ;;
    esac
done <"$here/path-exclude.list"

# The initramfs configuration (conf.d/demo-os, hooks/demo-os-modules) must be in place before
# the kernel's postinst builds the initramfs. (sync-in splits its arguments on blanks.)
case "$here" in *[[:space:]]*) echo "build.sh: the repository path must not contain blanks" >&2; exit 1 ;; esac
mmdebstrap \
    --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' \
    "${dpkg_filters[@]}" \
    --setup-hook='mkdir -p "$1/etc/initramfs-tools"' \
    --setup-hook="sync-in $here/overlay/etc/initramfs-tools /etc/initramfs-tools" \
    --customize-hook="cp \"\$1\"/var/cache/apt/archives/linux-image-[0-9]*.deb $work/" \
    "$SUITE" "$rootfs" >"$work/mmdebstrap.log" 2>&1 &
child=$!
if ! wait "$child"; then
    tail -n 40 "$work/mmdebstrap.log" >&2
    echo "build.sh: mmdebstrap failed (log above)" >&2
    exit 1
fi
child=""
stage "demo-os: root filesystem ready ($(elapsed))"

# ---------------------------------------------------------------------------------------------
stage "demo-os: configuring"

# The overlay, owned by root whoever checked the repository out; keep the merged-usr symlinks.
tar -C "$here/overlay" --owner=0 --group=0 -cf - . | tar -C "$rootfs" --keep-directory-symlink -xpf -

mkdir -p "$rootfs/boot/grub" "$rootfs/boot/efi"
sed "s/@ROOT_LABEL@/$ROOT_LABEL/g" "$here/grub/grub.cfg" >"$rootfs/boot/grub/grub.cfg"

echo "$HOSTNAME_" >"$rootfs/etc/hostname"
cat >"$rootfs/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$HOSTNAME_
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
# mmdebstrap copied the build host's resolver configuration; DHCP-less DNS is no business of the demo.
rm -f "$rootfs/etc/resolv.conf"

esp_uuid=${ESP_VOLID:0:4}-${ESP_VOLID:4:4}
cat >"$rootfs/etc/fstab" <<EOF
# /etc/fstab of the peagent demo OS (written by demo/os/build.sh).
# <file system>	<mount point>	<type>	<options>	<dump>	<pass>
UUID=$ROOT_FS_UUID	/	ext4	errors=remount-ro	0	1
# The ESP is not needed to run; nofail so a machine without it still boots.
UUID=$esp_uuid	/boot/efi	vfat	umask=0077,nofail	0	0
EOF

systemctl --root="$rootfs" --quiet enable \
    systemd-networkd.service peagent-demo-os-up.service demo-os-ssh-host-keys.service
# e2scrub_reap cleans up LVM snapshots (there is no LVM) and costs 20 s of a TCG boot; the apt
# timers would reach for a Debian mirror from inside test VMs.
systemctl --root="$rootfs" --quiet disable \
    e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer

# Host keys are per machine: demo-os-ssh-host-keys.service makes them at first boot.
rm -f "$rootfs"/etc/ssh/ssh_host_*
# No password login at all (root's password field '*'): access is by SSH key, which a
# deployment installs. The serial getty still shows a login prompt.
chroot "$rootfs" usermod -p '*' root

# The kernel package maintains /vmlinuz and /initrd.img; GRUB's grub.cfg boots those.
for f in vmlinuz initrd.img; do
    [ -e "$rootfs/$f" ] || { echo "build.sh: /$f missing in the root filesystem" >&2; exit 1; }
done
kernel_version=$(basename "$(readlink -f "$rootfs/vmlinuz")" | sed 's/^vmlinuz-//')
# The initramfs must be able to reach root on any of the buses the image is meant for; a hook
# that silently stopped running would only show up as a VM that cannot find its root.
initramfs_list=$(chroot "$rootfs" lsinitramfs "/boot/initrd.img-$kernel_version")
for m in virtio_blk virtio_scsi nvme ahci sd_mod usb-storage xhci-pci ext4; do
    grep -q "/$m\.ko" <<<"$initramfs_list" || {
        echo "build.sh: $m.ko is missing from the initramfs" >&2
        exit 1
    }
done

# The driver store beside the image: the e1000 module path-exclude.list leaves out of the image,
# as a Linux driver package (docs/drivers.md), taken from the very kernel package installed. The
# driver-injection VM test gives a VM with an e1000 NIC this package, and the module has to come
# from the injection to load at its first boot.
kernel_deb=$(ls "$work"/linux-image-[0-9]*.deb)
dpkg-deb -x "$kernel_deb" "$work/kernel-deb"
e1000=$(find "$work/kernel-deb" -path "*/lib/modules/$kernel_version/kernel/drivers/net/ethernet/intel/e1000/e1000.ko*")
[ -n "$e1000" ] || { echo "build.sh: e1000 not found in $kernel_deb" >&2; exit 1; }
# dpkg's path-exclude drops the files and keeps the directory.
if [ -n "$(find "$rootfs/lib/modules/$kernel_version/kernel/drivers/net/ethernet/intel/e1000" -type f 2>/dev/null)" ]; then
    echo "build.sh: e1000 is in the image; path-exclude.list should leave it out" >&2
    exit 1
fi
mkdir -p "$work/out/drivers/linux/_generic/_generic/intel-e1000"
cp "$e1000" "$work/out/drivers/linux/_generic/_generic/intel-e1000/"
# And the NVMe host driver (which the image also has) as a package of QEMU machines: a storage
# driver, so the test sees it go into the initramfs, rebuilt in a chroot, and the OS boot from NVMe.
nvme=$(find "$work/kernel-deb" -path "*/lib/modules/$kernel_version/kernel/drivers/nvme/host/nvme.ko*")
[ -n "$nvme" ] || { echo "build.sh: nvme not found in $kernel_deb" >&2; exit 1; }
mkdir -p "$work/out/drivers/linux/QEMU/_generic/nvme-host"
cp "$nvme" "$work/out/drivers/linux/QEMU/_generic/nvme-host/"
rm -rf "$work/kernel-deb" "$kernel_deb"

# ---------------------------------------------------------------------------------------------
stage "demo-os: GRUB (UEFI + BIOS)"

sed "s/@ROOT_LABEL@/$ROOT_LABEL/g" "$here/grub/embedded.cfg" >"$work/embedded.cfg"
grub_modules_common="part_gpt fat ext2 normal boot configfile linux echo test regexp probe search search_label all_video"
grub-mkstandalone -O x86_64-efi -o "$work/BOOTX64.EFI" \
    --modules="$grub_modules_common" --install-modules="$grub_modules_common" \
    --locales= --fonts= --themes= \
    "boot/grub/grub.cfg=$work/embedded.cfg"
grub-mkstandalone -O i386-pc -o "$work/core.img" \
    --modules="$grub_modules_common biosdisk serial terminal" \
    --install-modules="$grub_modules_common biosdisk serial terminal" \
    --locales= --fonts= --themes= \
    "boot/grub/grub.cfg=$work/embedded.cfg"
core_bytes=$(stat -c %s "$work/core.img")
if [ "$core_bytes" -gt $((BIOSBOOT_MIB * 1048576)) ]; then
    echo "build.sh: BIOS core image ($core_bytes bytes) does not fit the BIOS boot partition" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
stage "demo-os: ESP and root filesystem images"

mkfs.vfat -F 32 -S 512 -s 1 -n "$ESP_LABEL" -i "$ESP_VOLID" -C "$work/esp.img" $((ESP_MIB * 1024)) >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
# The removable-media fallback path: UEFI firmware boots it with no NVRAM boot entry.
mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
fsck.vfat -n "$work/esp.img" >/dev/null

# Content (allocated 4 KiB blocks, close to what ext4 needs), +5% for ext4's metadata, the
# journal (16 MiB at this size) and the headroom; rounded up to 4 MiB.
content_mib=$(du -sx --block-size=1M "$rootfs" | cut -f1)
root_mib=$(((content_mib * 105 / 100 + 16 + ROOT_HEADROOM_MIB + 3) / 4 * 4))
# Twice the files present, so the headroom is not cut short by running out of inodes.
inodes=$(($(find "$rootfs" -xdev | wc -l) * 2 + 4096))
# -b/-I explicit: below 512 MiB mke2fs would pick the "small" type (1 KiB blocks).
truncate -s "${root_mib}M" "$work/root.img"
mke2fs -q -F -t ext4 -b 4096 -I 256 -N "$inodes" -m 1 -L "$ROOT_LABEL" -U "$ROOT_FS_UUID" \
    -E "hash_seed=$ROOT_FS_UUID" -d "$rootfs" "$work/root.img"
e2fsck -fn "$work/root.img" >/dev/null 2>&1 || { e2fsck -fn "$work/root.img" >&2; exit 1; }
rm -rf --one-file-system "$rootfs"

# ---------------------------------------------------------------------------------------------
stage "demo-os: assembling the disk"

disk=$work/out/$NAME.img
disk_mib=$((ROOT_START_MIB + root_mib + 1))
truncate -s "${disk_mib}M" "$disk"
root_end=$(((ROOT_START_MIB + root_mib) * 2048 - 1))
sgdisk --clear --disk-guid="$DISK_GUID" \
    --new="3:$((BIOSBOOT_START_MIB * 2048)):+${BIOSBOOT_MIB}M" --typecode=3:ef02 \
    --change-name=3:BIOS-BOOT --partition-guid="3:$BIOSBOOT_PARTUUID" \
    --new="1:$((ESP_START_MIB * 2048)):+${ESP_MIB}M" --typecode=1:ef00 \
    --change-name="1:$ESP_LABEL" --partition-guid="1:$ESP_PARTUUID" \
    --new="2:$((ROOT_START_MIB * 2048)):$root_end" --typecode=2:8304 \
    --change-name="2:$ROOT_LABEL" --partition-guid="2:$ROOT_PARTUUID" \
    "$disk" >/dev/null
dd if="$work/esp.img" of="$disk" bs=1M seek="$ESP_START_MIB" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=1M seek="$ROOT_START_MIB" conv=notrunc,sparse status=none

# BIOS: what grub-install does for a GPT disk with a BIOS boot partition, by hand on a file.
# boot.img (MBR code, first 440 bytes only: the rest is the protective MBR's disk signature and
# partition table) loads the first sector of core.img, whose blocklist loads the rest.
# Offsets are GRUB's include/grub/i386/pc/boot.h: KERNEL_SECTOR 0x5c (u64 LBA of core.img),
# DRIVE_CHECK 0x66 (a jmp, NOPed for hard disks so buggy BIOSes that pass DL=0 still work);
# the blocklist is the last 12 bytes of core.img's first sector: u64 start, u16 count, u16 segment.
python3 - "$disk" "$work/core.img" "$((BIOSBOOT_START_MIB * 2048))" <<'EOF'
import struct, sys
disk_path, core_path, core_lba = sys.argv[1], sys.argv[2], int(sys.argv[3])
boot = bytearray(open("/usr/lib/grub/i386-pc/boot.img", "rb").read())
core = bytearray(open(core_path, "rb").read())
core += bytes(-len(core) % 512)
assert len(boot) == 512 and boot[0x66:0x68] == b"\xeb\x05", "unexpected boot.img"
boot[0x5C:0x64] = struct.pack("<Q", core_lba)
boot[0x66:0x68] = b"\x90\x90"
start, count, segment = struct.unpack_from("<QHH", core, 500)
assert start == 2 and segment == 0x820, "unexpected diskboot.img blocklist"
struct.pack_into("<QH", core, 500, core_lba + 1, len(core) // 512 - 1)
with open(disk_path, "r+b") as disk:
    disk.seek(core_lba * 512)
    disk.write(core)
    disk.seek(0)
    disk.write(boot[:440])
EOF
sgdisk --verify "$disk" >"$work/sgdisk-verify.txt" || { cat "$work/sgdisk-verify.txt" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
stage "demo-os: compressing and hashing"

zstd -q -T0 -10 "$disk" -o "$disk.zst"
raw_size=$(stat -c %s "$disk")
zst_size=$(stat -c %s "$disk.zst")
raw_sha=$(sha256sum "$disk" | cut -d' ' -f1)
zst_sha=$(sha256sum "$disk.zst" | cut -d' ' -f1)
cat >"$work/out/$NAME.json" <<EOF
{"name": "$NAME", "size": $raw_size, "sha256": "$raw_sha", "compressed_size": $zst_size, "compressed_sha256": "$zst_sha", "kernel": "$kernel_version", "root_partuuid": "$ROOT_PARTUUID", "root_fs_uuid": "$ROOT_FS_UUID", "root_label": "$ROOT_LABEL", "esp_label": "$ESP_LABEL", "hostname": "$HOSTNAME_", "cache_key": "$key"}
EOF

# Into the cache atomically; a concurrent build of the same key may have won the race.
if ! mv -T "$work/out" "$final" 2>/dev/null && [ ! -f "$final/$NAME.json" ]; then
    echo "build.sh: cannot store $final" >&2
    exit 1
fi
# Keep the two newest builds; each is a few hundred MB.
ls -1dt "$cache_dir"/*/ 2>/dev/null | grep -v '\.tmp\.' | tail -n +3 | while read -r old; do
    rm -rf --one-file-system "$old"
done

copy_out "$final"
stage "demo-os: done in $(elapsed): $outdir/$NAME.img ($((raw_size / 1048576)) MiB raw, $((zst_size / 1048576)) MiB zst, kernel $kernel_version)"
