"""The ``[isthmus]`` options of neutron.conf, and the coordinator client made from them."""

from __future__ import annotations

from typing import Any

from oslo_config import cfg

from isthmus.neutron_plugin.client import Coordinator, Settings

GROUP = "isthmus"
OPTIONS = [
    cfg.StrOpt("coordinator", default="127.0.0.1:7800",
               help="The isthmus coordinator: HOST:PORT or unix:PATH."),
    cfg.StrOpt("ca_file", default="", help="CA of the coordinator's certificate; with cert_file and key_file: "
                                           "mutual TLS (neutron's own certificate, made by `isthmusctl pki`)."),
    cfg.StrOpt("cert_file", default="", help="Neutron's client certificate for the coordinator."),
    cfg.StrOpt("key_file", default="", help="The key of cert_file."),
    cfg.StrOpt("token_file", default="", help="A file holding a bearer token known to the coordinator."),
    cfg.FloatOpt("timeout", default=10.0, min=0.1, help="Seconds to wait for the coordinator per call; past it "
                                                        "the REST call fails with 503 and nothing is written."),
    cfg.BoolOpt("resync_on_start", default=True,
                help="Compare Neutron's l2-gateways and connections with isthmus' when neutron-server starts, "
                     "and repair the difference (Neutron is the reference for what it made)."),
]


def register(conf: Any = None) -> Any:
    conf = conf or cfg.CONF
    conf.register_opts(OPTIONS, group=GROUP)
    return conf


def coordinator(conf: Any = None) -> Coordinator:
    group = register(conf)[GROUP]
    return Coordinator(Settings(address=group.coordinator, ca_file=group.ca_file, cert_file=group.cert_file,
                                key_file=group.key_file, token_file=group.token_file, timeout=group.timeout))


def on_behalf_of(context: Any) -> str:
    """Who asked Neutron, for the coordinator's audit: the Keystone user and project of the request."""
    user = getattr(context, "user_id", None) or "-"
    project = getattr(context, "project_id", None) or "-"
    request = getattr(context, "request_id", None) or "-"
    return f"keystone user={user} project={project} request={request}"
