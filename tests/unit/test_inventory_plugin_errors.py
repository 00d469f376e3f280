# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The containers inventory plugin's words for a host it cannot read: unreachable (the
connection plugin's failure, whatever text SSH printed), over its timeout, or failing;
the connection is closed in every case. The connection is the boundary faked here."""

import pytest

from ansible.errors import AnsibleConnectionFailure, AnsibleError

from ansible_collections.ctrhost.fleet.plugins.inventory.containers import InventoryModule


class Conn:
    def __init__(self, result=None, exc=None):
        self.result, self.exc, self.closed = result, exc, False

    def exec_command(self, cmd, in_data=None, sudoable=True):
        if self.exc:
            raise self.exc
        return self.result

    def close(self):
        self.closed = True


@pytest.mark.parametrize("conn, words", [
    (Conn(exc=AnsibleConnectionFailure("ssh: connect to host 192.0.2.1 port 22: Connection timed out")),
     "h1: unreachable, its containers could not be read (ssh: connect to host 192.0.2.1 port 22: Connection timed out)"),
    (Conn(exc=AnsibleError("become password is wrong")), "h1: could not read its containers (become password is wrong)"),
    (Conn(result=(124, b"", b"")), "h1: reading its containers took longer than the timeout option (7 s)"),
    (Conn(result=(1, b"", b"Traceback: boom\n")), "h1: reading its containers failed (rc=1): Traceback: boom"),
])
def test_a_host_that_cannot_be_read_is_named_with_the_reason(conn, words):
    with pytest.raises(ValueError) as err:
        InventoryModule._read_one("h1", conn, "true", b"", 7)
    assert str(err.value) == words
    assert conn.closed
