"""The errors peagent raises on purpose.

Every failure a user can cause or meet (a malformed task, no network, no suitable disk, a
corrupt image) is a subclass of :class:`PeagentError`. Each class carries a stable ``code``
(status events and dashboards group failures by it) and the ``exit_status`` the CLI returns, so
scripts and the PE's /init can tell the causes apart without parsing messages. Messages say
what was expected, what was found, and what to do about it. Anything else that escapes is a bug.

Exit statuses:

== ==================================================
0  success
1  internal error (a bug: please report it)
2  invalid input: task document, command line, parameters, a partition layout
3  no safe target disk (none, ambiguous, or refused)
4  network: a task, image or DP could not be fetched
5  verification: written bytes do not match the image
6  image: unusable image (too large, unknown format)
7  device: reading or writing a disk failed
8  erase: a disk could not be erased, cannot do the erase asked for, or is not verifiably erased
9  state: the old OS's state could not be captured, or the new OS could not be given its state or boot entry
10 no deployment: the DP has no task for this machine, refused or cancelled it, or it still awaits approval
== ==================================================
"""

from __future__ import annotations

import json


class PeagentError(Exception):
    """Base of all deliberate errors."""

    code = "error"
    exit_status = 1


class FieldError(ValueError):
    """Bad input the server side meets (an event, its configuration, a request's parameters): which field,
    what was expected, what was found. Subclasses name the kind of field in :attr:`subject`."""

    subject = ""

    def __init__(self, field: str, expected: str, found: str) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{self.subject}{field}: expected {expected}, found {found}")


class TaskError(PeagentError):
    """The task document (or a boot parameter) is invalid: names the field, expectation and finding."""

    code = "task.invalid"
    exit_status = 2

    def __init__(self, field: str, expected: str, found: str) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{field}: expected {expected}, found {found}")


class TaskRefusedError(PeagentError):
    """The DP decided that this machine gets no deployment now (``GET /api/v1/task``, docs/status.md).

    ``decision`` is the DP's: ``none`` (no task for this machine: nothing to do), ``refused`` (the
    rules refuse it), ``cancelled`` (an administrator cancelled it), or ``pending``/``postponed``
    when the deployment still awaited approval after the agent's wait ran out. The code is
    ``task.<decision>``, so dashboards tell them apart.
    """

    code = "task.refused"
    exit_status = 10
    DECISIONS = ("none", "refused", "cancelled", "pending", "postponed")

    def __init__(self, decision: str, message: str) -> None:
        self.decision = decision
        self.code = f"task.{decision}" if decision in self.DECISIONS else type(self).code
        super().__init__(message)


class LayoutError(PeagentError):
    """A partition layout cannot be laid out on this disk: too large, overlapping, ambiguous keeps.

    Raised while planning (peagent.disk.layout), so before anything is written; the message says
    which partitions, and gives sizes in MiB/GiB and in bytes.
    """

    code = "layout.invalid"
    exit_status = 2


class WrongMachineError(PeagentError):
    """The task names a different machine than this one."""

    code = "task.wrong_machine"
    exit_status = 2


class TargetError(PeagentError):
    """No disk can be chosen safely: none matches, several match, or the match is refused."""

    code = "target.refused"
    exit_status = 3


class InplaceError(TargetError):
    """An in-place re-image is refused before anything is deleted: no OS found, several, or an unknown one."""

    code = "inplace.refused"


class UnknownOSError(InplaceError):
    """The partition holds no operating system peagent recognises (refused unless the task forces it)."""

    code = "inplace.unknown_os"


class NoSpaceError(InplaceError):
    """The new OS would not fit beside the data that stays; found before anything is deleted."""

    code = "inplace.no_space"


class FetchError(PeagentError):
    """A task, image or other file could not be fetched from any distribution point."""

    code = "fetch.failed"
    exit_status = 4


class VerifyError(PeagentError):
    """The bytes written do not match the image's digest or size."""

    code = "verify.mismatch"
    exit_status = 5


class ImageError(PeagentError):
    """The image cannot be deployed: unknown compression, larger than the target, ..."""

    code = "image.unusable"
    exit_status = 6


class ManifestError(ImageError):
    """An image's manifest, frame table or block index is malformed or inconsistent."""

    code = "image.manifest"


class SignatureError(ImageError):
    """An image's signature is missing, made by an untrusted key, or wrong; or its pin differs."""

    code = "image.signature"


class UnsafeArchiveError(ImageError):
    """A file image or layer (a tar stream) asks for something unsafe: an absolute or ``..`` name, a
    write through a symlink, a hard link out of the target, a device node it may not create, a
    whiteout in a base image, or more data, entries or header bytes than the limits allow.

    Raised by peagent.files.extract before that entry is applied; the message names the entry and
    what was wrong. Nothing is ever written outside the target directory, but entries before the
    refused one may have been applied inside it: the target is unfinished.
    """

    code = "image.unsafe"


class DeviceError(PeagentError):
    """Reading or writing a block device (or target file) failed."""

    code = "device.io"
    exit_status = 7


class PartitionError(DeviceError):
    """Writing a partition table failed (libparted, sfdisk), or the kernel did not show the result."""

    code = "device.partition"


class FilesystemError(DeviceError):
    """Making a filesystem failed: its mkfs tool is missing from the PE, or it failed."""

    code = "device.filesystem"


class EraseError(PeagentError):
    """Erasing a disk failed (peagent.disk.erase): a tool or an ioctl failed, or the disk is in use."""

    code = "erase.failed"
    exit_status = 8


class EraseUnsupportedError(EraseError):
    """The disk cannot do the erase the task asks for (no discard, no secure erase, frozen, ...).

    Raised while planning, from the probed capabilities, so before anything is written; the
    message says what is missing and what to do (another mode, or the remedy for a frozen drive).
    """

    code = "erase.unsupported"


class EraseVerifyError(EraseError):
    """After an erase, the disk does not read back as erased: a sample is not zero, a signature remains."""

    code = "erase.verify"


def describe(value: object) -> str:
    """A short rendering of a found value for error messages (never a whole document)."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:56] + '..."'


class StateError(PeagentError):
    """Capturing the old OS's state, writing the new OS's, or setting its boot entry failed."""

    code = "state.failed"
    exit_status = 9


class UsageError(PeagentError):
    """The command line asks for something impossible (a missing directory, a bad option)."""

    code = "usage"
    exit_status = 2
