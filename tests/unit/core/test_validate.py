"""Names and generic validation: every rejection names the field and the rule."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import (
    NAME_MAX,
    reject_unknown_keys,
    validate_abs_path,
    validate_name,
    validate_sha256,
    validate_string_list,
)

HEX = "ab" * 32


@pytest.mark.parametrize("name", ["tp1", "tp-web.1", "TP_x", "a" * NAME_MAX, "0tp"])
def test_good_names_pass_unchanged(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name, words", [
    ("", "must not be empty"),
    (None, "must not be empty"),
    ("tp/x", "must not contain '/'"),
    ("tp..x", "must not contain '..'"),
    ("..", "must not contain '..'"),
    ("tp x", "must not contain spaces"),
    ("tp\tx", "must not contain spaces"),
    ("a" * (NAME_MAX + 1), "64 characters long; at most 63"),
    ("-tp", "not a valid name"),
    (".tp", "not a valid name"),
    ("tp$", "not a valid name"),
    ("tpé", "not a valid name"),
])
def test_bad_names_are_refused_with_the_field_and_the_reason(name, words):
    with pytest.raises(ValidationError) as err:
        validate_name(name, field="template")
    assert err.value.field == "template"
    assert err.value.msg.startswith("template: ")
    assert words in err.value.msg


@given(st.text(min_size=0, max_size=80))
def test_any_accepted_name_is_a_safe_single_path_component(text):
    try:
        name = validate_name(text)
    except ValidationError:
        return
    assert 1 <= len(name) <= NAME_MAX
    assert "/" not in name and ".." not in name and name not in (".", "..")
    assert not any(c.isspace() for c in name)


@pytest.mark.parametrize("value", [HEX, "sha256:" + HEX, "SHA256:" + HEX.upper(), " %s " % HEX])
def test_sha256_forms_normalise_to_lower_hex(value):
    assert validate_sha256(value) == HEX


@pytest.mark.parametrize("value, words", [
    ("", "must not be empty"),
    ("md5:" + "a" * 32, "algorithm 'md5' is not supported"),
    ("sha256:abc", "is not a sha256 digest"),
    ("z" * 64, "is not a sha256 digest"),
])
def test_bad_checksums(value, words):
    with pytest.raises(ValidationError) as err:
        validate_sha256(value)
    assert err.value.msg.startswith("checksum: ") and words in err.value.msg


def test_abs_path(tmp_path):
    assert validate_abs_path(str(tmp_path) + "/x/../y", "src") == str(tmp_path / "y")
    with pytest.raises(ValidationError, match="src: 'rel/x' is not an absolute path"):
        validate_abs_path("rel/x", "src")
    with pytest.raises(ValidationError, match="does not exist"):
        validate_abs_path(str(tmp_path / "missing"), "src", must_exist=True)
    with pytest.raises(ValidationError, match="is not a regular file"):
        validate_abs_path(str(tmp_path), "src", must_exist=True, kind="file")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValidationError, match="is not a directory"):
        validate_abs_path(str(tmp_path / "f"), "dir", must_exist=True, kind="dir")


def test_unknown_keys_are_named():
    assert reject_unknown_keys({"suite": "x"}, ("suite", "mirror"), "debootstrap") == {"suite": "x"}
    with pytest.raises(ValidationError) as err:
        reject_unknown_keys({"suite": "x", "sute": 1, "zz": 2}, ("suite", "mirror"), "debootstrap")
    assert err.value.msg == ("debootstrap: unknown key(s) sute, zz (expected some of: mirror, suite)")
    with pytest.raises(ValidationError, match="must be a dictionary"):
        reject_unknown_keys(["suite"], ("suite",), "debootstrap")


def test_string_list():
    assert validate_string_list(None, "include") == []
    assert validate_string_list("a, b,,c", "include") == ["a", "b", "c"]
    assert validate_string_list(["vim"], "include", r"^[a-z]+$", "package") == ["vim"]
    with pytest.raises(ValidationError, match="include: 'Vim!' is not a valid package"):
        validate_string_list(["Vim!"], "include", r"^[a-z]+$", "package")
    with pytest.raises(ValidationError, match="every item must be a non-empty string"):
        validate_string_list(["", "x"], "include")
    with pytest.raises(ValidationError, match="must be a list of strings"):
        validate_string_list(3, "include")
