"""Wheels of the registry (seed 003 F-20, F-21): names, tags, the checks an
upload must pass, the version policy, and which wheels a worker installs.

Pure code: the object store (:mod:`rota.wheels.store`), the API and the worker's
sync (:mod:`rota.worker.wheelsync`) do the I/O around it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import HeaderParser
from typing import Any

from packaging.tags import Tag
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from rota.errors import Conflict, InvalidInput

#: What a stored wheel's name may look like (pyoco-server 0.5.1's rule).
NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+\.whl$")
#: One wheel tag (the tags that pick workers, not the interpreter tags).
TAG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
#: Object-store headers of a wheel; the names pyoco-server uses, so either
#: server's workers read the other's bucket.
TAGS_HEADER = "x-pyoco-wheel-tags"
SHA256_HEADER = "sha256"


class WheelConflict(Conflict):
    """The version policy refuses the upload (same or lower version)."""


@dataclass(frozen=True, slots=True)
class WheelName:
    filename: str
    #: Canonical project name (``My_Pkg`` → ``my-pkg``).
    package: str
    version: Version
    #: Interpreter/ABI/platform tags of the file name (``py3-none-any``).
    file_tags: frozenset[Tag]


def parse_name(filename: str) -> WheelName:
    """Check and parse a wheel's file name; InvalidInput says what is wrong."""
    name = (filename or "").strip()
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid wheel name {filename!r}: a file name ending in .whl, of letters, "
            "digits and ._+- only",
            field="wheel",
        )
    try:
        package, version, _build, tags = parse_wheel_filename(name)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise InvalidInput(f"invalid wheel filename {name!r}: {exc}", field="wheel") from None
    return WheelName(name, str(package), version, frozenset(tags))


def parse_tags(raw: str | None) -> list[str]:
    """``"a, b,a"`` → ``["a", "b"]`` (order kept, repeats dropped)."""
    out: list[str] = []
    for part in (raw or "").split(","):
        tag = part.strip()
        if not tag:
            continue
        if not TAG_RE.fullmatch(tag) or len(tag) > 100:
            raise InvalidInput(
                f"invalid wheel tag {tag!r}: letters, digits, '_' and '-' only", field="tags"
            )
        if tag not in out:
            out.append(tag)
    return out


def tags_from_headers(headers: Mapping[str, Any] | None) -> list[str]:
    raw = (headers or {}).get(TAGS_HEADER)
    try:
        return parse_tags(raw if isinstance(raw, str) else None)
    except InvalidInput:
        return []


def sha256_from_headers(headers: Mapping[str, Any] | None) -> str | None:
    raw = str((headers or {}).get(SHA256_HEADER) or "").strip().lower()
    return raw if re.fullmatch(r"[0-9a-f]{64}", raw) else None


def store_digest(sha256_hex: str) -> str:
    """The object store's digest notation (``SHA-256=<urlsafe base64>``)."""
    return "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode()


