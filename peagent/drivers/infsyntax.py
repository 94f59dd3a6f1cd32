"""The lexical layer of Windows INF files: from bytes to sections of tokenised lines.

An INF file is an old, forgiving, line-oriented format (WDK "General Syntax Rules for INF Files"). This
module knows the syntax and nothing of what sections mean; :mod:`peagent.drivers.inf` builds on it.

- **Encoding.** Vendor INFs are UTF-16LE with a BOM more often than not (Intel, Realtek), sometimes
  UTF-16 without one (detected here by NUL bytes: ASCII text in UTF-16 has a NUL in every other byte),
  UTF-8 with or without a BOM, or the ANSI code page of the author (cp1252 is the Western one).
- **Lines.** ``;`` starts a comment unless it is inside double quotes; a ``\\`` as the last character
  of a line (after the comment is removed) joins the next line to it. A logical line keeps the
  number of its first physical line, so warnings point where an editor shows the problem.
- **Sections.** ``[name]`` starts one; names are case-insensitive and a section written twice is one
  section (its lines are merged in file order).
- **Fields.** ``key = field, field, ...``: the key is optional, whitespace around each token is
  dropped, double quotes protect whitespace, commas, ``;`` and ``=`` and are removed, ``""`` inside
  quotes is one quote.
- **Strings.** ``%strkey%`` is replaced by its value from a ``[Strings]`` section; ``%%`` is a
  literal percent sign. Localised values live in ``[Strings.<LANGID>]`` (four hex digits, 0407 is
  German): :func:`select_strings` overlays the locale's section on the undecorated one.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

Warn = Callable[[int, str], None]  # (line number, what): collects "FILE:LINE: what" warnings


@dataclass(frozen=True)
class Line:
    number: int  # the first physical line (1-based) of this logical line
    text: str  # comment removed, continuations joined


@dataclass(frozen=True)
class Entry:
    number: int
    key: str | None  # None when the line has no unquoted '='
    fields: tuple[str, ...]


def decode(data: bytes) -> tuple[str, str]:
    """The text of an INF file and the name of the encoding it was read with.

    Undecodable bytes become U+FFFD rather than an error: one bad byte in a description must not
    cost the whole package (the caller warns when it sees U+FFFD).
    """
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(encoding.removesuffix("-sig"), errors="replace"), encoding
    head = data[:4096]
    if b"\x00" in head:
        # ASCII in UTF-16LE puts the NUL second ("[\0V\0"), in UTF-16BE first.
        odd, even = head[1::2].count(0), head[0::2].count(0)
        encoding = "utf-16-le" if odd >= even else "utf-16-be"
        return data.decode(encoding, errors="replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "cp1252"


def _strip_comment(raw: str) -> str:
    quoted = False
    for i, ch in enumerate(raw):
        if ch == '"':
            quoted = not quoted  # '""' toggles twice: an escaped quote keeps the state
        elif ch == ";" and not quoted:
            return raw[:i]
    return raw


def logical_lines(text: str) -> Iterator[Line]:
    """The lines of an INF with comments removed and ``\\`` continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        body = _strip_comment(raw).rstrip()
        if body.endswith("\\"):
            if not pending:
                start = number
            pending.append(body[:-1])
            continue
        if pending:
            yield Line(start, "".join(pending) + body)
            pending = []
        else:
            yield Line(number, body)
    if pending:  # a continuation on the last line continues into nothing
        yield Line(start, "".join(pending))


def split_sections(lines: Iterator[Line], warn: Warn) -> dict[str, list[Line]]:
    """Lines grouped by section (lower-cased name); a section written twice is merged."""
    sections: dict[str, list[Line]] = {}
    current: list[Line] | None = None
    for line in lines:
        stripped = line.text.strip()
        if not stripped:
            continue
        if stripped.startswith("["):
            close = stripped.find("]")
            name = stripped[1:close].strip() if close > 0 else ""
            if close < 0 or not name:
                warn(line.number, f"expected a section header '[name]', found '{stripped[:60]}'; "
                                  "its lines are skipped up to the next section")
                current = None
                continue
            if stripped[close + 1:].strip():
                warn(line.number, f"text after the section header [{name}] ignored")
            current = sections.setdefault(name.lower(), [])
        elif current is None:
            warn(line.number, f"line outside any section ignored: '{stripped[:60]}'")
        else:
            current.append(line)
    return sections


