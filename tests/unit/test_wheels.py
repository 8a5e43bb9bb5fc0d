"""The wheel registry's pure rules: names, tags, the contents check, the
version policy and which wheels a worker picks (rota.domain.wheels)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from packaging.tags import Tag

from rota.domain import wheels as w
from rota.errors import InvalidInput
from tests.wheels_helpers import zip_bytes

META = "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n"


def wheel_bytes(dist: str = "my_pkg", version: str = "1.0", meta_name: str = "My-Pkg", **extra):
    return zip_bytes(
        {
            "my_pkg/__init__.py": "",
            f"{dist}-{version}.dist-info/METADATA": META.format(name=meta_name, version=version),
            f"{dist}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\n",
            **extra,
        }
    )


def test_names_parse_with_canonical_package_and_version():
    name = w.parse_name("My_Pkg-1.0.post1-py3-none-any.whl")
    assert name.package == "my-pkg" and str(name.version) == "1.0.post1"
    assert Tag("py3", "none", "any") in name.file_tags
    for bad in (
        "pkg.whl",
        "pkg-1.0.tar.gz",
        "../pkg-1.0-py3-none-any.whl",
        "",
        "a b-1-py3-none-any.whl",
    ):
        with pytest.raises(InvalidInput):
            w.parse_name(bad)


def test_tags_are_trimmed_deduplicated_and_checked():
    assert w.parse_tags(" a, b ,a,,") == ["a", "b"]
    assert w.parse_tags(None) == [] and w.parse_tags("") == []
    with pytest.raises(InvalidInput, match="invalid wheel tag"):
        w.parse_tags("a,b.c")
    assert w.tags_from_headers({w.TAGS_HEADER: "x,y"}) == ["x", "y"]
    assert w.tags_from_headers({w.TAGS_HEADER: "bad tag"}) == []
    assert w.tags_from_headers(None) == []


def test_contents_must_match_the_name_and_stay_inside():
    name = w.parse_name("my_pkg-1.0-py3-none-any.whl")
    data = wheel_bytes()
    assert w.check_contents(name, data) == hashlib.sha256(data).hexdigest()
    cases = {
        b"plain bytes": "not a zip",
        wheel_bytes(meta_name="other"): "METADATA says other 1.0",
        wheel_bytes(dist="other"): "no my-pkg-1.0.dist-info",
        wheel_bytes(**{"../x.py": ""}): "outside its install directory",
        wheel_bytes(**{"/abs.py": ""}): "outside its install directory",
        wheel_bytes(**{"C:/x.py": ""}): "outside its install directory",
        wheel_bytes(**{"a/../../x.py": ""}): "outside its install directory",
    }
    for payload, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            w.check_contents(name, payload)


def test_a_package_only_ever_goes_up():
    stored = [
        "my_pkg-1.0-py3-none-any.whl",
        "my_pkg-2.0-py3-none-any.whl",
        "other-9-py3-none-any.whl",
    ]
    w.check_version_policy(w.parse_name("my_pkg-2.0.1-py3-none-any.whl"), stored)
    w.check_version_policy(w.parse_name("new-0.1-py3-none-any.whl"), stored)
    for version in ("2.0", "1.5", "2.0.0"):
        with pytest.raises(w.WheelConflict, match="current version 2.0") as err:
            w.check_version_policy(w.parse_name(f"My.Pkg-{version}-py3-none-any.whl"), stored)
        assert err.value.http_status == 409


ANY = [Tag("py3", "none", "any")]


def stored(filename: str, *tags: str, sha: str = "") -> w.Stored:
    return w.Stored(filename, sha or hashlib.sha256(filename.encode()).hexdigest(), tags)


def test_select_takes_the_newest_matching_wheel_per_package():
    items = [
        stored("a-1.0-py3-none-any.whl", "x"),
        stored("a-3.0-py3-none-any.whl", "y"),  # not for us
        stored("a-2.0-py3-none-any.whl", "x", "z"),
        stored("b-1.0-py3-none-any.whl"),  # no tags: every worker
        stored("c-1.0-cp27-cp27m-win32.whl", "x"),  # another interpreter
        stored("not-a-wheel.txt", "x"),
    ]
    chosen = w.select(items, ["x"], ANY)
    assert {p: c.version for p, c in chosen.chosen.items()} == {"a": "2.0", "b": "1.0"}
    assert chosen.incompatible == ["c-1.0-cp27-cp27m-win32.whl"]
    assert w.select(items, ["q"], ANY).chosen.keys() == {"b"}


def test_the_selection_key_changes_with_a_file_or_its_digest_only():
    one = w.select([stored("a-1.0-py3-none-any.whl", "x")], ["x"], ANY).key()
    same = w.select([stored("a-1.0-py3-none-any.whl", "x", "y")], ["x"], ANY).key()
    assert one == same
    other_bytes = w.select([stored("a-1.0-py3-none-any.whl", "x", sha="0" * 64)], ["x"], ANY)
    assert other_bytes.key() != one


def test_store_digest_is_the_object_store_notation():
    sha = hashlib.sha256(b"x").hexdigest()
    # What nats-py writes: the URL-safe base64 of the raw digest.
    raw = base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).decode()
    assert w.store_digest(sha) == f"SHA-256={raw}"
    assert w.sha256_from_headers({"sha256": sha.upper()}) == sha
    assert w.sha256_from_headers({"sha256": "nope"}) is None