def check_contents(name: WheelName, data: bytes) -> str:
    """Check an uploaded wheel's bytes against its name; return its sha256.

    A wheel is a zip whose entries stay inside the install directory, with a
    ``<name>-<version>.dist-info`` holding METADATA and WHEEL, and whose
    METADATA names the package and version of the file name."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput("the file is not a wheel: not a zip archive", field="wheel") from None
    with archive:
        members = archive.namelist()
        for member in members:
            parts = member.replace("\\", "/").split("/")
            if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or ".." in parts:
                raise InvalidInput(
                    f"the wheel has an entry outside its install directory: {member!r}",
                    field="wheel",
                )
        dist_infos = {
            m.split("/", 1)[0]
            for m in members
            if "/" in m and m.split("/", 1)[0].endswith(".dist-info")
        }
        wanted = [d for d in dist_infos if _dist_info_matches(d, name.package, name.version)]
        if not wanted:
            raise InvalidInput(
                f"the wheel has no {name.package}-{name.version}.dist-info directory "
                f"(found: {', '.join(sorted(dist_infos)) or 'none'})",
                field="wheel",
            )
        dist_info = wanted[0]
        for required in ("METADATA", "WHEEL"):
            if f"{dist_info}/{required}" not in members:
                raise InvalidInput(f"the wheel has no {dist_info}/{required}", field="wheel")
        try:
            text = archive.read(f"{dist_info}/METADATA").decode("utf-8")
        except (UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
            raise InvalidInput(
                f"the wheel's METADATA is unreadable: {exc}", field="wheel"
            ) from None
    metadata = HeaderParser().parsestr(text)
    meta_name = canonicalize_name(str(metadata.get("Name") or ""))
    try:
        meta_version = Version(str(metadata.get("Version") or ""))
    except InvalidVersion:
        meta_version = None
    if meta_name != name.package or meta_version != name.version:
        raise InvalidInput(
            f"the wheel's METADATA says {metadata.get('Name')} {metadata.get('Version')}, "
            f"its file name {name.package} {name.version}",
            field="wheel",
        )
    return hashlib.sha256(data).hexdigest()


def _dist_info_matches(directory: str, package: str, version: Version) -> bool:
    stem = directory[: -len(".dist-info")]
    dist, _, ver = stem.rpartition("-")
    try:
        return canonicalize_name(dist) == package and Version(ver) == version
    except InvalidVersion:
        return False


def check_version_policy(new: WheelName, stored: Iterable[str]) -> None:
    """Seed 003's version policy: a package is only ever uploaded again with a
    higher version. ``stored``: the file names in the registry."""
    current: Version | None = None
    for filename in stored:
        try:
            other = parse_name(filename)
        except InvalidInput:
            continue
        if other.package == new.package and (current is None or other.version > current):
            current = other.version
    if current is not None and new.version <= current:
        raise WheelConflict(
            f"{new.package} {new.version} is not higher than the current version {current}: "
            "bump the version to upload it again",
            hint=f"current version: {current}",
        )


@dataclass(frozen=True, slots=True)
class Stored:
    """A wheel in the registry, as a worker sees it."""

    filename: str
    sha256: str | None
    tags: tuple[str, ...]
    nuid: str = ""
    size: int = 0


@dataclass(frozen=True, slots=True)
class Choice:
    """The wheel a worker installs for one package."""

    package: str
    version: str
    filename: str
    sha256: str | None
    tags: tuple[str, ...]
    nuid: str = ""


@dataclass(slots=True)
class Selection:
    chosen: dict[str, Choice] = field(default_factory=dict)
    #: Wheels that matched the worker's tags but not its interpreter.
    incompatible: list[str] = field(default_factory=list)

    def key(self) -> tuple[tuple[str, str], ...]:
        """What the installed set depends on: each file and its digest."""
        return tuple(sorted((c.filename, c.sha256 or c.nuid) for c in self.chosen.values()))


def select(
    stored: Iterable[Stored], worker_tags: Iterable[str], supported: Iterable[Tag]
) -> Selection:
    """Per package, the newest wheel whose tags intersect ``worker_tags`` (a
    wheel without tags is for every worker) and whose interpreter tags this
    worker supports."""
    mine = set(worker_tags)
    supported_tags = frozenset(supported)
    best: dict[str, tuple[Version, Choice]] = {}
    out = Selection()
    for item in stored:
        if item.tags and mine.isdisjoint(item.tags):
            continue
        try:
            name = parse_name(item.filename)
        except InvalidInput:
            continue
        if name.file_tags and supported_tags.isdisjoint(name.file_tags):
            out.incompatible.append(item.filename)
            continue
        held = best.get(name.package)
        if held is None or name.version > held[0]:
            best[name.package] = (
                name.version,
                Choice(
                    name.package,
                    str(name.version),
                    item.filename,
                    item.sha256,
                    tuple(item.tags),
                    item.nuid,
                ),
            )
    out.chosen = {package: choice for package, (_, choice) in sorted(best.items())}
    out.incompatible.sort()
    return out
