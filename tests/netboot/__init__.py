"""Tests of netboot/: the PXE chain (proxy-DHCP, TFTP, iPXE, GRUB) and the DP's nginx config."""
