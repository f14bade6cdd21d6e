"""isthmus' infrastructure API inside Neutron: ``/v2.0/infra`` over REST and ``openstack infra ...``, on a real
neutron-server (the test bed of neutron_isthmus.py) with a real coordinator, etcd, Keystone and site agents.

The plugin keeps no copy: what each test checks in isthmus it reads back with isthmusctl from the
coordinator (etcd), never from Neutron.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Proc, agent_cmd, ctl, start_neutron_coordinator, wait_for
from neutron_isthmus import Answer, NeutronIsthmus
from openstack_cloud import ADMIN_PROJECT, ADMIN_USER, TwoRegionCloud, _api

OPENSTACK = "/usr/bin/openstack"


def reachable(neutron: NeutronIsthmus) -> None:
    """Wait until neutron-server reaches this test's coordinator (its channel may still hold the last one's)."""
    wait_for(lambda: neutron.request("GET", "/infra/sites?fields=id").status == 200, 30,
             "neutron-server to reach the coordinator")


def ok(answer: Answer, status: int = 200) -> dict[str, Any]:
    assert answer.status == status, f"HTTP {answer.status}: {answer.error}"
    return answer.body


def stored(c: tuple[str, ...]) -> tuple[Any, ...]:
    """What isthmus holds (etcd, through the coordinator): every site, endpoint and connection with its version."""
    return tuple(json.loads(ctl(*c, kind, "list", "-o", "json").stdout) for kind in ("site", "endpoint", "connection"))


def seed(neutron: NeutronIsthmus) -> None:
    """Two regions with a BGP endpoint each and a connection between them, through REST."""
    for name in ("region-one", "region-two"):
        ok(neutron.request("POST", "/infra/sites", {"site": {"name": name, "kind": "region"}}), 201)
    for n, site in enumerate(("region-one", "region-two"), start=1):
        ok(neutron.request("POST", "/infra/endpoints", {"endpoint": {
            "site": site, "name": "gw", "address": f"192.0.2.{n}", "asn": 65000 + n}}), 201)
    ok(neutron.request("POST", "/infra/connections", {"connection": {
        "name": "one-two", "type": "bgp", "a": "region-one:gw", "b": "region-two:gw"}}), 201)


def test_rest_create_list_show_update_delete_with_filters_fields_and_pagination(
        neutron: NeutronIsthmus, neutron_coordinator: str) -> None:
    c = ("--coordinator", neutron_coordinator)
    reachable(neutron)
    seed(neutron)
    cell = ok(neutron.request("POST", "/infra/sites", {"site": {
        "name": "cell-a", "kind": "cell", "parent": "region-one", "labels": {"az": "nova"}}}), 201)["site"]
    assert cell["id"] == "cell-a" and cell["parent"] == "region-one" and cell["agent_state"] == "disconnected"
    ok(neutron.request("POST", "/infra/sites", {"site": {"name": "dc-east", "kind": "external"}}), 201)
    assert [s["name"] for s in stored(c)[0]] == ["cell-a", "dc-east", "region-one", "region-two"]

    # list: filters, fields=, pagination (limit/marker and the links), sorting
    regions = ok(neutron.request("GET", "/infra/sites?kind=region&fields=name&fields=kind"))["sites"]
    assert regions == [{"name": "region-one", "kind": "region"}, {"name": "region-two", "kind": "region"}]
    assert [s["id"] for s in ok(neutron.request("GET", "/infra/sites?parent=region-one"))["sites"]] == ["cell-a"]
    page = ok(neutron.request("GET", "/infra/sites?limit=3&fields=id"))
    assert [s["id"] for s in page["sites"]] == ["cell-a", "dc-east", "region-one"]
    next_link = next(link["href"] for link in page["sites_links"] if link["rel"] == "next")
    assert "marker=region-one" in next_link
    rest = ok(neutron.request("GET", "/infra/sites?limit=3&fields=id&marker=region-one"))
    assert [s["id"] for s in rest["sites"]] == ["region-two"]
    assert not any(link["rel"] == "next" for link in rest.get("sites_links", []))
    by_name = ok(neutron.request("GET", "/infra/sites?sort_key=name&sort_dir=desc&fields=id"))["sites"]
    assert [s["id"] for s in by_name] == ["region-two", "region-one", "dc-east", "cell-a"]
    external = ok(neutron.request("GET", "/infra/sites/dc-east?fields=agent_state&fields=kind"))["site"]
    assert external == {"agent_state": "external", "kind": "external"}

    # show, update, and the refusals Neutron gives for its own resources
    assert neutron.request("GET", "/infra/sites/nowhere").status == 404
    site = ok(neutron.request("PUT", "/infra/sites/cell-a", {"site": {"description": "first cell"}}))["site"]
    assert site["description"] == "first cell" and site["labels"] == {"az": "nova"}
    assert site["version"] > cell["version"]
    assert ctl(*c, "site", "get", "cell-a", "-o", "json").stdout.count("first cell") == 1
    fixed = neutron.request("PUT", "/infra/sites/cell-a", {"site": {"kind": "region"}})
    assert fixed.status == 400 and "kind" in fixed.error
    taken = neutron.request("POST", "/infra/sites", {"site": {"name": "region-one", "kind": "region"}})
    assert taken.status == 409 and "region-one already exists" in taken.error

    # endpoints: an id that fits a URL (SITE:NAME), filters, update
    endpoint = ok(neutron.request("GET", "/infra/endpoints/region-one:gw"))["endpoint"]
    assert endpoint == {"id": "region-one:gw", "site": "region-one", "name": "gw", "address": "192.0.2.1",
                        "asn": 65001, "role": "local", "router_id": "192.0.2.1", "properties": {},
                        "version": endpoint["version"]}
    listed = ok(neutron.request("GET", "/infra/endpoints?site=region-two&fields=id&fields=asn"))["endpoints"]
    assert listed == [{"id": "region-two:gw", "asn": 65002}]
    assert ok(neutron.request("GET", "/infra/endpoints?asn=65001&fields=id"))["endpoints"] == [{"id": "region-one:gw"}]
    moved = ok(neutron.request("PUT", "/infra/endpoints/region-one:gw", {"endpoint": {
        "asn": 65011, "properties": {"rack": "r7"}}}))["endpoint"]
    assert moved["asn"] == 65011 and moved["address"] == "192.0.2.1" and moved["properties"] == {"rack": "r7"}
    assert '"asn": 65011' in ctl(*c, "endpoint", "get", "region-one/gw", "-o", "json").stdout
    assert neutron.request("GET", "/infra/endpoints/region-one:nope").status == 404
    assert neutron.request("GET", "/infra/endpoints/no-separator").status == 404

    # connections: defaults filled in by isthmus, observed state, filters on it
    conn = ok(neutron.request("GET", "/infra/connections/one-two"))["connection"]
    assert conn["bgp"] == {"hold_time": 90, "password_ref": "", "address_families": ["ipv4-unicast"]}
    assert conn["vxlan"] is None and conn["admin_state_up"] is True
    assert conn["status"] == "DISCONNECTED" and conn["observed"]["a"]["agent_connected"] is False
    ok(neutron.request("POST", "/infra/connections", {"connection": {
        "name": "one-two-vx", "type": "vxlan", "a": "region-one:gw", "b": "region-two:gw",
        "vxlan": {"vni": 5001}, "admin_state_up": False}}), 201)
    down = ok(neutron.request("GET", "/infra/connections?status=DOWN&fields=id&fields=vxlan"))["connections"]
    assert down == [{"id": "one-two-vx", "vxlan": {"vni": 5001, "udp_port": 4789, "mtu": 1450}}]
    assert [x["id"] for x in ok(neutron.request("GET", "/infra/connections?type=bgp"))["connections"]] == ["one-two"]
    up = ok(neutron.request("PUT", "/infra/connections/one-two-vx", {"connection": {
        "admin_state_up": True, "vxlan": {"vni": 5002}}}))["connection"]
    assert up["admin_state_up"] is True and up["vxlan"]["vni"] == 5002
    vni = json.loads(ctl(*c, "connection", "get", "one-two-vx", "-o", "json").stdout)["vxlan"]["vni"]
    assert vni == 5002

    # delete: 409 while others depend on it, then 204 in order, 404 after
    used = neutron.request("DELETE", "/infra/endpoints/region-one:gw")
    assert used.status == 409 and "one-two" in used.error
    for path in ("/infra/connections/one-two", "/infra/connections/one-two-vx", "/infra/endpoints/region-one:gw",
                 "/infra/endpoints/region-two:gw", "/infra/sites/cell-a", "/infra/sites/region-one",
                 "/infra/sites/region-two", "/infra/sites/dc-east"):
        assert neutron.request("DELETE", path).status == 204, path
    assert neutron.request("DELETE", "/infra/sites/region-one").status == 404
    assert stored(c) == ([], [], [])


BAD_INPUT = [  # (path, body, the field the 400 must name)
    ("/infra/sites", {"site": {"name": "r", "kind": "galaxy"}}, "kind"),                       # Neutron's check
    ("/infra/sites", {"site": {"name": "Not_A_Label", "kind": "region"}}, "name"),              # isthmus' check
    ("/infra/sites", {"site": {"name": "r", "kind": "region", "parent": "region-one"}}, "parent"),
    ("/infra/sites", {"site": {"name": "r", "kind": "region", "colour": "red"}}, "colour"),
    ("/infra/endpoints", {"endpoint": {"site": "region-one", "name": "e", "address": "192.0.2.9", "asn": 0}}, "asn"),
    ("/infra/endpoints", {"endpoint": {"site": "region-one", "name": "e", "address": "192.0.2.9", "asn": "x"}}, "asn"),
    ("/infra/endpoints", {"endpoint": {"site": "region-one", "name": "e", "address": "not-an-ip", "asn": 1}},
     "address"),
    ("/infra/endpoints", {"endpoint": {"site": "nowhere", "name": "e", "address": "192.0.2.9", "asn": 1}}, "site"),
    ("/infra/connections", {"connection": {"name": "c", "type": "bgp", "a": "region-one/gw", "b": "region-two:gw"}},
     "a"),
    ("/infra/connections", {"connection": {"name": "c", "type": "bgp", "a": "region-one:gw", "b": "region-two:gw",
                                           "bgp": {"hold_time": 2}}}, "bgp.hold_time"),
    ("/infra/connections", {"connection": {"name": "c", "type": "bgp", "a": "region-one:gw", "b": "region-two:gw",
                                           "bgp": {"hold": 30}}}, "bgp"),
    ("/infra/connections", {"connection": {"name": "c", "type": "vxlan", "a": "region-one:gw",
                                           "b": "region-two:gw"}}, "vxlan"),
    ("/infra/connections", {"connection": {"name": "c", "type": "bgp", "a": "region-one:gw", "b": "region-two:nope"}},
     "b"),
]


def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
        neutron: NeutronIsthmus, neutron_coordinator: str) -> None:
    c = ("--coordinator", neutron_coordinator)
    reachable(neutron)
    seed(neutron)
    before = stored(c)
    wrong = []
    for path, body, field in BAD_INPUT:
        refused = neutron.request("POST", path, body)
        if refused.status != 400 or field not in refused.error:
            wrong.append(f"POST {path} {body}: HTTP {refused.status} {refused.error!r} (expected 400 naming {field})")
    assert not wrong, "\n".join(wrong)
    assert stored(c) == before


def keystone_member(cloud: TwoRegionCloud, admin_token: str, name: str) -> str:
    """A new project and user holding the member role in it, made through Keystone's API; the user's token."""
    identity = cloud.auth_url
    project = _api("POST", f"{identity}/projects", {"project": {"name": name, "domain_id": "default"}},
                   admin_token)[0]["project"]
    password = os.urandom(12).hex()
    user = _api("POST", f"{identity}/users", {"user": {"name": name, "domain_id": "default", "password": password}},
                admin_token)[0]["user"]
    role = _api("GET", f"{identity}/roles?name=member", token=admin_token)[0]["roles"][0]
    _api("PUT", f"{identity}/projects/{project['id']}/users/{user['id']}/roles/{role['id']}", token=admin_token)
    auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": name, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"id": project["id"]}}}}
    return _api("POST", f"{identity}/auth/tokens", auth)[1]["X-Subject-Token"]


def test_a_member_reads_but_may_not_write_and_no_token_is_401(
        neutron: NeutronIsthmus, neutron_coordinator: str, two_region_cloud: TwoRegionCloud) -> None:
    c = ("--coordinator", neutron_coordinator)
    reachable(neutron)
    seed(neutron)
    before = stored(c)
    member = keystone_member(two_region_cloud, neutron.token, f"infra-member-{os.urandom(3).hex()}")

    sites = ok(neutron.request("GET", "/infra/sites?fields=id", token=member))["sites"]
    assert sites == [{"id": "region-one"}, {"id": "region-two"}]
    assert ok(neutron.request("GET", "/infra/connections/one-two", token=member))["connection"]["type"] == "bgp"
    for method, path, body in (
            ("POST", "/infra/sites", {"site": {"name": "mine", "kind": "region"}}),
            ("PUT", "/infra/sites/region-one", {"site": {"description": "mine"}}),
            ("DELETE", "/infra/connections/one-two", None),
            ("POST", "/infra/endpoints", {"endpoint": {"site": "region-one", "name": "e", "address": "192.0.2.9",
                                                       "asn": 1}}),
            ("PUT", "/infra/endpoints/region-one:gw", {"endpoint": {"asn": 1}}),
            ("POST", "/infra/connections", {"connection": {"name": "x", "type": "bgp", "a": "region-one:gw",
                                                           "b": "region-two:gw"}})):
        refused = neutron.request(method, path, body, token=member)
        assert refused.status == 403, f"{method} {path}: HTTP {refused.status} {refused.error}"
        assert "disallowed by policy" in refused.error
    for method, path, body in (("GET", "/infra/sites", None),
                               ("POST", "/infra/sites", {"site": {"name": "anon", "kind": "region"}})):
        assert neutron.request(method, path, body, token="").status == 401
    assert stored(c) == before


def test_coordinator_stopped_gives_503_and_nothing_is_written(
        neutron: NeutronIsthmus, etcd: str, tmp_path: Path, procs: Callable[..., Proc]) -> None:
    proc, address = start_neutron_coordinator(etcd, neutron, tmp_path / "first", procs)
    reachable(neutron)
    seed(neutron)
    before = stored(("--coordinator", address))
    proc.stop()

    for method, path, body in (
            ("POST", "/infra/sites", {"site": {"name": "region-three", "kind": "region"}}),
            ("PUT", "/infra/sites/region-one", {"site": {"description": "changed"}}),
            ("DELETE", "/infra/connections/one-two", None),
            ("POST", "/infra/endpoints", {"endpoint": {"site": "region-one", "name": "e2", "address": "192.0.2.9",
                                                       "asn": 1}}),
            ("GET", "/infra/connections", None)):
        answer = neutron.request(method, path, body)
        assert answer.status == 503, f"{method} {path}: HTTP {answer.status} {answer.error}"
        assert "isthmus coordinator unavailable" in answer.error

    _, address = start_neutron_coordinator(etcd, neutron, tmp_path / "second", procs)
    assert stored(("--coordinator", address)) == before
    reachable(neutron)
    assert ok(neutron.request("GET", "/infra/sites/region-one"))["site"]["description"] == ""


def openstack(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([OPENSTACK, "--os-cloud", "infra", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    if check and res.returncode != 0:
        pytest.fail(f"openstack {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def test_openstack_cli_builds_a_connection_that_reaches_established(
        neutron: NeutronIsthmus, neutron_coordinator: str, two_region_cloud: TwoRegionCloud, tmp_path: Path,
        procs: Callable[..., Proc]) -> None:
    if not Path(OPENSTACK).exists():
        pytest.skip("needs Debian's python3-openstackclient (`make test` installs it)")
    c = ("--coordinator", neutron_coordinator)
    reachable(neutron)
    # The test cloud's admin, with Neutron's network endpoint overridden by the isthmus neutron-server.
    clouds = tmp_path / "clouds.yaml"
    q = json.dumps
    clouds.write_text(f"""clouds:
  infra:
    auth:
      auth_url: {q(two_region_cloud.auth_url)}
      username: {q(ADMIN_USER)}
      password: {q(two_region_cloud.password)}
      project_name: {q(ADMIN_PROJECT)}
      user_domain_name: Default
      project_domain_name: Default
    identity_api_version: 3
    region_name: RegionOne
    network_endpoint_override: {q(neutron.url)}