def tokenize(line: Line, strings: Mapping[str, str] | None, warn: Warn) -> Entry:
    """One logical line as key and fields, with quotes removed and ``%strkey%`` substituted.

    ``strings`` is None while reading the [Strings] sections themselves (their values are not
    substituted, but ``%%`` still means ``%``).
    """
    text = line.text
    key: str | None = None
    fields: list[str] = []
    chars: list[tuple[str, bool]] = []  # (character, protected from trimming)
    quoted = False
    i = 0

    def finish() -> str:
        start, end = 0, len(chars)
        while start < end and not chars[start][1] and chars[start][0].isspace():
            start += 1
        while end > start and not chars[end - 1][1] and chars[end - 1][0].isspace():
            end -= 1
        token = "".join(c for c, _ in chars[start:end])
        chars.clear()
        return token

    while i < len(text):
        ch = text[i]
        if ch == '"':
            if quoted and text.startswith('""', i):
                chars.append(('"', True))
                i += 1
            else:
                quoted = not quoted
        elif ch == "%":
            close = text.find("%", i + 1)
            if close < 0:
                chars.append(("%", quoted))  # a lone percent sign is itself
            elif close == i + 1:
                chars.append(("%", True))
                i = close
            elif strings is None:
                chars.append(("%", quoted))
            else:
                name = text[i + 1:close]
                value = strings.get(name.lower())
                if value is None:
                    warn(line.number, f"%{name}% is not defined in [Strings]; left as written")
                    value = f"%{name}%"
                chars.extend((c, True) for c in value)  # substituted text is never split or trimmed
                i = close
        elif ch == "=" and not quoted and key is None and not fields:
            key = finish()
        elif ch == "," and not quoted:
            fields.append(finish())
        else:
            chars.append((ch, quoted))
        i += 1
    if quoted:
        warn(line.number, "a quoted string is not closed before the end of the line; closed there")
    fields.append(finish())
    return Entry(line.number, key, tuple(fields))


def _strings_of(lines: list[Line], warn: Warn) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in lines:
        entry = tokenize(line, None, warn)
        if not entry.key:
            warn(line.number, f"expected 'strkey = value' in a Strings section, found '{line.text.strip()[:60]}'")
            continue
        # An unquoted value with commas is one string, not several fields.
        table[entry.key.lower()] = ",".join(entry.fields)
    return table


def parse_locale(locale: int | str) -> int:
    """A LANGID from 0x0407 or "0407" (hex, as in section names)."""
    return locale if isinstance(locale, int) else int(locale.removeprefix("0x"), 16)


def select_strings(sections: Mapping[str, list[Line]], locale: int | str, warn: Warn) -> dict[str, str]:
    """The string table for one locale: [Strings], overlaid by the primary language's neutral
    section (e.g. Strings.0007), overlaid by the exact locale's (Strings.0407).

    A key missing from the localised section falls back to the undecorated one, so a partly
    translated INF still resolves every key.
    """
    langid = parse_locale(locale)
    table = _strings_of(list(sections.get("strings", [])), warn)
    primary = langid & 0x3FF  # the low 10 bits are the primary language; SUBLANG_NEUTRAL is 0
    for wanted in dict.fromkeys((primary, langid)):
        for name, lines in sections.items():
            suffix = name.removeprefix("strings.")
            if suffix != name and re.fullmatch(r"(0x)?[0-9a-f]{1,4}", suffix) and int(suffix, 16) == wanted:
                table.update(_strings_of(lines, warn))
    return table
