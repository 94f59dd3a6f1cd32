"""Tests of peagent.boot: firmware boot entries, BIOS checks, kexec."""