""")
    clouds.chmod(0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "OS_CLIENT_CONFIG_FILE": str(clouds), "PYTHONPATH": str(neutron.site)}
    for site in ("region-one", "region-two"):
        procs(site, agent_cmd(site, neutron_coordinator, tmp_path), tmp_path / f"{site}.log")

    made = json.loads(openstack(env, "infra", "site", "create", "region-one", "--kind", "region",
                                "--label", "dc=one", "-f", "json").stdout)
    assert made["name"] == "region-one" and made["labels"] == {"dc": "one"}
    openstack(env, "infra", "site", "create", "region-two", "--kind", "region")
    for n, site in enumerate(("region-one", "region-two"), start=1):
        openstack(env, "infra", "endpoint", "create", "gw", "--site", site, "--address", f"192.0.2.{n}",
                  "--asn", str(65000 + n))
    conn = json.loads(openstack(env, "infra", "connection", "create", "one-two", "--type", "bgp",
                                "--a", "region-one/gw", "--b", "region-two:gw", "--hold-time", "30",
                                "-f", "json").stdout)
    assert conn["bgp"]["hold_time"] == 30 and conn["a"] == "region-one:gw"

    def established() -> Any:
        shown = json.loads(openstack(env, "infra", "connection", "show", "one-two", "-f", "json").stdout)
        return shown if shown["status"] == "ESTABLISHED" else shown["observed"]

    shown = wait_for(established, 60, "the connection to be ESTABLISHED", interval=0.5)
    assert shown["observed"]["a"]["state"] == shown["observed"]["b"]["state"] == "ESTABLISHED"
    assert shown["observed"]["a"]["agent_connected"] is True
    sites = json.loads(openstack(env, "infra", "site", "list", "-f", "json").stdout)
    assert sites == [{"Name": s, "Kind": "region", "Parent": "", "Agent State": "connected", "Peerings": "1/1"}
                     for s in ("region-one", "region-two")]
    assert "1/1" in ctl(*c, "status", "--wait-established", "--wait-timeout", "30").stdout

    openstack(env, "infra", "connection", "set", "one-two", "--disable", "--description", "maintenance")
    listed = json.loads(openstack(env, "infra", "connection", "list", "-f", "json").stdout)
    assert listed == [{"Name": "one-two", "Type": "bgp", "A": "region-one:gw", "B": "region-two:gw",
                       "Admin State": "DOWN", "Status": "DOWN"}]
    stored_conn = json.loads(ctl(*c, "connection", "get", "one-two", "-o", "json").stdout)
    assert stored_conn["admin_state"] == "ADMIN_STATE_DOWN" and stored_conn["bgp"]["hold_time"] == 30

    refused = openstack(env, "infra", "endpoint", "delete", "region-one:gw", check=False)
    assert refused.returncode == 1 and "one-two" in refused.stderr and "HTTP 409" in refused.stderr
    openstack(env, "infra", "connection", "delete", "one-two")
    openstack(env, "infra", "endpoint", "delete", "region-one:gw", "region-two/gw")
    openstack(env, "infra", "site", "delete", "region-one", "region-two")
    assert stored(c) == ([], [], [])



# ---------------------------------------------------------------- the two forms, without Neutron (plain Python)


def test_a_connections_status_is_established_only_when_every_local_end_is() -> None:
    from isthmus.neutron_plugin import infra_forms as forms

    def end(state: str) -> dict[str, str]:
        return {"state": state}

    assert forms.summary(True, [end("ESTABLISHED"), end("REMOTE")]) == "ESTABLISHED"
    assert forms.summary(True, [end("ESTABLISHED"), end("CONNECTING")]) == "CONNECTING"
    assert forms.summary(True, [end("DISCONNECTED"), end("ERROR")]) == "ERROR"
    assert forms.summary(True, [end("PENDING"), end("DISCONNECTED")]) == "DISCONNECTED"
    assert forms.summary(False, [end("ESTABLISHED"), end("ESTABLISHED")]) == "DOWN"
    status = {"connected": True, "peerings": [
        {"desired": {"connection": "other"}, "observed": {"connection": "other", "state": "PEERING_STATE_ERROR"}},
        {"desired": {"connection": "one-two"},
         "observed": {"connection": "one-two", "state": "PEERING_STATE_CONNECTING", "since_unix_ms": "12"}}]}
    assert forms.end_view("one-two", "region-one:gw", "local", status) == {
        "site": "region-one", "endpoint": "region-one:gw", "role": "local", "state": "CONNECTING",
        "agent_connected": True, "error": "", "since_unix_ms": 12}
    assert forms.end_view("one-two", "region-one:gw", "local", None)["state"] == "DISCONNECTED"
    assert forms.end_view("one-two", "dc:rtr", "remote", None)["state"] == "REMOTE"


def test_an_endpoint_update_keeps_what_the_put_leaves_out() -> None:
    from isthmus.neutron_plugin import infra_forms as forms

    current = {"site": "r1", "name": "gw", "address": "192.0.2.1", "asn": 65001, "router_id": "192.0.2.1",
               "properties": {"rack": "r7"}, "version": "9"}
    assert forms.endpoint_update(current, {"asn": "65011"}) == {
        "site": "r1", "name": "gw", "address": "192.0.2.1", "asn": 65011, "router_id": "192.0.2.1",
        "properties": {"rack": "r7"}, "version": "9"}
    # a router id derived from the old address is derived again; one given explicitly stays
    assert forms.endpoint_update(current, {"address": "192.0.2.5"})["router_id"] == ""
    assert forms.endpoint_update({**current, "router_id": "10.0.0.1"}, {"address": "192.0.2.5"})["router_id"] == \
        "10.0.0.1"
    assert forms.matches({"asn": 65001, "admin_state_up": True, "labels": {}},
                         {"asn": ["65001"], "admin_state_up": ["true"], "labels": ["x"], "unknown": ["y"]})
    assert not forms.matches({"asn": 65001}, {"asn": ["65002"]})
