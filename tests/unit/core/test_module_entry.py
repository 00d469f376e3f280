"""One module-to-library convention: every module's ``main`` ends in
``run(module, <library entry>, module.params, module.check_mode)``, and the entry
takes the module's options as they are."""

import ast
import importlib
import inspect
import os

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import batch as _migrate_batch
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import module as _module
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

MODULES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "plugins", "modules")
NAMES = sorted(n[:-3] for n in os.listdir(MODULES) if n.endswith(".py") and not n.startswith("_"))


def run_call(name):
    with open(os.path.join(MODULES, name + ".py")) as handle:
        tree = ast.parse(handle.read())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [n for n in ast.walk(main) if isinstance(n, ast.Call)
             and ast.unparse(n.func) in ("run", "_module.run")]
    assert len(calls) == 1, name
    return calls[0], [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]


@pytest.mark.parametrize("name", NAMES)
def test_every_module_calls_its_entry_the_same_way(name):
    call, functions = run_call(name)
    args = [ast.unparse(a) for a in call.args]
    assert len(args) == 4 and not call.keywords, name
    assert args[0] == "module" and args[2:] == ["module.params", "module.check_mode"], name
    assert args[1].startswith("_") and "." in args[1], "%s: the entry lives in the library" % name
    assert functions == ["main"], "%s: a module is its spec, its docs and the call" % name


def module_params(module_name, **required):
    """The params AnsibleModule would give the module: defaults, plus ``required``."""
    captured = {}

    class Capture:
        def __init__(self, argument_spec, **_kw):
            captured.update(argument_spec)
            raise SystemExit

    mod = importlib.import_module("ansible_collections.ctrhost.fleet.plugins.modules." + module_name)
    real = mod.AnsibleModule
    mod.AnsibleModule = Capture
    try:
        with pytest.raises(SystemExit):
            mod.main()
    finally:
        mod.AnsibleModule = real
    return dict({key: spec.get("default") for key, spec in captured.items()}, **required)


def test_migrate_takes_the_module_options_as_keywords():
    params = module_params("container_migrate", name="web1", dest="host2")
    assert len(params) >= 17
    inspect.signature(_migrate.migrate).bind(check_mode=False, **params)


def test_migrate_batch_takes_the_module_options_as_keywords():
    params = module_params("container_migrate_batch", moves=[dict(name="web1", dest="host2")])
    inspect.signature(_migrate_batch.migrate_batch).bind(check_mode=False, **params)


def test_migrate_entry_validates_before_acting(tmp_path):
    params = module_params("container_migrate", name="web1", dest="host2", root=str(tmp_path))
    with pytest.raises(ValidationError) as info:
        _migrate.task(dict(params, mode="teleport"), check_mode=True)
    assert info.value.field == "mode"


class FakeModule:
    def __init__(self, diff):
        self._diff, self.result = diff, None

    def exit_json(self, **result):
        self.result = result

    def fail_json(self, **result):  # like AnsibleModule's: never returns
        self.result = dict(result, failed=True)
        raise SystemExit(1)


@pytest.mark.parametrize("asked", [True, False])
def test_run_passes_params_and_check_mode_and_honours_diff_on_request(asked):
    def entry(params, check_mode):
        return dict(changed=True, seen=(params, check_mode), diff=dict(before=1, after=2))

    module = FakeModule(asked)
    _module.run(module, entry, {"a": 1}, True)
    assert module.result["seen"] == ({"a": 1}, True) and "diff" in module.result

    entry.diff_on_request = True
    _module.run(module, entry, {"a": 1}, False)
    assert ("diff" in module.result) is asked


def test_run_turns_library_errors_into_one_failure():
    def entry(params, check_mode):
        raise ValidationError("limits.disk", "not available")

    module = FakeModule(False)
    with pytest.raises(SystemExit):
        _module.run(module, entry, {}, False)
    assert module.result["failed"] and module.result["msg"].startswith("limits.disk")
