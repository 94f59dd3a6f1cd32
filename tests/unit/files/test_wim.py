"""peagent.files.wim without wimlib: its parsers on outputs captured from wimtools 1.13.6 (bookworm),
the completeness checks, the error mapping and the command lines; the tools are fakes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from peagent.disk.tools import NOT_INSTALLED, ToolResult
from peagent.errors import FilesystemError, ImageError, UsageError
from peagent.files import wim
from peagent.progress import Progress
from tests.unit.disk.fakes import FakeRunner

TWO_IMAGES = """\
WIM Information:
----------------
Path:           two.wim
GUID:           0xb599ad530869fd0a0afd991d17bbb09b
Version:        68864
Image Count:    2
Compression:    LZX
Chunk Size:     32768 bytes
Part Number:    1/1
Boot Index:     0
Size:           3002008 bytes
Attributes:     Relative path junction

Available Images:
-----------------
Index:                  1
Name:                   Base
Description:            
Directory Count:        2
File Count:             3
Total Bytes:            3000058
Hard Link Bytes:        0
Creation Time:          Mon Nov 23 23:44:32 2026 UTC
Last Modification Time: Mon Nov 23 23:44:32 2026 UTC
WIMBoot compatible:     no

Index:                  2
Name:                   Second
Description:            the dir only
Directory Count:        1
File Count:             2
Total Bytes:            14
Hard Link Bytes:        0
Creation Time:          Mon Nov 23 23:47:53 2026 UTC
Last Modification Time: Mon Nov 23 23:47:53 2026 UTC
WIMBoot compatible:     no

"""  # noqa: W291 (wiminfo pads an empty description)

PART_TWO = """\
WIM Information:
----------------
Path:           parts2.swm
GUID:           0xc3d4461da09f3df17d97e1b0f0b92a37
Version:        68864
Image Count:    1
Compression:    LZX
Chunk Size:     32768 bytes
Part Number:    2/3
Boot Index:     0
Size:           3000728 bytes
Attributes:     Relative path junction

Available Images:
-----------------
Index:                  1
Name:                   Base
Description:            
Directory Count:        2
File Count:             3
Total Bytes:            3000058
Hard Link Bytes:        0
Creation Time:          Mon Nov 23 23:44:32 2026 UTC
Last Modification Time: Mon Nov 23 23:44:32 2026 UTC
WIMBoot compatible:     no

