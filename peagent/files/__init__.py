"""File images and layers: file trees that travel as tar streams and are applied into a filesystem.

A disk or partition image is written block by block; a **file image** is a file tree instead: a
pax tar stream (GNU tar ``--format=pax --xattrs --acls --selinux``, or peagent's own writer)
that the agent applies into a filesystem it has made and mounted in the PE. **Layers** are
further tar streams applied on top of it, carrying only what changed, with OCI whiteouts for
what was deleted (``.wh.NAME`` removes NAME, ``.wh..wh..opq`` empties a directory of what the
layers below put there). peagent.files.tree writes a tree as such a stream (``image build --files``),
and peagent.files.layers the layer between two trees.

Applying a stream someone else made is the risky part: a tar archive can name ``../../etc``,
plant a symlink and write through it, link to files outside, or make device nodes. The
extractor (peagent.files.extract) refuses all of that, by construction rather than by checking
strings: it reaches every path from a directory file descriptor, one component at a time,
never following a symlink, so nothing it does can land outside the target directory. It keeps
what the tree needs to boot and run: owners, modes with setuid bits, nanosecond mtimes,
extended attributes (SELinux labels, file capabilities), POSIX ACLs, hard links, sparse files.
"""
