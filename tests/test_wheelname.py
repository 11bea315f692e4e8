"""Wheel file names: fastelf.wheelname agrees with packaging (pip's parser).

The oracle is ``packaging.utils.parse_wheel_filename``: a name is a wheel name
exactly when packaging accepts it, and the parts fastelf keeps as written
give back packaging's tags.  retag writes names back, so its names are
checked to round-trip through packaging too.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from fastelf.errors import WheelError
from fastelf.retag import retagged_name, split_wheel_name
from fastelf.wheelname import BAD_WHEEL_NAME, parse_wheel_name, platform_tags_of

VALID = [
    "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "a-1.0-1-py3-none-any.whl",                                     # build tag
    "a-1.0-12abc-py2.py3-none-any.whl",                             # build tag with a suffix
    "MarkupSafe-3.0.2-cp311-cp311-musllinux_1_2_x86_64.whl",        # case kept
    "c-1.0-cp311-cp311-Linux_X86_64.whl",                           # installers lowercase tags
    "zope.interface-7.1-cp39-abi3-manylinux2014_x86_64.linux_x86_64.linux_x86_64.whl",
    "d-1.0-py3-none-any.whl",
]


def _tags_of(parts) -> frozenset:
    return frozenset(Tag(p, a, pl)
                     for p in parts.python for a in parts.abi for pl in parts.platform)


@pytest.mark.parametrize("name", VALID)
def test_parts_give_back_the_name_and_packagings_tags(name):
    """Joined, the parts are the name itself; as tags, they are packaging's tags."""
    packaging_tags = parse_wheel_filename(name)[3]
    parts = parse_wheel_name("some/dir/" + name)             # a directory is ignored
    assert (f"{parts.stem}-{'.'.join(parts.python)}-{'.'.join(parts.abi)}-"
            f"{'.'.join(parts.platform)}.whl") == name
    assert _tags_of(parts) == packaging_tags
    assert parts.with_platform(parts.platform) == name
    first_seen = list(dict.fromkeys(t.lower() for t in parts.platform))
    assert platform_tags_of(name) == first_seen
    assert set(platform_tags_of(name)) == {t.platform for t in packaging_tags}


@pytest.mark.parametrize("name", VALID)
def test_distribution_and_version_are_as_written(name):
    """packaging normalizes the name and version; the written forms normalize to them."""
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pname, pversion, _build, _tags = parse_wheel_filename(name)
    parts = parse_wheel_name(name)
    assert name.startswith(f"{parts.distribution}-{parts.version}-")
    assert canonicalize_name(parts.distribution) == pname
    assert Version(parts.version) == pversion


@pytest.mark.parametrize("name", [
    "nope.whl", "d-1.0-py3-none-any.zip", "zip-deflate-empty-blocks-1.0-py3-none-any.whl",
    "pkg-not.a.version!-py3-none-any.whl", "a__b-1.0-py3-none-any.whl",
    "a-1.0-x1-py3-none-any.whl",                                    # build tag not a number
])
def test_names_packaging_refuses_are_refused_with_the_audit_message(name):
    with pytest.raises(InvalidWheelFilename):
        parse_wheel_filename(name)
    assert platform_tags_of(name) == []
    with pytest.raises(WheelError, match="not a valid wheel file name") as e:
        parse_wheel_name(name)
    assert str(e.value) == f"{name}: {BAD_WHEEL_NAME}"
    with pytest.raises(WheelError, match="not a valid wheel file name"):
        split_wheel_name(name)          # retag's (and repair's) entry point


_PART = st.text(alphabet="aZ09._-!+", min_size=0, max_size=6)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(_PART, min_size=1, max_size=7), st.sampled_from([".whl", ".WHL", ".zip", ""]))
@example(["a", "1.0", "py3", "none", "any"], ".whl")
@example(["a", "1.0", "7", "py3", "none", "any"], ".whl")
def test_accepts_exactly_what_packaging_accepts(parts, suffix):
    """Differential: any string built from name-ish parts is a wheel name for fastelf
    exactly when packaging parses it, and then the tags agree."""
    name = "-".join(parts) + suffix
    try:
        expected = parse_wheel_filename(name)[3]
    except InvalidWheelFilename:
        expected = None
    try:
        got = parse_wheel_name(name)
    except WheelError:
        got = None
    assert (got is None) == (expected is None)
    if got is not None:
        assert _tags_of(got) == expected
        assert set(platform_tags_of(name)) == {t.platform for t in expected}


@pytest.mark.parametrize("name", VALID)
def test_retagged_name_changes_only_the_platform_tags(name):
    """The retagged name parses (packaging) to the same project, version, build and
    python/abi tags, with exactly the new platform tags."""
    new = retagged_name(name, ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                               "manylinux2014_x86_64"])
    old_name, old_version, old_build, old_tags = parse_wheel_filename(name)
    new_name, new_version, new_build, new_tags = parse_wheel_filename(new)
    assert (new_name, new_version, new_build) == (old_name, old_version, old_build)
    assert {(t.interpreter, t.abi) for t in new_tags} == {(t.interpreter, t.abi) for t in old_tags}
    assert {t.platform for t in new_tags} == {"manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                              "manylinux2014_x86_64"}
    assert new.startswith(parse_wheel_name(name).stem + "-")        # as written, case kept
