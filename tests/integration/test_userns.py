"""Unprivileged containers (``privileged: false``) with real runc, through ansible-playbook.

The host's range comes from /etc/subuid and /etc/subgid, written by the host role's own
task (``roles/host/tasks/subids.yml``) when this machine has none; the files are put
back afterwards. Every effect is read from the host: the owners in the container's
upper layer, /proc/<pid>/uid_map and the namespace links, what the container wrote
about itself, and a privileged control container that shows each probe can succeed.
"""

import json
import os
import subprocess
import time

import pytest

import _local
from _local import leftovers

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap

pytestmark = _local.RUNTIME_MARKS + [pytest.mark.slow]
SUBIDS = ("/etc/subuid", "/etc/subgid")
# Probes of what root inside may do; each line is "<probe> <exit status>" in /tmp/probes.
PROBES = ("touch /root/made; cat /proc/self/uid_map > /tmp/uidmap; stat -c '%u %g' /bin/busybox > /tmp/owner; "
          "mkdir -p /mnt/d; (mount -t debugfs none /mnt/d; echo mount $? >> /tmp/probes) 2>/tmp/mount.err; "
          "(mknod /tmp/disk b MAJOR MINOR; echo mknod $? >> /tmp/probes) 2>/dev/null; "
          "(insmod /bin/busybox; echo insmod $? >> /tmp/probes) 2>/tmp/insmod.err; "
          "echo done >> /tmp/probes; trap 'exit 0' TERM; while true; do sleep 1; done")
