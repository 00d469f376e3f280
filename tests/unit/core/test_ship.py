"""The library zip shipped to another host (core/ship.py): every package walked, or only
what one module needs."""

import io
import os
import subprocess
import sys
import zipfile

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.ship import payload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LIB = os.path.join(ROOT, "plugins", "module_utils")
BASE = "ansible_collections/ctrhost/fleet/plugins/module_utils/"


def names(data):
    return {n[len(BASE):] for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.startswith(BASE)}


def test_the_whole_library_with_every_package():
    shipped = names(payload())
    on_disk = {os.path.relpath(os.path.join(d, f), LIB) for d, _s, files in os.walk(LIB)
               for f in files if f.endswith(".py")}
    assert shipped == on_disk
    assert "migrate/agent.py" in shipped and "core/__init__.py" in shipped


def test_one_entry_ships_only_its_imports_and_runs_from_the_zip(tmp_path):
    shipped = names(payload("host.report"))
    assert "host/report.py" in shipped and "container/info.py" in shipped  # imported inside a function
    assert "host/__init__.py" in shipped and "container/__init__.py" in shipped
    assert not any(n.startswith("migrate/") for n in shipped)  # nothing the report does not need
    assert "fleet/inventory.py" not in shipped
    zpath = tmp_path / "lib.zip"
    zpath.write_bytes(payload("host.report"))
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "from ansible_collections.ctrhost.fleet.plugins.module_utils.host import report; "
             "import ansible_collections.ctrhost.fleet.plugins.module_utils.container.info as i; "
             "print(report.__file__.startswith(sys.argv[1]), callable(i.gather))")
    out = subprocess.run([sys.executable, "-c", probe, str(zpath)], capture_output=True, text=True,
                         check=True, cwd=str(tmp_path), env={"PATH": os.environ.get("PATH", "")})
    assert out.stdout.split() == ["True", "True"]
