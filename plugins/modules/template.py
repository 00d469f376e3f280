#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: template
short_description: Install or remove an OS template (a root filesystem containers are created from)
version_added: 0.1.0
description:
  - Installs an OS template as C(templates/<name>/rootfs) under O(root), with its metadata in
    C(templates/<name>/template.json) (source, sha256, size, created, duration).
  - The template comes from exactly one source, a tarball on the host (O(src)), a tarball to
    download (O(url) with O(checksum)), C(debootstrap) (O(debootstrap)), an OCI image
    (O(image), through C(skopeo) and C(umoci)) or the host's static busybox (O(busybox)).
  - Tarballs (C(.tar), C(.tar.gz), C(.tar.bz2), C(.tar.xz), C(.tar.zst) when C(zstd) is installed)
    are checked member by member before anything is written. An absolute name, a C(..) component,
    a member written through a symbolic link, a symbolic link climbing out of the template, or a
    hard link to anything but an earlier file of the archive fails the task, naming the member.
    Character and block devices are skipped (the runtime gives each container its own C(/dev)).
    Modes, numeric ownership, symbolic and hard links inside the tree are kept.
  - The template is built in a temporary directory next to its final place and moved there in one
    rename, so a failed install leaves nothing behind and never replaces a good template.
  - The template is up to date, and nothing is done, when template.json records the same source
    and the same content, that is the tarball's sha256 for O(src), the declared O(checksum) for
    O(url) (nothing is downloaded), the manifest digest for O(image), the binary's digest for
    O(busybox). For O(debootstrap) the options
    alone decide; use O(force) to rebuild from a newer mirror.
  - Replacing or removing a template refuses while containers (C(containers/*/spec.json) under
    O(root)) use it, and names them, unless O(force=true).
author:
  - ctrhost.fleet contributors (@ctrhost)
options:
  name:
    description:
      - Template name, 1 to 63 letters, digits, C(.), C(_) or C(-), starting with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(present) installs the template, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  src:
    description:
      - Absolute path of a root filesystem tarball on the managed host.
    type: path
  url:
    description:
      - URL (C(http://), C(https://), C(ftp://), C(file://)) of a root filesystem tarball.
      - The download goes to a temporary file in the templates directory and is verified against
        O(checksum) before anything is unpacked.
    type: str
  checksum:
    description:
      - Expected sha256 of the tarball, as C(sha256:<hex>) or bare hex. Required with O(url),
        optional with O(src).
    type: str
  headers:
    description:
      - HTTP headers of the O(url) request, for example an authorization token.
    type: dict
  validate_certs:
    description:
      - Verify the server's TLS certificate for O(url). Only set V(false) on networks you control.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the certificate authorities to verify O(url) against, instead of the system's.
    type: path
  use_proxy:
    description:
      - Use the proxy of the C(http_proxy), C(https_proxy) and C(no_proxy) environment variables for O(url)
        (set them with the task's C(environment)).
    type: bool
    default: true
  url_username:
    description: User name for HTTP basic authentication to O(url).
    type: str
  url_password:
    description: Password for HTTP basic authentication to O(url).
    type: str
  force_basic_auth:
    description: Send the basic authentication header with the first request instead of after a 401.
    type: bool
    default: false
  client_cert:
    description: PEM client certificate (may hold the key) for TLS client authentication to O(url).
    type: path
  client_key:
    description: PEM private key of O(client_cert) when that file does not hold it.
    type: path
  timeout:
    description: Seconds to wait for the O(url) server to answer.
    type: int
    default: 60
  debootstrap:
    description:
      - Build a Debian (or derivative) root filesystem with C(debootstrap).
      - template.json's C(sha256) is then the sha256 of a canonical manifest made of these options
        and the installed packages (name, architecture, version), so two hosts that built the same
        packages report the same checksum.
    type: dict
    suboptions:
      suite:
        description: Release to install, for example V(bookworm).
        type: str
        required: true
      mirror:
        description: Archive URL; debootstrap's default when omitted.
        type: str
      variant:
        description: debootstrap variant.
        type: str
        choices: [minbase, buildd, fakechroot]
        default: minbase
      include:
        description: Extra packages to install.
        type: list
        elements: str
        default: []
  image:
    description:
      - OCI image reference as C(skopeo) reads it, for example C(oci-archive:/srv/img.tar),
        C(oci:/srv/layout:tag), C(docker://docker.io/library/debian:12), C(docker-archive:/x.tar)
        or C(dir:/srv/img).
      - The image's default process arguments are recorded as C(init) in template.json; a container
        created without a command runs them.
    type: str
  busybox:
    description:
      - Build a minimal template from this host's static busybox - C(/bin/busybox), a link per applet,
        C(/etc/passwd), C(/etc/group), C(/etc/hostname) - with nothing to download (Debian's
        C(busybox-static); the P(ctrhost.fleet.host#role) role installs it with C(ctrhost_template_tools)).
      - template.json's C(sha256) is the digest of the binary's sha256 and the recipe's version, so hosts
        with the same busybox report the same checksum; an upgraded busybox is a new content.
      - Give an empty dictionary (V({})) for the default path.
    type: dict
    version_added: 0.2.0
    suboptions:
      path:
        description: The static busybox binary on the host.
        type: path
        default: /bin/busybox
  force:
    description:
      - With O(state=present), reinstall even when the template is up to date, and replace a
        template that containers use.
      - With O(state=absent), remove a template that containers use.
    type: bool
    default: false
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: Reads the tarball (or the image manifest) to decide; downloads and builds nothing.
  diff_mode:
    support: full
    details: The diff is template.json before and after.
  idempotent:
    support: full
requirements:
  - C(skopeo) and C(umoci) for O(image); C(debootstrap) for O(debootstrap); C(zstd) for C(.tar.zst).
notes:
  - Root is needed to keep file ownership and to run C(debootstrap).
seealso:
  - module: ctrhost.fleet.container
"""

EXAMPLES = r"""
- name: Busybox template from the host's own static busybox, nothing downloaded
  ctrhost.fleet.template:
    name: busybox
    busybox: {}

- name: Busybox template from a tarball on the host
  ctrhost.fleet.template:
    name: busybox
    src: /srv/templates/busybox.tar.gz

- name: Template downloaded and verified before unpacking
  ctrhost.fleet.template:
    name: alpine
    url: https://example.org/images/alpine-minirootfs-3.20.0-x86_64.tar.gz
    checksum: sha256:2b1f5d9e8c3e5a3b6f3c5d2e7a6b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b
    headers:
      Authorization: "Bearer {{ templates_token }}"
    ca_path: /etc/pki/internal-ca.pem
  environment:
    https_proxy: http://proxy.example.org:3128

- name: Debian minbase template
  ctrhost.fleet.template:
    name: bookworm
    debootstrap:
      suite: bookworm
      include: [iproute2, procps]

- name: Template from an OCI archive
  ctrhost.fleet.template:
    name: app
    image: oci-archive:/srv/images/app.tar

- name: Remove a template (fails while containers use it)
  ctrhost.fleet.template:
    name: busybox
    state: absent
"""

RETURN = r"""
name:
  description: Template name.
  returned: always
  type: str
  sample: "busybox"
state:
  description: The requested state.
  returned: always
  type: str
  sample: "present"
template_dir:
  description: Template directory (holds C(rootfs) and C(template.json)).
  returned: always
  type: str
  sample: /var/lib/ctrhost/templates/busybox
rootfs:
  description: Root filesystem of the template (the lower layer of its containers).
  returned: always
  type: str
  sample: "/var/lib/ctrhost/templates/busybox/rootfs"
sha256:
  description: Content checksum recorded in template.json (in check mode, the one expected).
  returned: when state is present
  type: str
  sample: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
size:
  description: Apparent size in bytes of the files in the root filesystem (hard links once).
  returned: when the template is installed (not in check mode before a first install)
  type: int
  sample: 2205696
duration:
  description: Seconds this task spent (checking, building and swapping in).
  returned: always
  type: float
  sample: 0.84
template:
  description:
    - template.json after the task (C(name), C(source), C(sha256), C(size), C(created),
      C(duration), C(files) for tarballs, C(packages) for debootstrap, C(init) and C(image_config)
      for images). Null after removal.
  returned: always
  type: dict
  sample:
    name: busybox
    source:
      type: src
      src: /srv/templates/busybox.tar.gz
    sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
    size: 1031654
    created: '2026-12-01T10:00:00+00:00'
users:
  description: Containers whose spec.json names this template.
  returned: always
  type: list
  elements: str
  sample: ["web1", "web2"]
commands:
  description: Commands run (or, in check mode, that would run).
  returned: always
  type: list
  elements: str
  sample: []
notes:
  description: Remarks about the install, such as device nodes that were skipped.
  returned: when the template was installed
  type: list
  elements: str
  sample: ["skipped 3 device nodes under /dev"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.template import lifecycle as _template
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, argument_spec, run

SOURCES = ("src", "url", "debootstrap", "image", "busybox")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            src=dict(type="path"),
            url=dict(type="str"),
            checksum=dict(type="str"),
            debootstrap=dict(type="dict", options=dict(
                suite=dict(type="str", required=True),
                mirror=dict(type="str"),
                variant=dict(type="str", default="minbase", choices=list(_template.DEBOOTSTRAP_VARIANTS)),
                include=dict(type="list", elements="str", default=[]),
            )),
            image=dict(type="str"),
            busybox=dict(type="dict", options=dict(path=dict(type="path", default="/bin/busybox"))),
            force=dict(type="bool", default=False),
            headers=dict(type="dict"),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            use_proxy=dict(type="bool", default=True),
            url_username=dict(type="str"),
            url_password=dict(type="str", no_log=True),
            force_basic_auth=dict(type="bool", default=False),
            client_cert=dict(type="path"),
            client_key=dict(type="path"),
            timeout=dict(type="int", default=60),
        ),
        mutually_exclusive=[SOURCES, ("checksum", "debootstrap"), ("checksum", "image"), ("checksum", "busybox")],
        required_if=[("state", "present", SOURCES, True)],
        required_by={"url": "checksum"},
        supports_check_mode=True,
    )
    run(module, _template.task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
