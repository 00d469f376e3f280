# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release hygiene: what a plugin's ``version_added`` claims agrees with the changelog, so
that ``antsibull-changelog release`` announces every new plugin exactly once."""

import ast
import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = {"modules": "module", "filter": "filter", "inventory": "inventory", "connection": "connection"}


def version(text):
    return tuple(int(part) for part in str(text).split("."))


def load(path):
    with open(os.path.join(ROOT, path)) as handle:
        return yaml.safe_load(handle)


def documentation(path):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)
    return None


def plugins():
    out = []
    for folder, kind in KINDS.items():
        base = os.path.join(ROOT, "plugins", folder)
        for leaf in sorted(os.listdir(base)):
            if leaf.endswith(".py") and not leaf.startswith("_"):
                doc = documentation(os.path.join(base, leaf))
                if doc is not None:
                    out.append((kind, leaf[:-3], doc))
    return out


def announced():
    """{(kind, name): release} of every plugin a release of the changelog announced."""
    out = {}
    for release, data in (load("changelogs/changelog.yaml").get("releases") or {}).items():
        for entry in data.get("modules") or []:
            out[("module", entry["name"])] = release
        for kind, entries in (data.get("plugins") or {}).items():
            for entry in entries:
                out[(kind, entry["name"])] = release
    return out


def options(doc, path=""):
    for name, spec in (doc.get("options") or doc.get("suboptions") or {}).items():
        yield path + name, spec
        yield from options(spec, path + name + ".")


def test_galaxy_version_is_past_every_release():
    releases = sorted(version(v) for v in load("changelogs/changelog.yaml")["releases"])
    assert version(load("galaxy.yml")["version"]) > releases[-1]


@pytest.mark.parametrize("kind, name, doc", plugins(), ids=lambda x: x if isinstance(x, str) else "")
def test_version_added_matches_the_changelog(kind, name, doc):
    released = announced()
    last = max(version(v) for v in load("changelogs/changelog.yaml")["releases"])
    current = version(load("galaxy.yml")["version"])
    added = str(doc.get("version_added"))
    if (kind, name) in released:
        assert added == released[(kind, name)], (
            "%s %s: version_added %s, but release %s announced it" % (kind, name, added, released[(kind, name)]))
    else:
        assert last < version(added) <= current, (
            "%s %s is in no release of the changelog: its version_added (%s) must be the next release "
            "(after %s, at most galaxy.yml's %s)" % (kind, name, added, ".".join(map(str, last)),
                                                     ".".join(map(str, current))))
    for option, spec in options(doc):
        if isinstance(spec, dict) and spec.get("version_added"):
            assert version(added) <= version(spec["version_added"]) <= current, (kind, name, option)
