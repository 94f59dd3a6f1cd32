# peagent: the two commands are `make demo` and `make test`; both install what they need first.
# Run as root on Debian 12 (apt, mmdebstrap, loop devices, network namespaces, QEMU).

PY := .venv/bin/python
PYTEST ?= .venv/bin/pytest

.PHONY: all deps pe demo-image demo test lint pe-buildroot tftp-root clean

all: pe

deps:
	./scripts/install-deps

# The PE (vmlinuz, initrd.zst, peagent.iso, peagent-usb.img) in build/pe; cached by input hash.
pe: deps
	./buildroot/build-pe.sh build/pe

# The demo OS disk image in build/demo; cached by input hash.
demo-image: deps
	./demo/os/build.sh build/demo

# PXE-boot a UEFI VM from the built-in DP, deploy the demo OS, boot it.
demo: pe demo-image
	$(PY) -m tests.vm.demo

# Lint, then every test: unit, integration (loop devices, namespaces, dnsmasq, nginx), VM.
test: pe demo-image lint
	PEAGENT_CI=1 $(PYTEST) $(PYTEST_ARGS)

lint: deps
	.venv/bin/ruff check .

# The PE from source with Buildroot (needs BUILDROOT_SRC and a filled download directory).
pe-buildroot:
	buildroot/external/build.sh build/pe-buildroot

# A TFTP root for a real network: make tftp-root DP=http://dp.example.com
tftp-root:
	netboot/make-tftp-root build/tftp $(if $(DP),--dp $(DP))

clean:
	rm -rf build
