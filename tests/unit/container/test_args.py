"""The container argument spec is defined once and documented once.

``ctrhost.fleet.container`` and each item of ``ctrhost.fleet.containers``
take the same options (``_ctrargs``), documented by the same doc fragment; the
documentation must describe exactly the argument spec. Batch validation names
the item and the field and writes nothing.
"""

import ast
import json
import os

import pytest
import yaml

from ansible_collections.ctrhost.fleet.plugins.doc_fragments.container import ModuleDocFragment
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import batch as _batch
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import args as _ctrargs
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS

MODULES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "plugins", "modules")


def module_doc(name):
    """DOCUMENTATION of a module file, read without importing it."""
    with open(os.path.join(MODULES, name + ".py")) as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)
    raise AssertionError("no DOCUMENTATION in %s" % name)


def check_doc_matches_spec(doc, spec, where):
    """Every option documented as the spec has it: type, required, default, choices,
    elements and suboptions; nothing more, nothing less."""
    assert sorted(doc) == sorted(spec), where
    for key, arg in spec.items():
        d = doc[key]
        here = "%s.%s" % (where, key)
        assert d.get("type", "str") == arg.get("type", "str"), here
        assert bool(d.get("required")) == bool(arg.get("required")), here
        assert d.get("default") == arg.get("default"), here
        assert d.get("choices") == arg.get("choices"), here
        assert d.get("elements") == arg.get("elements"), here
        assert isinstance(d.get("description"), (list, str)) and d["description"], here
        if "options" in arg:
            check_doc_matches_spec(d["suboptions"], arg["options"], here)
        else:
            assert "suboptions" not in d, here


def test_container_module_spec_is_common_plus_container_options():
    spec = _ctrargs.container_spec()
    assert spec == dict(COMMON_ARGS, **_ctrargs.CONTAINER_OPTIONS)
    assert "root" not in _ctrargs.CONTAINER_OPTIONS


def test_batch_items_take_exactly_the_container_options():
    spec = _ctrargs.containers_spec()
    assert sorted(spec) == ["containers", "purge", "root"]
    assert spec["containers"]["options"] == _ctrargs.CONTAINER_OPTIONS
    assert spec["containers"]["options"] is not _ctrargs.CONTAINER_OPTIONS  # a copy: modules may mutate
    assert spec["purge"] == dict(type="bool", default=False)


def test_fragment_documents_the_container_options_exactly():
    options = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    check_doc_matches_spec(options, _ctrargs.CONTAINER_OPTIONS, "container")


def test_fragment_batch_nests_the_same_options_with_nested_references():
    options = yaml.safe_load(ModuleDocFragment.BATCH)["options"]
    assert sorted(options) == ["containers"]
    check_doc_matches_spec(options["containers"]["suboptions"], _ctrargs.CONTAINER_OPTIONS,
                           "containers")
    text = json.dumps(options)
    assert "O(containers[].recreate=true)" in text and "O(recreate" not in text


def test_modules_define_no_container_option_themselves():
    container = module_doc("container")
    assert "options" not in container
    assert "ctrhost.fleet.container" in container["extends_documentation_fragment"]
    batch = module_doc("containers")
    assert sorted(batch["options"]) == ["purge"]
    assert "ctrhost.fleet.container.batch" in batch["extends_documentation_fragment"]


# -- batch validation --------------------------------------------------------------------
@pytest.fixture
def root(tmp_path):
    rootfs = tmp_path / "root" / "templates" / "busybox" / "rootfs"
    rootfs.mkdir(parents=True)
    (rootfs.parent / "template.json").write_text(json.dumps({"sha256": "ab" * 32}))
    return str(tmp_path / "root"), str(tmp_path / "run")


def items(n):
    return [dict(name="ctb%d" % i, template="busybox", state="started", privileged=True) for i in range(n)]


def test_batch_bad_item_names_index_and_field_and_writes_nothing(root):
    base, run = root
    bad = items(5)
    bad[3]["limits"] = {"memory": "lots"}
    with pytest.raises(ValidationError) as exc:
        _batch.converge(dict(root=base, run_dir=run, containers=bad))
    assert exc.value.field == "containers[3].limits.memory"
    assert exc.value.msg.startswith("containers[3].limits.memory: ")
    assert exc.value.details["container"] == "ctb3"
    assert not os.path.exists(os.path.join(base, "containers")) and not os.path.exists(run)


@pytest.mark.parametrize("over, field, error", [
    (dict(template="nope"), "containers[2].template", NotFoundError),
    (dict(name="bad/name"), "containers[2].name", ValidationError),
    (dict(name="ctb0"), "containers[2].name", ValidationError),  # declared twice
    (dict(state="sleeping"), "containers[2].state", ValidationError),
    (dict(root="/elsewhere"), "containers[2].root", ValidationError),
])
def test_batch_other_bad_items(root, over, field, error):
    base, run = root
    bad = items(4)
    bad[2].update(over)
    with pytest.raises(error) as exc:
        _batch.converge(dict(root=base, run_dir=run, containers=bad))
    assert exc.value.details["field"] == field, exc.value.msg
    assert exc.value.msg.startswith(field.rsplit(".", 1)[0])
    assert not os.path.exists(os.path.join(base, "containers"))


def test_batch_item_not_a_dict(root):
    base, run = root
    with pytest.raises(ValidationError) as exc:
        _batch.converge(dict(root=base, run_dir=run, containers=items(1) + ["ctb9"]))
    assert exc.value.field == "containers[1]"


def test_purge_selects_only_undeclared_containers(root):
    base, run = root
    for name in ("ctb0", "ctb1", "ctold"):
        os.makedirs(os.path.join(base, "containers", name))
        with open(os.path.join(base, "containers", name, "spec.json"), "w") as handle:
            json.dump({"template": "busybox"}, handle)
    os.makedirs(os.path.join(base, "containers", "not-a-container"))  # no spec.json
    assert _batch.undeclared(dict(root=base, run_dir=run), {"ctb0", "ctb1"}) == ["ctold"]
