"""In-place re-imaging: the new OS laid down in the partition that held the old one, user data kept.

Many machines have one partition and no room for another, so the old OS is deleted from inside
its own filesystem while the user's files stay where they are. The task asks for it with
``target.inplace`` (:mod:`peagent.inplace.spec`); the order is the safety argument:

1. **Find the OS** (:mod:`~peagent.inplace.detect`): every candidate partition of the chosen disk
   is mounted read-only and looked at: ``etc/os-release`` (or ``usr/lib/os-release``) says Linux
   and which, ``Windows/System32/config/SYSTEM`` (a registry hive) says Windows. One OS: that
   partition. None, or several, is refused, naming what was found; a partition the task names
   that holds no known OS is refused unless the task forces it.
2. **Decide what goes** (:mod:`~peagent.inplace.policy`, pure): Linux loses everything but
   ``home``, ``srv`` and the task's keeps; Windows loses ``Windows``, ``Program Files*``,
   ``ProgramData``, its boot files, pagefile, hiberfil and swapfile, and keeps everything else.
3. **Check the room** (:mod:`~peagent.inplace.space`): free space plus what the deletion frees
   must hold the new OS with headroom, or nothing is deleted.
4. **Delete, apply, fix up** (:mod:`~peagent.inplace.reimage`): a marker file at the
   filesystem's root records the deployment first, so a rerun after a power cut resumes rather
   than refusing a half-deleted OS; the images are applied with the kept paths protected
   (peagent.files.extract); ``etc/fstab`` is rewritten for this partition and carries the old
   OS's mounts of kept data (:mod:`~peagent.inplace.fstab`).

Every other partition of the disk is left as it is.
"""