"""  # noqa: W291

# An install.wim image as wiminfo shows it: more fields, which the parser must pass over.
WINDOWS_IMAGE = """\
Index:                  6
Name:                   Windows 11 Pro
Description:            Windows 11 Pro
Display Name:           Windows 11 Pro
Display Description:    Windows 11 Pro
Directory Count:        25102
File Count:             107543
Total Bytes:            19452102513
Hard Link Bytes:        7617519389
Creation Time:          Fri Sep 06 03:36:26 2024 UTC
Last Modification Time: Fri Sep 06 04:05:49 2024 UTC
Architecture:           x86_64
Product Name:           Microsoft® Windows® Operating System
Edition ID:             Professional
Installation Type:      Client
Product Type:           WinNT
Product Suite:          Terminal Server
Languages:              en-US
Default Language:       en-US
System Root:            WINDOWS
Major Version:          10
Minor Version:          0
Build:                  26100
Service Pack Build:     1742
Service Pack Level:     0
Flags:                  Professional
WIMBoot compatible:     no
"""

DELTA_XML = (
    '\ufeff<WIM><IMAGE INDEX="1"><NAME>Delta</NAME><DIRCOUNT>2</DIRCOUNT><FILECOUNT>5</FILECOUNT>'
    "<TOTALBYTES>3200066</TOTALBYTES><HARDLINKBYTES>0</HARDLINKBYTES><PEAGENT><DELTA_BASE_NAME>two.wim"
    "</DELTA_BASE_NAME><DELTA_BASE_GUID>b599ad530869fd0a0afd991d17bbb09b</DELTA_BASE_GUID></PEAGENT></IMAGE>"
    "<TOTALBYTES>200658</TOTALBYTES></WIM>"
)

# wimapply delta.dwm 1 out (no --ref), stdout and stderr as the tool wrote them.
MISSING_BLOB = (
    '\r[ERROR] "/big.bin": blob not found\n'
    "        SHA-1 message digest of missing blob:\n"
    "        c994ff4bfa37e9473acc3b8fab96b6ec89e1196d\n"
    "ERROR: If this is a delta WIM, use the --ref argument to specify the WIM(s) on which it is based.\n"
    "ERROR: Exiting with error code 55:\n"
    "       A file resource needed to complete the operation was missing from the WIM.\n"
)

# wimapply golden.wim 1 ntfs-3g-mountpoint (directory mode), stdout and stderr merged.
DIRECTORY_MODE = (
    "\n[WARNING] Ignoring named data streams of 1 files\n"
    "\n[WARNING] Ignoring FILE_ATTRIBUTE_HIDDEN of 2 files\n"
    "\n[WARNING] Ignoring Windows NT security descriptors of 4 files\n"
    '\nApplying image 1 ("golden") from "/tmp/wx/golden.wim" to directory "mc"\n'
    "\rExtracting file data: 0 bytes of 116 bytes (0%) done"
    "\rExtracting file data: 90 bytes of 116 bytes (77%) done"
    "\rExtracting file data: 116 bytes of 116 bytes (100%) done\n"
    "Done applying WIM image.\n"
)


def info_of(text: str, path: str = "two.wim", xml: str | None = None) -> wim.WimInfo:
    props = wim.parse_properties(xml) if xml else None
    return wim.parse_info(text, Path(path), props)


# --- wiminfo ---------------------------------------------------------------------------------------


def test_parse_info_of_a_two_image_wim():
    info = info_of(TWO_IMAGES)
    assert (info.guid, info.part, info.parts, info.image_count, info.compression, info.size) == (
        "b599ad530869fd0a0afd991d17bbb09b", 1, 1, 2, "LZX", 3002008)
    assert not info.split
    assert info.images == (
        wim.WimImage(1, "Base", "", directories=2, files=3, total_bytes=3000058),
        wim.WimImage(2, "Second", "the dir only", directories=1, files=2, total_bytes=14),
    )
    assert info.image(2).name == "Second"


def test_a_missing_index_lists_the_images():
    with pytest.raises(ImageError, match=r"two.wim has no image 3: it holds 2 \(1: 'Base'; 2: 'Second'\); give one"):
        info_of(TWO_IMAGES).image(3)


def test_parse_info_of_a_split_part():
    info = info_of(PART_TWO, "parts2.swm")
    assert (info.part, info.parts, info.split, info.guid) == (2, 3, True, "c3d4461da09f3df17d97e1b0f0b92a37")


def test_parse_info_passes_over_the_fields_of_a_windows_image():
    text = TWO_IMAGES.split("Index:                  1")[0] + WINDOWS_IMAGE
    (image,) = info_of(text).images
    assert image == wim.WimImage(6, "Windows 11 Pro", "Windows 11 Pro", directories=25102, files=107543,
                                 total_bytes=19452102513)


def test_parse_info_refuses_what_is_not_wiminfo_output():
    with pytest.raises(ImageError, match=r"x.wim: wiminfo gave no GUID \(found None\): is this a WIM file\?"):
        wim.parse_info("garbage\n", Path("x.wim"))
    with pytest.raises(ImageError, match=r"wiminfo gave no number for 'Image Count'"):
        wim.parse_info(TWO_IMAGES.replace("Image Count:    2", "Image Count:    two"), Path("x.wim"))


def test_the_recorded_delta_base_comes_from_the_xml_properties():
    assert wim.parse_properties(DELTA_XML) == {1: {"PEAGENT/DELTA_BASE_NAME": "two.wim",
                                                   "PEAGENT/DELTA_BASE_GUID": "b599ad530869fd0a0afd991d17bbb09b"}}
    info = info_of(PART_TWO.replace("Part Number:    2/3", "Part Number:    1/1"), "v2.dwm", DELTA_XML)
    assert info.images[0].delta_base == wim.DeltaBase("two.wim", "b599ad530869fd0a0afd991d17bbb09b")
    assert wim.parse_properties("<WIM><IMAGE INDEX='1'><NAME>x</NAME></IMAGE></WIM>") == {}
    with pytest.raises(ImageError, match="the WIM's XML document is malformed"):
        wim.parse_properties("<WIM><IMAGE>")


# --- completeness -----------------------------------------------------------------------------------

WHOLE = info_of(TWO_IMAGES, "base.wim")
SPLIT = [replace(info_of(PART_TWO, f"x{'' if n == 1 else n}.swm"), part=n) for n in (1, 2, 3)]
DELTA = replace(WHOLE, path=Path("v2.dwm"), guid="1" * 32,
                images=(replace(WHOLE.images[0], delta_base=wim.DeltaBase("base.wim", WHOLE.guid)),))


def test_a_whole_wim_is_complete_alone():
    assert wim.check_complete(WHOLE, 2, []).name == "Second"


def test_every_part_of_a_split_wim_is_needed():
    assert wim.check_complete(SPLIT[0], 1, SPLIT[1:]).name == "Base"
    with pytest.raises(ImageError, match=r"^the split WIM x.swm has 3 parts, but part 2 \(x2.swm\) is not among the "
                                         r"files given: pass every part as a ref$"):
        wim.check_complete(SPLIT[0], 1, [SPLIT[2]])
    with pytest.raises(ImageError, match=r"part 2 \(x2.swm\), part 3 \(x3.swm\) are not among"):
        wim.check_complete(SPLIT[0], 1, [])
    with pytest.raises(ImageError, match=r"^x2.swm is part 2 of 3 of a split WIM: apply its first part"):
        wim.check_complete(SPLIT[1], 1, [SPLIT[0], SPLIT[2]])


def test_a_split_ref_needs_its_other_parts_too():
    with pytest.raises(ImageError, match=r"the split WIM x.swm has 3 parts, but part 3 \(x3.swm\) is not"):
        wim.check_complete(WHOLE, 1, SPLIT[:2])


def test_a_delta_names_its_missing_base():
    with pytest.raises(ImageError, match=r"^v2.dwm \(image 1\) is a delta WIM: it holds only what its base base.wim "
                                         rf"\(GUID {WHOLE.guid}\) lacks, and that base is missing \(refs given: "
                                         r"x.swm, x2.swm, x3.swm\); pass base.wim as a ref$"):
        wim.check_complete(DELTA, 1, [SPLIT[0], *SPLIT[1:]])
    assert wim.check_complete(DELTA, 1, [WHOLE]).name == "Base"


def test_a_delta_refuses_another_wim_of_its_bases_name():
    recaptured = replace(WHOLE, guid="2" * 32)
    with pytest.raises(ImageError, match=rf"is a delta of base.wim with GUID {WHOLE.guid}, but the base.wim given "
                                         rf"has GUID {'2' * 32}: that is another WIM of the same name"):
        wim.check_complete(DELTA, 1, [recaptured])


# --- progress ---------------------------------------------------------------------------------------

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(("line", "expected"), [
    ("Extracting file data: 3121 KiB of 3125 KiB (99%) done",
     wim.ProgressLine("Extracting file data", 3121 * KIB, 3125 * KIB, 99)),
    ("Extracting file data: 3125 KiB of 3125 KiB (100%) done",
     wim.ProgressLine("Extracting file data", 3125 * KIB, 3125 * KIB, 100)),
    ("Archiving file data: 6 bytes of 14 bytes (42%) done", wim.ProgressLine("Archiving file data", 6, 14, 42)),
    ("Splitting WIM: 2929 KiB of 2930 KiB (99%) written, part 3 of 3",
     wim.ProgressLine("Splitting WIM", 2929 * KIB, 2930 * KIB, 99)),
    # wimlib 1.14's capture line (no label)
    ("812 MiB of 4329 MiB (uncompressed) written (18% done)", wim.ProgressLine("Writing", 812 * MIB, 4329 * MIB, 18)),
    # GiB counts are coarse: the percentage is finer, and wins
    ("Extracting file data: 2 GiB of 18 GiB (15%) done",
     wim.ProgressLine("Extracting file data", 18 * GIB * 15 // 100, 18 * GIB, 15)),
    # 100% is the whole total even when the unit count lags
    ("Extracting file data: 17 GiB of 18 GiB (100%) done", wim.ProgressLine("Extracting file data", 18 * GIB, 18 * GIB, 100)),
])
def test_parse_progress(line, expected):
    assert wim.parse_progress(line) == expected


@pytest.mark.parametrize("line", [
    'Verifying integrity of "x.wim": 1 MiB of 2 MiB (50%) done',
    "Creating files: 10 of 2000 (0%) done",
    "2929 KiB scanned (3 files, 2 directories)    ",
    "Using LZX compression with 2 threads",
    "",
])
def test_other_lines_are_not_progress(line):
    assert wim.parse_progress(line) is None


def pieces(text: str) -> list[str]:
    return text.replace("\r", "\n").split("\n")


def test_output_reports_increasing_progress_and_keeps_warnings():
    seen: list[tuple[int, int]] = []
    out = wim._Output(frozenset({"Extracting file data"}), lambda d, t: seen.append((d, t)))
    for piece in pieces(DIRECTORY_MODE):
        out(piece)
    out.finish()
    assert seen == [(0, 116), (90, 116), (116, 116)]
    assert out.warnings == ["Ignoring named data streams of 1 files", "Ignoring FILE_ATTRIBUTE_HIDDEN of 2 files",
                            "Ignoring Windows NT security descriptors of 4 files"]
    assert out.errors == []


def test_output_never_goes_backwards_and_ends_at_the_total():
    seen: list[tuple[int, int]] = []
    out = wim._Output(frozenset({"Extracting file data"}), lambda d, t: seen.append((d, t)))
    for line in ("Extracting file data: 5 MiB of 20 MiB (25%) done", "Extracting file data: 5 MiB of 20 MiB (25%) done",
                 "Extracting file data: 10 MiB of 20 MiB (50%) done",
                 'Verifying integrity of "x.wim": 1 MiB of 2 MiB (50%) done'):
        out(line)
    out.finish()
    assert seen == [(5 * MIB, 20 * MIB), (10 * MIB, 20 * MIB), (20 * MIB, 20 * MIB)]


def test_output_quotes_wimlibs_error_without_the_exit_line():
    out = wim._Output(frozenset(), None)
    for piece in pieces(MISSING_BLOB):
        out(piece)
    assert out.says() == ('"/big.bin": blob not found SHA-1 message digest of missing blob: '
                          "c994ff4bfa37e9473acc3b8fab96b6ec89e1196d If this is a delta WIM, use the --ref argument to "
                          "specify the WIM(s) on which it is based. A file resource needed to complete the operation "
                          "was missing from the WIM.")


def test_feed_drives_a_progress_with_rate_and_eta():
    now = [0.0]
    snaps = []
    progress = Progress(None, snaps.append, interval=1.0, clock=lambda: now[0])
    update = wim.feed(progress)
    for second, done in enumerate((0, 10 * MIB, 30 * MIB), start=1):
        now[0] = float(second)
        update(done, 40 * MIB)
    snap = progress.finish()
    assert (snap.done, snap.total) == (30 * MIB, 40 * MIB)
    assert (snap.rate, snap.eta) == (10 * MIB, 1.0)  # 30 MiB in 3 s, 10 MiB to go
    assert "30.0/40.0 MiB (75%)" in snap.line("applying")


# --- errors and command lines ------------------------------------------------------------------------


def test_apply_error_mapping():
    refs = [Path("a.wim")]
    err = wim.apply_error(55, "blob not found", Path("v2.dwm"), 1, "/mnt", refs, False)
    assert isinstance(err, ImageError) and str(err).startswith(
        "applying image 1 of v2.dwm to /mnt: file data it needs is in none of the WIMs given (refs: a.wim). It is a "
        "delta WIM whose base is missing")
    assert "Nothing was written" in str(err)
    err = wim.apply_error(46, 'Error creating "/Users" in NTFS volume: File exists', Path("x.wim"), 1, "/dev/sda3",
                          [], True)
    assert isinstance(err, FilesystemError) and "writing the NTFS volume failed, and it is now partly written" in str(err)
    err = wim.apply_error(43, "no magic", Path("x.wim"), 1, "/mnt", [], False)
    assert type(err) is ImageError and "it is not a WIM file (wimlib: no magic)" in str(err)
    err = wim.apply_error(36, "", Path("x2.swm"), 1, "/mnt", [], False)
    assert "not the first part of a split WIM" in str(err)
    err = wim.apply_error(NOT_INSTALLED, "", Path("x.wim"), 1, "/mnt", [], False)
    assert "wimapply is not installed in this PE (Debian package wimtools)" in str(err)
    assert "wimapply status 99" in str(wim.apply_error(99, "odd", Path("x.wim"), 1, "/mnt", [], False))


def test_apply_command_escapes_ref_globs():
    assert wim.apply_command(Path("x.swm"), 1, "/dev/sda3", [Path("x2.swm"), Path("odd[1]*.swm")]) == [
        "wimapply", "x.swm", "1", "/dev/sda3", "--ref=x2.swm", "--ref=odd[[]1][*].swm"]
    assert wim.apply_command(Path("x.wim"), 2, "/mnt", unix_data=True)[-1] == "--unix-data"


def test_capture_command_records_the_delta_base():
    base = replace(WHOLE, path=Path("/srv/base.wim"))
    assert wim.capture_command("/src", Path("v2.dwm"), "v2", description="monthly", delta_from=base,
                               compress="LZMS") == [
        "wimcapture", "/src", "v2.dwm", "v2", "monthly", "--compress=LZMS", "--delta-from=/srv/base.wim",
        "--image-property=PEAGENT/DELTA_BASE_NAME=base.wim", f"--image-property=PEAGENT/DELTA_BASE_GUID={WHOLE.guid}"]
    assert wim.capture_command("/dev/sda3", Path("g.wim"), "golden") == ["wimcapture", "/dev/sda3", "g.wim", "golden"]


# --- the operations, with fake tools ------------------------------------------------------------------


def wiminfo_answers(files: dict[str, tuple[str, str | None]]) -> FakeRunner:
    """A runner answering wiminfo for each path: its text, and its XML document (or none)."""

    def answer(args: tuple[str, ...]) -> ToolResult:
        text, xml = files[Path(args[1]).name]
        extract = [a for a in args if a.startswith("--extract-xml=")]
        if extract:
            Path(extract[0].split("=", 1)[1]).write_bytes((xml or "<WIM></WIM>").encode("utf-16"))
        return ToolResult(args, 0, text)

    return FakeRunner({("wiminfo",): answer})


class FakeStreamer:
    def __init__(self, output: str, returncode: int = 0) -> None:
        self.output = output
        self.returncode = returncode
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], on_text: Callable[[str], None]) -> ToolResult:
        self.calls.append(list(argv))
        for piece in pieces(self.output):
            on_text(piece)
        return ToolResult(tuple(argv), self.returncode)


def test_apply_in_directory_mode(tmp_path):
    (tmp_path / "base.wim").write_bytes(b"MSWIM")
    runner = wiminfo_answers({"base.wim": (TWO_IMAGES, None)})
    streamer = FakeStreamer(DIRECTORY_MODE)
    seen: list[tuple[int, int]] = []
    applied = wim.apply(tmp_path / "base.wim", 2, tmp_path, runner=runner, streamer=streamer,
                        progress=lambda d, t: seen.append((d, t)))
    assert streamer.calls == [["wimapply", str(tmp_path / "base.wim"), "2", str(tmp_path)]]
    assert applied == wim.Applied(tmp_path / "base.wim", 2, "Second", str(tmp_path), False, 116, (
        "Ignoring named data streams of 1 files", "Ignoring FILE_ATTRIBUTE_HIDDEN of 2 files",
        "Ignoring Windows NT security descriptors of 4 files"))
    assert seen[-1] == (116, 116)


def test_apply_refuses_a_missing_base_before_running_wimapply(tmp_path):
    (tmp_path / "v2.dwm").write_bytes(b"MSWIM")
    runner = wiminfo_answers({"v2.dwm": (PART_TWO.replace("2/3", "1/1"), DELTA_XML)})
    streamer = FakeStreamer("")
    with pytest.raises(ImageError, match=r"is a delta WIM: it holds only what its base two.wim .* pass two.wim as a ref"):
        wim.apply(tmp_path / "v2.dwm", 1, tmp_path, runner=runner, streamer=streamer)
    with pytest.raises(ImageError, match=r"nowhere.wim: no such WIM file \(given as a ref of v2.dwm\)"):
        wim.apply(tmp_path / "v2.dwm", 1, tmp_path, refs=[tmp_path / "nowhere.wim"], runner=runner, streamer=streamer)
    assert streamer.calls == []


def test_apply_maps_wimapplys_failure(tmp_path):
    (tmp_path / "v2.dwm").write_bytes(b"MSWIM")
    runner = wiminfo_answers({"v2.dwm": (TWO_IMAGES, None)})
    with pytest.raises(ImageError, match=r"It is a delta WIM whose base is missing.*wimlib: \"/big.bin\": blob not found"):
        wim.apply(tmp_path / "v2.dwm", 1, tmp_path, runner=runner, streamer=FakeStreamer(MISSING_BLOB, 55))


def test_apply_into_a_file_or_missing_directory_is_refused(tmp_path):
    (tmp_path / "base.wim").write_bytes(b"MSWIM")
    runner = wiminfo_answers({"base.wim": (TWO_IMAGES, None)})
    with pytest.raises(FilesystemError, match=r"nowhere is not a directory: a WIM image is applied into a mounted "
                                              "filesystem, or onto an unmounted NTFS partition with ntfs_volume"):
        wim.apply(tmp_path / "base.wim", 1, tmp_path / "nowhere", runner=runner, streamer=FakeStreamer(""))


def test_a_pe_without_wimtools_is_told_the_package(tmp_path):
    (tmp_path / "base.wim").write_bytes(b"MSWIM")
    with pytest.raises(ImageError, match=r"wiminfo is not installed in this PE \(Debian package wimtools\): build the "
                                         r"PE with PEAGENT_PE_WINDOWS=1 \(buildroot/pe-packages-windows\.list\)"):
        wim.info(tmp_path / "base.wim", runner=FakeRunner())
    with pytest.raises(ImageError, match=r"reading .*x.wim failed: it is not a WIM file"):
        (tmp_path / "x.wim").write_bytes(b"junk")
        wim.info(tmp_path / "x.wim", runner=FakeRunner({("wiminfo",): ToolResult((), 43, "", "ERROR: not a WIM")}))


def test_capture_refuses_bad_input_before_running(tmp_path):
    (tmp_path / "old.wim").write_bytes(b"MSWIM")
    streamer = FakeStreamer("")
    with pytest.raises(UsageError, match=r"old.wim exists: a capture writes a new WIM"):
        wim.capture(tmp_path, tmp_path / "old.wim", "x", streamer=streamer)
    with pytest.raises(UsageError, match=r"compression: expected one of none, XPRESS, LZX, LZMS, found 'zstd'"):
        wim.capture(tmp_path, tmp_path / "new.wim", "x", compress="zstd", streamer=streamer)
    with pytest.raises(ImageError, match="nowhere: no such directory or device to capture"):
        wim.capture(tmp_path / "nowhere", tmp_path / "new.wim", "x", streamer=streamer)
    assert streamer.calls == []


def test_a_failed_capture_leaves_no_wim(tmp_path):
    streamer = FakeStreamer("ERROR: Exiting with error code 72:\n       Could not write data to a file.\n", 72)

    def failing(argv: Sequence[str], on_text: Callable[[str], None]) -> ToolResult:
        Path(argv[2]).write_bytes(b"MSWIM half")
        return streamer(argv, on_text)

    with pytest.raises(ImageError, match=r"failed \(wimcapture status 72; wimlib: Could not write data to a file.\)"):
        wim.capture(tmp_path, tmp_path / "out.wim", "x", streamer=failing, runner=wiminfo_answers({}))
    assert not (tmp_path / "out.wim").exists()


def test_part_paths_follow_wimsplit():
    assert [wim.part_path(Path("/d/win.swm"), n) for n in (1, 2, 10)] == [
        Path("/d/win.swm"), Path("/d/win2.swm"), Path("/d/win10.swm")]


def test_stream_tool_splits_on_cr_and_lf_and_reports_a_missing_tool():
    got: list[str] = []
    result = wim.stream_tool(["printf", r"a\rb\nc"], got.append)
    assert result.ok and got == ["a", "b", "c"]
    assert wim.stream_tool(["peagent-no-such-tool"], got.append).returncode == NOT_INSTALLED


def test_apply_in_ntfs_mode_checks_the_volume_first(tmp_path, monkeypatch):
    (tmp_path / "base.wim").write_bytes(b"MSWIM")
    checked: list[str] = []
    monkeypatch.setattr(wim.ntfs, "check_unused", checked.append)
    runner = wiminfo_answers({"base.wim": (TWO_IMAGES, None)})
    runner.answers[("ntfs-3g.probe",)] = ToolResult((), 0)
    runner.answers[("wimdir",)] = ToolResult((), 0, "/\n/Users\n/Users/Default\n/Windows\n/Windows/System32\n")
    runner.answers[("ntfsls",)] = ToolResult((), 0, "peagent.kept\nwindows\n")
    streamer = FakeStreamer("")
    with pytest.raises(FilesystemError, match=r"already holds windows, which the image also has at its root"):
        wim.apply(tmp_path / "base.wim", 1, "/dev/sda3", ntfs_volume=True, runner=runner, streamer=streamer)
    assert checked == ["/dev/sda3"] and streamer.calls == []
    assert [c[0] for c in runner.calls[2:]] == ["ntfs-3g.probe", "wimdir", "ntfsls"]

    runner.answers[("ntfsls",)] = ToolResult((), 0, "peagent.kept\n")
    applied = wim.apply(tmp_path / "base.wim", 1, "/dev/sda3", ntfs_volume=True, runner=runner, streamer=streamer)
    assert streamer.calls == [["wimapply", str(tmp_path / "base.wim"), "1", "/dev/sda3"]] and applied.ntfs_volume
