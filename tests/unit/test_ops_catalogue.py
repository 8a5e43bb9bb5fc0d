"""The ops UI's Japanese catalogue is complete, and its compiled .mo matches it.

Read with Python only (no gettext tools at test time): the .po by a small
parser of its entries, the .mo by the standard library's gettext."""

from __future__ import annotations

import ast
import gettext
import re
from pathlib import Path

ROTA = Path(__file__).resolve().parents[2] / "src" / "rota"
PO = ROTA / "locale" / "ja" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")


def parse_po(text: str) -> list[dict]:
    """Entries of a .po file: msgid, msgid_plural, msgstr (joined; plural forms
    as a list), flags."""
    entries: list[dict] = []
    entry: dict = {}
    key = None

    def flush() -> None:
        if "msgid" in entry:
            entries.append(dict(entry))
        entry.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush()
            key = None
            continue
        if line.startswith("#,"):
            if "msgid" in entry:
                flush()
            entry.setdefault("flags", set()).update(f.strip() for f in line[2:].split(","))
            continue
        if line.startswith("#"):
            continue
        match = re.match(r'^(msgid|msgid_plural|msgstr(?:\[\d+\])?|msgctxt)\s+(".*")$', line)
        if match:
            if match[1] == "msgid" and "msgid" in entry:
                flush()
            key = match[1]
            entry[key] = ast.literal_eval(match[2])
        elif line.startswith('"') and key:
            entry[key] += ast.literal_eval(line)
    flush()
    return entries


def translations() -> list[dict]:
    return [e for e in parse_po(PO.read_text(encoding="utf-8")) if e["msgid"]]


def test_parser_reads_continuations_and_flags():
    entries = parse_po('#, fuzzy\nmsgid "a"\n"b"\nmsgstr ""\n"x"\n\nmsgid "c"\nmsgstr ""\n')
    assert entries == [
        {"flags": {"fuzzy"}, "msgid": "ab", "msgstr": "x"},
        {"msgid": "c", "msgstr": ""},
    ]


def test_every_japanese_msgstr_is_filled_and_none_is_fuzzy():
    entries = translations()
    assert len(entries) > 200
    empty = [
        e["msgid"]
        for e in entries
        if not (e.get("msgstr") or all(e.get(k) for k in e if k.startswith("msgstr[")))
    ]
    fuzzy = [e["msgid"] for e in entries if "fuzzy" in e.get("flags", set())]
    assert empty == [] and fuzzy == []


def test_placeholders_survive_translation():
    for e in translations():
        for pattern in (r"%\(\w+\)s", r"\{\w+\}", r"_[A-Z]+_"):
            assert sorted(re.findall(pattern, e["msgid"])) == sorted(
                re.findall(pattern, e["msgstr"])
            ), e["msgid"]


def test_compiled_catalogue_matches_the_po():
    with MO.open("rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
    for e in translations():
        key = f"{e['msgctxt']}\x04{e['msgid']}" if "msgctxt" in e else e["msgid"]
        assert catalog.get(key) == e["msgstr"], e["msgid"]


def test_literal_template_strings_are_in_the_catalogue():
    known = {e["msgid"] for e in translations()}
    literal = re.compile(r"""\{%\s*translate\s+(["'])(.*?)\1(?:\s+context\s+\S+)?\s*%\}""")
    missing = []
    for template in (ROTA / "templates" / "rota_ops").glob("*.html"):
        for _, text in literal.findall(template.read_text(encoding="utf-8")):
            if text not in known:
                missing.append((template.name, text))
    assert missing == []
