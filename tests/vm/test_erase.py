"""Secure erase against QEMU's devices, the only place it really runs: the PE probes an NVMe
namespace and a SATA disk, erases the NVMe one with its own Format NVM, refuses to secure-erase
the SATA one and erases its metadata instead, under the PE's own kernel (which parses GPTs) and udev.

What QEMU 7.2 offers (captured with nvme-cli 2.3 and hdparm 9.65 in the PE, and asserted below):
its NVMe controller supports Format NVM (OACS bit 1) but neither cryptographic erase (FNA 0) nor
Sanitize (SANICAP 0), and its namespaces report that deallocated blocks read as zeroes (DLFEAT 1);
so ``method: auto`` picks Format NVM with Secure Erase Setting 1 and the read-back expects zeroes.
Its IDE/AHCI drive does not implement the ATA Security feature set (``hdparm -I`` prints no
Security section, and hdparm exits 0 while the drive aborts SECURITY SET PASSWORD), so a secure
erase of it must be refused with ``erase.unsupported`` before anything is sent.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.vm.pe import direct, exit_status, json_between, run_param
from tests.vm.qemu import Drive

MIB = 1 << 20
PATTERN = (bytes(range(1, 256)) * (MIB // 255 + 1))[:MIB]  # never zero

# Runs in the PE (bookworm's python3 and this tree's agent); prints JSON between markers.
SNIPPET = r"""
import hashlib, json, os
from peagent.disk.capabilities import probe
from peagent.disk.erase import EraseSpec, check_erase, erase
from peagent.errors import PeagentError

def digest(dev):
    with open(dev, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

nvme = probe("/dev/nvme0n1", "/sys/class/block/nvme0n1")
sata = probe("/dev/sda", "/sys/class/block/sda")
result = {"nvme_caps": nvme.to_dict(), "sata_caps": sata.to_dict(),
          "partitions_before": sorted(os.listdir("/sys/class/block"))}
sata_before = digest("/dev/sda")
for name, spec, caps in (("sata_secure", EraseSpec("secure"), sata),
                         ("nvme_crypto", EraseSpec("secure", "nvme-format-crypto"), nvme)):
    try:
        erase(caps.device, spec, caps)
        result[name] = "erased?!"
    except PeagentError as exc:
        result[name] = {"code": exc.code, "message": str(exc)}
result["sata_untouched"] = digest("/dev/sda") == sata_before
spec = EraseSpec("secure")
result["nvme_plan"] = check_erase(spec, nvme)
steps = []
result["nvme_report"] = erase("/dev/nvme0n1", spec, nvme, progress=steps.append).to_dict()
result["nvme_progress"] = sum(steps)
result["sata_metadata"] = erase("/dev/sda", EraseSpec("metadata"), sata).to_dict()
result["partitions_after"] = sorted(os.listdir("/sys/class/block"))
print("erase-begin")
print(json.dumps(result))
print("erase-end")
"""


def disk_with_data(path: Path, size: int) -> Path:
    """A disk image holding a GPT, an ext4 filesystem and a non-zero pattern everywhere else."""
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(PATTERN)
    subprocess.run(["sgdisk", "-n1:1M:0", str(path)], check=True, capture_output=True)
    return path


def test_secure_erase_nvme_and_refuse_sata(pe, workdir, start_vm):
    nvme = disk_with_data(workdir / "nvme.img", 64 * MIB)
    sata = disk_with_data(workdir / "sata.img", 32 * MIB)
    cmd = f"python3 - <<'EOF'\n{SNIPPET}\nEOF"
    vm = start_vm(direct(pe, run_param(cmd), [Drive(nvme, "nvme", serial="NVME0001"),
                                              Drive(sata, "sata", serial="SATA0001")]))
    result = json_between(vm, "erase", timeout=300)
    assert exit_status(vm) == 0

    caps = result["nvme_caps"]
    assert (caps["interface"], caps["nvme_controller"], caps["nvme_nsid"], caps["nvme_namespaces"]) == \
        ("nvme", "/dev/nvme0", 1, 1)
    assert (caps["nvme_format"], caps["nvme_crypto_erase"], caps["nvme_sanitize"],
            caps["nvme_deallocated_reads_zero"]) == (True, False, [], True)
    assert caps["discard"] and caps["discard_zeroes"] is True

    sata_caps = result["sata_caps"]
    assert (sata_caps["interface"], sata_caps["ata_security_supported"], sata_caps["secure_problem"]) == \
        ("ata", False, None)
    assert result["sata_secure"] == {
        "code": "erase.unsupported",
        "message": "secure: /dev/sda supports no secure erase: /dev/sda does not implement the ATA "
                   "Security feature set (hdparm -I shows no security support); use mode zero (or "
                   "discard) instead",
    }
    assert result["nvme_crypto"]["code"] == "erase.unsupported"
    assert "FNA bit 2 is clear" in result["nvme_crypto"]["message"]
    assert result["sata_untouched"] is True  # refused before anything was sent or written

    report = result["nvme_report"]
    assert (report["mode"], report["method"], report["bytes"]) == ("secure", "nvme-format", 64 * MIB)
    assert any("Secure Erase Setting 1" in s for s in report["steps"])
    assert any("read as zeroes" in v for v in report["verified"]), report
    assert any("no signature" in v for v in report["verified"])
    assert result["nvme_progress"] == 64 * MIB

    # The PE's kernel parses GPTs (the host's may not): the partitions were there, and are gone.
    assert {"nvme0n1p1", "sda1"} <= set(result["partitions_before"])
    assert not {"nvme0n1p1", "sda1"} & set(result["partitions_after"])

    # Metadata mode under the PE's udev: wipefs found the GPT, the kernel dropped the partition.
    meta = result["sata_metadata"]
    assert "gpt on sda at 0x00000200" in meta["steps"][0] and "PMBR on sda" in meta["steps"][0]
    assert meta["verified"][:2] == ["blkid -p and wipefs find no signature on /dev/sda",
                                    "the kernel lists no partition"]

    # What the VM wrote is what is on the host: the namespace reads as zeroes; the SATA disk's ends
    # are zero and its middle still holds the old data.
    data = nvme.read_bytes()
    assert len(data) == 64 * MIB and data.count(0) == len(data)
    data = sata.read_bytes()
    assert data[:4 * MIB].count(0) == 4 * MIB and data[-4 * MIB:].count(0) == 4 * MIB
    assert data[16 * MIB:17 * MIB] == PATTERN
    print(f"\nfigure: NVMe Format NVM (SES 1) of 64 MiB under TCG: {report['seconds']:.2f} s")