ALL_CAPS = {"add": ["SYS_ADMIN", "SYS_MODULE", "MKNOD"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    saved = {p: (read(p) if os.path.exists(p) else None) for p in SUBIDS}
    base = tmp_path_factory.mktemp("unroot")
    try:
        _idmap.host_range()
    except Exception:  # provision the range as the host role does
        book = base / "subids.yml"
        book.write_text(json.dumps([dict(hosts="localhost", connection="local", gather_facts=False, tasks=[
            {"ansible.builtin.include_role": {"name": "ctrhost.fleet.host", "tasks_from": "subids.yml"}}])]))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=_local.COLLECTIONS, ANSIBLE_NOCOLOR="1")
        proc = subprocess.run([_local.PLAYBOOK, "-i", "localhost,", "-e",
                               "ansible_python_interpreter=" + _local.PYTHON, str(book)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    yield _local.busybox_root(base)
    for name in _local.leftover_containers(base):
        _local.play(str(base), [dict(name=name, state="absent")], "container", timeout=300)
    for p, text in saved.items():
        if text is None:
            os.unlink(p)
        else:
            with open(p, "w") as handle:
                handle.write(text)


def read(path):
    with open(path) as handle:
        return handle.read()


def play(root, steps):
    return _local.play(root, steps, "container", timeout=300)


def wait_file(path, text=None, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            content = read(path)
            if text is None or text in content:
                return content
        time.sleep(0.1)
    raise AssertionError("%s did not appear (with %r)" % (path, text))


def probes_of(upper):
    text = wait_file(os.path.join(upper, "tmp", "probes"), "done")
    return dict(line.split() for line in text.splitlines() if line != "done")


def host_disk():
    st = os.stat("/")
    return os.major(st.st_dev), os.minor(st.st_dev)


def test_unprivileged_container(root):
    rng = _idmap.host_range()
    uid, gid, size = rng["uid"], rng["gid"], rng["size"]
    name, control = "un%d" % (os.getpid() % 10000), "unp%d" % (os.getpid() % 10000)
    major, minor = host_disk()
    command = ["/bin/sh", "-c", PROBES.replace("MAJOR", str(major)).replace("MINOR", str(minor))]
    step = dict(name=name, template="busybox", command=command, privileged=False, capabilities=ALL_CAPS)
    check, real, again, info = play(root, [dict(step, _check=True), step, step,
                                           dict(_module="container_info", name=[name])])
    assert check.get("failed") is not True and real.get("failed") is not True, real
    assert check["changed"] is True and real["changed"] is True and again["changed"] is False
    pid = real["container"]["pid"]
    assert real["container"]["idmap"] == rng and real["container"]["privileged"] is False
    item = info["containers"][0]
    assert item["idmap"] == rng and item["privileged"] is False and item["pid"] == pid

    # the kernel's view of the init: its maps and a user namespace of its own
    assert read("/proc/%d/uid_map" % pid).split() == ["0", str(uid), str(size)]
    assert read("/proc/%d/gid_map" % pid).split() == ["0", str(gid), str(size)]
    assert os.readlink("/proc/%d/ns/user" % pid) != os.readlink("/proc/self/ns/user")
    st = os.stat("/proc/%d" % pid)
    assert (st.st_uid, st.st_gid) == (uid, gid)
    # the netns and time namespace belong to it (CRIU dumps only those)
    assert os.stat("/run/netns/ctrhost-" + name).st_ino == os.stat("/proc/%d/ns/net" % pid).st_ino
    assert os.stat("/run/ctrhost/timens/" + name).st_ino == os.stat("/proc/%d/ns/time" % pid).st_ino

    upper = os.path.join(root, "containers", name, "upper")
    wait_file(os.path.join(upper, "root", "made"))
    made = os.lstat(os.path.join(upper, "root", "made"))
    assert (made.st_uid, made.st_gid) == (uid, gid)  # root's file, as the host sees it
    assert wait_file(os.path.join(upper, "tmp", "uidmap")).split() == ["0", str(uid), str(size)]
    assert wait_file(os.path.join(upper, "tmp", "owner")).split() == ["0", "0"]  # template file: root's inside
    lower = _idmap.shifted_rootfs(os.path.join(root, "templates", "busybox", "rootfs"), rng)
    assert os.lstat(os.path.join(lower, "bin", "busybox")).st_uid == uid
    assert os.lstat(os.path.join(root, "templates", "busybox", "rootfs", "bin", "busybox")).st_uid == 0
    assert oct(os.stat(os.path.join(root, "containers", name)).st_mode & 0o777) == "0o710"

    # root inside, even given CAP_SYS_ADMIN, CAP_SYS_MODULE and CAP_MKNOD, holds them
    # over its own namespaces only: no host filesystem, no module, no device node
    denied = probes_of(upper)
    assert denied["mount"] != "0" and denied["mknod"] != "0" and denied["insmod"] != "0", denied
    assert "ermission" in read(os.path.join(upper, "tmp", "mount.err"))
    assert not os.path.exists(os.path.join(upper, "tmp", "disk"))

    # a privileged container with the same capabilities mounts debugfs and reaches the
    # module loader (a kernel without modules answers ENOSYS to both)
    ctl = play(root, [dict(step, name=control, privileged=True)])[0]
    assert ctl["container"]["idmap"] is None
    ctl_upper = os.path.join(root, "containers", control, "upper")
    allowed = probes_of(ctl_upper)
    assert allowed["mount"] == "0", allowed
    ctl_insmod = read(os.path.join(ctl_upper, "tmp", "insmod.err"))
    assert "ermission" not in ctl_insmod
    if "does not support" not in ctl_insmod:  # modules exist: the unprivileged one was refused
        assert "ermission" in read(os.path.join(upper, "tmp", "insmod.err"))
    play(root, [dict(name=control, state="absent")])

    still = play(root, [dict(_module="container_info", name=[name])])[0]["containers"][0]
    assert still["state"] == "running" and still["pid"] == pid

    # stop/start: same owners, a new init in a user namespace with the same map
    stopped, started = play(root, [dict(name=name, state="stopped"), dict(name=name, state="started")])
    pid2 = started["container"]["pid"]
    assert stopped["changed"] and started["changed"] and pid2 != pid
    assert read("/proc/%d/uid_map" % pid2).split() == ["0", str(uid), str(size)]
    assert os.lstat(os.path.join(upper, "root", "made")).st_uid == uid

    gone = play(root, [dict(name=name, state="absent")])[0]
    assert gone["changed"]
    assert leftovers(root, name) == []
    assert not os.path.lexists("/run/ctrhost/userns/" + name)
    assert not os.path.lexists("/run/ctrhost/timens/" + name)


COUNTER = ("i=0; touch /root/before; while true; do i=$((i+1)); echo $i > /tmp/c.new; "
           "mv /tmp/c.new /tmp/c; sleep 0.1; done")


def counter(upper):
    for _ in range(50):
        text = read(os.path.join(upper, "tmp", "c")).strip() if os.path.exists(
            os.path.join(upper, "tmp", "c")) else ""
        if text:
            return int(text)
        time.sleep(0.05)
    raise AssertionError("no counter in " + upper)


def test_checkpoint_and_restore_keep_its_user_namespace_map_owners_and_counter(root):
    """CRIU dumps the container with its user namespace and an empty netns; the restore
    makes both again, and the network hook puts the netns at its path."""
    rng = _idmap.host_range()
    name = "unc%d" % (os.getpid() % 10000)
    upper = os.path.join(root, "containers", name, "upper")
    made = play(root, [dict(name=name, template="busybox", command=["/bin/sh", "-c", COUNTER],
                            privileged=False)])[0]
    assert made["changed"] and made["container"]["idmap"] == rng, made
    wait_file(os.path.join(upper, "root", "before"))
    time.sleep(0.5)
    ck = play(root, [dict(_module="container_checkpoint", name=name, id="u1")])[0]
    assert ck["changed"] and not ck.get("failed"), ck
    dumped = counter(upper)
    back = play(root, [dict(_module="container_restore", name=name, id="u1")])[0]
    assert back["changed"] and not back.get("failed"), back
    pid = back["pid"]
    time.sleep(0.5)
    assert counter(upper) > dumped  # continued from memory, not restarted from 0
    assert counter(upper) < dumped + 100
    assert read("/proc/%d/uid_map" % pid).split() == ["0", str(rng["uid"]), str(rng["size"])]
    assert read("/proc/%d/gid_map" % pid).split() == ["0", str(rng["gid"]), str(rng["size"])]
    assert os.readlink("/proc/%d/ns/user" % pid) != os.readlink("/proc/self/ns/user")
    assert os.stat("/run/netns/ctrhost-" + name).st_ino == os.stat("/proc/%d/ns/net" % pid).st_ino
    assert os.lstat(os.path.join(upper, "root", "before")).st_uid == rng["uid"]
    assert os.stat("/proc/%d" % pid).st_uid == rng["uid"]
    gone = play(root, [dict(name=name, state="absent")])[0]
    assert gone["changed"] and leftovers(root, name) == []
    assert not os.path.lexists("/run/netns/ctrhost-" + name)


def test_old_container_stays_privileged_and_switches_on_request(root):
    name = "unold%d" % (os.getpid() % 10000)
    loop = ["/bin/sh", "-c", "touch /root/mine; trap 'exit 0' TERM; while true; do sleep 1; done"]
    made = play(root, [dict(name=name, template="busybox", command=loop, privileged=True)])[0]
    spec_path = os.path.join(root, "containers", name, "spec.json")
    spec = json.loads(read(spec_path))
    spec.pop("privileged")
    spec.pop("idmap")
    with open(spec_path, "w") as handle:  # as a container made before the option existed
        json.dump(spec, handle)
    same, info = play(root, [dict(name=name, template="busybox", command=loop),
                             dict(_module="container_info", name=[name])])
    assert same["changed"] is False and same["container"]["pid"] == made["container"]["pid"]
    assert info["containers"][0]["privileged"] is True and info["containers"][0]["idmap"] is None
    upper = os.path.join(root, "containers", name, "upper")
    assert os.lstat(os.path.join(upper, "root", "mine")).st_uid == 0

    refused, switched = play(root, [dict(name=name, privileged=False),
                                    dict(name=name, privileged=False, recreate=True)])
    assert refused.get("failed") and "privileged" in refused["msg"]
    rng = _idmap.host_range()
    assert switched["changed"] and switched["container"]["idmap"] == rng
    pid = switched["container"]["pid"]
    assert read("/proc/%d/uid_map" % pid).split()[1] == str(rng["uid"])
    assert os.lstat(os.path.join(upper, "root", "mine")).st_uid == rng["uid"]  # its own files moved along
    back = play(root, [dict(name=name, privileged=True, recreate=True)])[0]
    assert back["changed"] and back["container"]["idmap"] is None
    assert os.lstat(os.path.join(upper, "root", "mine")).st_uid == 0
    assert read("/proc/%d/uid_map" % back["container"]["pid"]).split()[1] == "0"
    play(root, [dict(name=name, state="absent")])
    assert leftovers(root, name) == []
