"""Making the machine boot the OS that was just written: the boot step.

Writing an image puts a boot loader on the target disk, but the firmware still has to be told
to use it. How depends on the firmware:

* **UEFI** keeps a list of boot entries in NVRAM variables: ``Boot0000``..``BootFFFF`` each name a
  label and a device path (which partition, by its GPT partition GUID, and which ``.efi`` file on
  it); ``BootOrder`` says which to try first; ``BootNext`` overrides the order for one boot only.
  peagent.boot.efivars reads that state from ``efibootmgr -v``, peagent.boot.plan decides what to
  change (add our entry, drop the entries of the partitions the wipe removed, put ours first or
  set BootNext), and peagent.boot.efi carries the plan out with efibootmgr.
* **BIOS** has nothing to set: it runs the first sector of the first disk in its own boot order.
  peagent.boot.bios only checks that the disk has boot code, the 55AA signature, and on GPT the
  BIOS boot partition GRUB needs.
* **kexec** skips the firmware: the PE loads the new OS's kernel itself (peagent.boot.kexec) and
  its PID 1 jumps into it, which saves a POST on servers that take minutes to come up.

The decisions are pure functions over data (parsed efibootmgr output, a directory tree, the bytes
of a sector), tested without firmware; only peagent.boot.efi and the ``kexec_load``/``bios_check``
edges run programs or open devices.
"""
