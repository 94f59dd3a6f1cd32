"""Preparing the target disk before an image is written: erasing it, partitioning it from the
task's declarative layout, making filesystems. Decisions are pure functions over the inventory's
:class:`~peagent.inventory.Disk` (``layout`` computes every partition's exact extent before anything
is written); the modules that touch devices (``partition`` with pyparted, ``filesystem`` with the mkfs
tools) only carry out such a plan.

Erasing follows the same split: ``capabilities`` probes once what a disk can do (discard, write
zeroes, NVMe Format/Sanitize, ATA security erase) into a plain :class:`EraseCaps` value kept in the
inventory; ``erase`` decides from it alone whether a mode is possible (before anything is written)
and then carries the erase out and verifies it by reading the disk back. ``tools`` runs the
external programs (wipefs, blkid, nvme, hdparm) behind one small interface that tests replace.
"""
