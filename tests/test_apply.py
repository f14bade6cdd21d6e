"""isthmusctl apply, diff, plan, get and policy against a real coordinator process (its leader expanding the
policies) and real etcd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc

from conftest import ctl, wait_for
from isthmus.v1 import l2gw_pb2, l2gw_pb2_grpc

SITES = """\
kind: Site
spec: {name: hub-a, kind: region, labels: {role: hub}}
---
kind: Site
spec: {name: hub-b, kind: region, labels: {role: hub}}
---
kind: Site
spec: {name: s1, kind: region, labels: {role: edge}}
---
kind: Site
spec: {name: s2, kind: region, labels: {role: edge}}
---
kind: Site
spec: {name: s3, kind: region, labels: {role: lab}}
"""

ENDPOINTS = "".join(f"""\
---
kind: Endpoint
spec: {{site: {site}, name: gw, address: 10.0.0.{i}, asn: 6451{i}}}
""" for i, site in enumerate(("hub-a", "hub-b", "s1", "s2", "s3"), start=1))

POLICY = """\
kind: Policy
spec:
  name: edge
  kind: hub-and-spoke
  endpoint: gw
  selector: {{role: edge}}
  hubs: [hub-a, hub-b]
  bgp: {{hold_time: {hold}, graceful_restart: 60}}
"""

EXPLICIT = """\
kind: Connection
spec:
  name: lab-link
  a: {site: hub-a, name: gw}
  b: {site: s3, name: gw}
  type: vxlan
  vxlan: {vni: 7001}
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def connections(c: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {x["name"]: x for x in json.loads(ctl(*c, "connection", "list", "-o", "json").stdout)}


def policy_names(c: tuple[str, ...], policy: str) -> set[str]:
    return {n for n, x in connections(c).items() if x.get("policy") == policy}


def test_apply_expands_a_policy_plan_lists_exactly_the_resets_and_apply_does_exactly_that(
        coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"sites.yaml": SITES + ENDPOINTS, "policy.yaml": POLICY.format(hold=90),
                                     "lab.yaml": EXPLICIT})
    first = ctl(*c, "diff", "-f", str(files)).stdout
    assert "+ site hub-a" in first and "+ policy edge" in first and "+ connection lab-link" in first

    ctl(*c, "apply", "-f", str(files))
    # The leader expands the policy: the hubs with each other, every edge site with every hub; s3 (lab) is no
    # member.
    expected = {"edge-hub-a-hub-b", "edge-hub-a-s1", "edge-hub-a-s2", "edge-hub-b-s1", "edge-hub-b-s2"}
    wait_for(lambda: policy_names(c, "edge") == expected, 20, "the policy's connections")
    stored = connections(c)
    assert stored["edge-hub-a-s1"]["bgp"]["hold_time"] == 90 and stored["lab-link"].get("policy", "") == ""
    assert ctl(*c, "diff", "-f", str(files)).stdout.strip() == "no changes"
    assert ctl(*c, "plan", "-f", str(files)).stdout.strip() == "no peering changes"

    # A hold-time change: plan names each of the five sessions at both of its ends, as resets, and nothing else.
    write(files, {"policy.yaml": POLICY.format(hold=30)})
    rows = json.loads(ctl(*c, "plan", "-f", str(files), "-o", "json").stdout)
    ends = {"edge-hub-a-hub-b": ("hub-a", "hub-b"), "edge-hub-a-s1": ("hub-a", "s1"),
            "edge-hub-a-s2": ("hub-a", "s2"), "edge-hub-b-s1": ("hub-b", "s1"), "edge-hub-b-s2": ("hub-b", "s2")}
    assert {(r["site"], r["connection"]) for r in rows} == {(s, n) for n, pair in ends.items() for s in pair}
    assert all(r["change"] == "changed" and r["reset"] and r["fields"] == ["bgp.hold_time"] for r in rows)
    before = connections(c)
    ctl(*c, "apply", "-f", str(files))

    def reset_done() -> bool:
        now = connections(c)
        return all(now[n]["bgp"]["hold_time"] == 30 for n in expected)

    wait_for(reset_done, 20, "the new hold time on every policy connection")
    after = connections(c)
    changed = {n for n in after if after[n]["version"] != before[n]["version"]}
    assert changed == expected  # lab-link untouched
    assert ctl(*c, "plan", "-f", str(files)).stdout.strip() == "no peering changes"


def test_get_round_trips_into_apply(coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"all.yaml": SITES + ENDPOINTS + "---\n" + POLICY.format(hold=90) + "---\n"
                                     + EXPLICIT})
    ctl(*c, "apply", "-f", str(files))
    wait_for(lambda: len(policy_names(c, "edge")) == 5, 20, "the policy's connections")
    dumped = ctl(*c, "get", "-o", "yaml").stdout
    assert "edge-hub-a-s1" not in dumped  # the policy's connections are the policy's, not documents of their own
    again = write(tmp_path / "again", {"dump.yaml": dumped})
    assert ctl(*c, "diff", "-f", str(again)).stdout.strip() == "no changes"
    assert ctl(*c, "apply", "-f", str(again)).stdout.strip() == "no changes"
    assert ctl(*c, "get", "-o", "yaml").stdout == dumped


def test_one_bad_document_writes_nothing_and_every_error_names_file_document_and_field(
        coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    bad_policy = POLICY.format(hold=2)  # not 0 or 3..65535
    bad_endpoint = "kind: Endpoint\nspec: {site: nowhere, name: gw, address: 10.9.9.9, asn: 1}\n"
    files = write(tmp_path / "net", {"a.yaml": SITES + ENDPOINTS, "b.yaml": bad_policy, "c.yaml": bad_endpoint,
                                     "d.yaml": "kind: Site\nspec: {name: x, kind: region, colour: red}\n"})
    res = ctl(*c, "apply", "-f", str(files), check=False)
    assert res.returncode == 1
    assert "b.yaml: document 0 (edge): bgp.hold_time: 2 must be" in res.stderr
    assert "d.yaml: document 0 (x): colour: unknown field" in res.stderr
    assert json.loads(ctl(*c, "site", "list", "-o", "json").stdout) == []

    # With the document-level errors gone, the set is checked as a whole: a reference to no site.
    write(files, {"b.yaml": POLICY.format(hold=30), "d.yaml": ""})
    res = ctl(*c, "apply", "-f", str(files), check=False)
    assert res.returncode == 1 and "c.yaml: document 0 (Endpoint nowhere/gw): site: site nowhere" in res.stderr
    assert json.loads(ctl(*c, "site", "list", "-o", "json").stdout) == []


def test_policy_connections_follow_sites_and_cannot_be_edited_by_hand(coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"sites.yaml": SITES + ENDPOINTS})
    ctl(*c, "apply", "-f", str(files))
    ctl(*c, "policy", "create", "edge", "--kind", "hub-and-spoke", "--endpoint", "gw", "--hub", "hub-a",
        "--selector", "role=edge", "--hold-time", "30")
    wait_for(lambda: policy_names(c, "edge") == {"edge-hub-a-s1", "edge-hub-a-s2"}, 20, "the spokes")

    # Relabelling moves a site out of (s2) and into (s3) the policy.
    ctl(*c, "site", "update", "s2", "--label", "role=lab")
    ctl(*c, "site", "update", "s3", "--label", "role=edge")
    wait_for(lambda: policy_names(c, "edge") == {"edge-hub-a-s1", "edge-hub-a-s3"}, 20, "the moved spokes")

    hand = ctl(*c, "connection", "update", "edge-hub-a-s1", "--hold-time", "60", check=False)
    assert hand.returncode == 1 and "FAILED_PRECONDITION" in hand.stderr and "topology policy edge" in hand.stderr
    gone = ctl(*c, "connection", "delete", "edge-hub-a-s1", check=False)
    assert gone.returncode == 1 and "belongs to topology policy edge" in gone.stderr
    table = ctl(*c, "connection", "list").stdout.splitlines()
    assert "POLICY" in table[0].split()
    assert all(row.split()[-2] == "edge" for row in table[1:]), table  # the owner, before the version

    # An explicit connection of the same endpoints wins: it replaces the policy's, which then stays away.
    ctl(*c, "connection", "create", "mine", "--a", "hub-a/gw", "--b", "s1/gw", "--type", "bgp", "--hold-time", "9")
    wait_for(lambda: policy_names(c, "edge") == {"edge-hub-a-s3"}, 20, "the policy giving way")
    shown = ctl(*c, "policy", "show", "edge").stdout
    assert "explicit bgp connection mine joins these endpoints and wins over the policy" in shown
    assert "members" in shown and "s1, s3" in shown

    ctl(*c, "policy", "delete", "edge")
    wait_for(lambda: set(connections(c)) == {"mine"}, 20, "only what the policy made removed")


def test_prune_deletes_what_the_files_no_longer_name_after_the_policy_let_go_of_its_endpoints(
        coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"sites.yaml": SITES + ENDPOINTS, "policy.yaml": POLICY.format(hold=90),
                                     "lab.yaml": EXPLICIT})
    ctl(*c, "apply", "-f", str(files))
    wait_for(lambda: len(policy_names(c, "edge")) == 5, 20, "the policy's connections")
    assert json.loads(ctl(*c, "diff", "-f", str(files), "-o", "json").stdout) == []
    assert [x.split(":")[0] for x in ctl(*c, "get", "policies").stdout.split("---")] == ["kind"]

    # Keep hub-a, hub-b and s1 only: s2's endpoint is used by the policy's connections until the leader deletes
    # them, and s3's by lab-link, which goes first.
    kept = "---\n".join(doc for doc in (SITES + ENDPOINTS).split("---\n")
                        if doc.strip() and "s2" not in doc and "s3" not in doc)
    (files / "policy.yaml").unlink()
    (files / "lab.yaml").unlink()
    write(files, {"sites.yaml": kept})
    plan = ctl(*c, "diff", "-f", str(files), "--prune").stdout
    assert "- policy edge" in plan and "- connection lab-link" in plan and "- site s2" in plan
    ctl(*c, "apply", "-f", str(files), "--prune")
    assert set(connections(c)) == set()
    assert {s["name"] for s in json.loads(ctl(*c, "site", "list", "-o", "json").stdout)} == {"hub-a", "hub-b", "s1"}
    assert ctl(*c, "diff", "-f", str(files), "--prune").stdout.strip() == "no changes"


BORDER = """\
---
kind: GatewayDevice
spec: {site: s1, name: bgw, type: router_vtep, tunnel_ips: [192.0.2.1]}
---
kind: GatewayDevice
spec: {site: s2, name: bgw, type: router_vtep, tunnel_ips: [192.0.2.2], management: {segment_bridge: "br-{network_id}"}}
---
kind: L2Gateway
spec:
  name: blue-gw
  project_id: p-blue
  devices:
  - {device: {site: s1, name: bgw}, segmentation_id: 100}
  - {device: {site: s2, name: bgw}, segmentation_id: 100}
---
kind: L2GatewayConnection
spec: {project_id: p-blue, l2_gateway: blue-gw, network_id: net-blue}
"""

THIRD_DEVICE = """\
---
kind: GatewayDevice
spec: {site: s3, name: bgw, type: router_vtep, tunnel_ips: [192.0.2.3]}
"""


def border_objects(c: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    return {group: json.loads(ctl(*c, group, "list", "-o", "json").stdout)
            for group in ("gateway-device", "l2-gateway", "l2-gateway-connection")}


def test_border_gateways_apply_by_name_update_in_place_and_round_trip_through_get(
        coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"sites.yaml": SITES + ENDPOINTS, "border.yaml": BORDER})
    first = ctl(*c, "diff", "-f", str(files)).stdout
    assert "+ gateway-device s1/bgw" in first and "+ l2-gateway p-blue/blue-gw" in first
    assert "+ l2-gateway-connection p-blue/blue-gw/net-blue" in first
    ctl(*c, "apply", "-f", str(files))
    made = border_objects(c)
    devices = {f"{d['site']}/{d['name']}": d for d in made["gateway-device"]}
    (gw,) = made["l2-gateway"]
    (conn,) = made["l2-gateway-connection"]
    # The names in the files became the ids: the gateway names the devices, the connection the gateway.
    assert sorted(d["device_id"] for d in gw["devices"]) == sorted(d["id"] for d in devices.values())
    assert conn["l2_gateway_id"] == gw["id"] and conn["segmentation_id"] == 100 and conn["network_id"] == "net-blue"
    assert ctl(*c, "diff", "-f", str(files)).stdout.strip() == "no changes"

    # Round trip: all kinds, and the border kinds alone.
    dumped = ctl(*c, "get", "-o", "yaml").stdout
    assert "kind: L2GatewayConnection" in dumped and gw["id"] not in dumped
    again = write(tmp_path / "again", {"dump.yaml": dumped})
    assert ctl(*c, "diff", "-f", str(again), "--prune").stdout.strip() == "no changes"
    assert ctl(*c, "apply", "-f", str(again), "--prune").stdout.strip() == "no changes"
    assert ctl(*c, "get", "-o", "yaml").stdout == dumped
    border_only = ctl(*c, "get", "gateway-devices", "l2-gateways", "l2-gateway-connections").stdout
    assert "kind: Site" not in border_only and border_only.count("kind: GatewayDevice") == 2
    write(tmp_path / "border-only", {"b.yaml": border_only})
    assert ctl(*c, "apply", "-f", str(tmp_path / "border-only")).stdout.strip() == "no changes"

    # A changed tunnel IP and a third device: the device and the gateway are updated in place (same ids, the
    # versions read), the new device created first.
    write(files, {"border.yaml": BORDER.replace("192.0.2.1", "192.0.2.11").replace(
        "segmentation_id: 100}\n---\nkind: L2GatewayConnection",
        "segmentation_id: 100}\n  - {device: {site: s3, name: bgw}, segmentation_id: 100}\n---\n"
        "kind: L2GatewayConnection") + THIRD_DEVICE})
    changed = ctl(*c, "diff", "-f", str(files)).stdout.splitlines()
    assert changed[:3] == ["~ gateway-device s1/bgw (tunnel_ips)", "+ gateway-device s3/bgw",
                           "~ l2-gateway p-blue/blue-gw (devices)"], changed
    planned = ctl(*c, "plan", "-f", str(files))
    assert planned.stdout.strip() == "no peering changes"
    assert "3 border gateway change(s) not in this plan" in planned.stderr
    ctl(*c, "apply", "-f", str(files))
    now = border_objects(c)
    by_name = {f"{d['site']}/{d['name']}": d for d in now["gateway-device"]}
    assert by_name["s1/bgw"]["id"] == devices["s1/bgw"]["id"] and by_name["s1/bgw"]["tunnel_ips"] == ["192.0.2.11"]
    assert int(by_name["s1/bgw"]["version"]) > int(devices["s1/bgw"]["version"])
    assert now["l2-gateway"][0]["id"] == gw["id"] and len(now["l2-gateway"][0]["devices"]) == 3
    assert now["l2-gateway-connection"][0]["id"] == conn["id"]
    assert ctl(*c, "diff", "-f", str(files)).stdout.strip() == "no changes"

    # The connection took 100 from the devices: a new id on every device is refused before anything is written.
    write(files, {"border.yaml": (tmp_path / "net" / "border.yaml").read_text().replace("id: 100", "id: 200")})
    res = ctl(*c, "apply", "-f", str(files), check=False)
    assert res.returncode == 1 and ("(L2GatewayConnection p-blue/blue-gw/net-blue): segmentation_id: the "
                                    "connection took 100 from the devices of l2-gateway blue-gw") in res.stderr
    assert {d["segmentation_id"] for d in border_objects(c)["l2-gateway"][0]["devices"]} == {100}


def test_one_bad_border_document_writes_nothing(coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"a.yaml": SITES + ENDPOINTS + BORDER,
                                     "b.yaml": "kind: GatewayDevice\nspec: {site: s3, name: tor, type: vtep, "
                                               "tunnel_ips: [192.0.2.9]}\n"})
    res = ctl(*c, "apply", "-f", str(files), check=False)
    assert res.returncode == 1 and "b.yaml: document 0 (tor): type: 'vtep' is not one of" in res.stderr

    # Each document fine alone, refused as a set: a device no file names, a VLAN id out of range, a gateway no
    # file names, and a segmentation id bound to two networks.
    vlan = ("---\nkind: GatewayDevice\nspec: {site: s3, name: tor, type: network_vlan, tunnel_ips: [192.0.2.9]}\n"
            "---\nkind: L2Gateway\nspec:\n  name: red-gw\n  project_id: p-red\n  devices:\n"
            "  - {device: {site: s3, name: tor}, segmentation_id: 5000}\n"
            "  - {device: {site: s4, name: bgw}, segmentation_id: 5000}\n"
            "---\nkind: L2GatewayConnection\nspec: {project_id: p-red, l2_gateway: green-gw, network_id: net-red}\n"
            "---\nkind: L2GatewayConnection\nspec: {project_id: p-blue, l2_gateway: blue-gw, network_id: net-red}\n")
    write(files, {"b.yaml": vlan})
    res = ctl(*c, "apply", "-f", str(files), check=False)
    assert res.returncode == 1
    assert ("b.yaml: document 1 (L2Gateway p-red/red-gw): devices[1].device: gateway device s4/bgw is neither "
            "stored nor in the files") in res.stderr
    assert ("b.yaml: document 2 (L2GatewayConnection p-red/green-gw/net-red): l2_gateway: l2-gateway green-gw of "
            "project p-red is neither stored nor in the files") in res.stderr
    assert ("b.yaml: document 3 (L2GatewayConnection p-blue/blue-gw/net-red): segmentation_id: 100 is also the "
            "segmentation id of network net-blue") in res.stderr
    write(files, {"b.yaml": vlan.replace("  - {device: {site: s4, name: bgw}, segmentation_id: 5000}\n", "")})
    res = ctl(*c, "apply", "-f", str(files), check=False)
    assert res.returncode == 1
    assert ("b.yaml: document 1 (L2Gateway p-red/red-gw): devices[0].segmentation_id: 5000 is out of range "
            "1..4094") in res.stderr
    assert json.loads(ctl(*c, "site", "list", "-o", "json").stdout) == []
    assert border_objects(c) == {"gateway-device": [], "l2-gateway": [], "l2-gateway-connection": []}


def test_prune_deletes_border_objects_connections_first_then_gateways_devices_and_sites(
        coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"sites.yaml": SITES + ENDPOINTS, "border.yaml": BORDER + THIRD_DEVICE})
    ctl(*c, "apply", "-f", str(files))
    assert len(border_objects(c)["gateway-device"]) == 3
    # Keep s3's device only; drop site s2 (its endpoint and device go too). The coordinator refuses to delete a
    # gateway with connections, a device a gateway names and a site with devices: only this order works.
    kept = "---\n".join(doc for doc in (SITES + ENDPOINTS).split("---\n") if doc.strip() and "s2" not in doc)
    write(files, {"sites.yaml": kept, "border.yaml": THIRD_DEVICE})
    expected = ["- l2-gateway-connection p-blue/blue-gw/net-blue", "- l2-gateway p-blue/blue-gw",
                "- gateway-device s1/bgw", "- gateway-device s2/bgw", "- endpoint s2/gw", "- site s2"]
    assert ctl(*c, "diff", "-f", str(files), "--prune").stdout.splitlines()[:-1] == expected
    assert ctl(*c, "apply", "-f", str(files), "--prune").stdout.splitlines()[:-1] == expected
    left = border_objects(c)
    assert [f"{d['site']}/{d['name']}" for d in left["gateway-device"]] == ["s3/bgw"]
    assert left["l2-gateway"] == [] and left["l2-gateway-connection"] == []
    assert ctl(*c, "diff", "-f", str(files), "--prune").stdout.strip() == "no changes"


def test_neutrons_border_objects_are_left_alone_and_twins_are_refused(coordinator: str, tmp_path: Path) -> None:
    c = ("--coordinator", coordinator)
    files = write(tmp_path / "net", {"sites.yaml": SITES + ENDPOINTS, "border.yaml": BORDER})
    ctl(*c, "apply", "-f", str(files))
    device = {f"{d['site']}/{d['name']}": d["id"] for d in border_objects(c)["gateway-device"]}["s1/bgw"]
    # A gateway as Neutron's API makes it (owner neutron), on a device the files name.
    with grpc.insecure_channel(coordinator) as channel:
        l2gw_pb2_grpc.BorderGatewayServiceStub(channel).CreateL2Gateway(l2gw_pb2.L2Gateway(
            name="red-gw", project_id="p-red", owner="neutron",
            devices=[l2gw_pb2.L2GatewayDeviceRef(device_id=device, segmentation_id=200)]), timeout=10)
    assert "red-gw" not in ctl(*c, "get").stdout
    assert ctl(*c, "diff", "-f", str(files), "--prune").stdout.strip() == "no changes"  # not pruned
    # Pruning the device Neutron's gateway uses is refused, naming it; nothing is written.
    res = ctl(*c, "apply", "-f", str(files / "sites.yaml"), "--prune", check=False)
    assert res.returncode == 1 and "--prune: GatewayDevice s1/bgw: l2-gateway " in res.stderr
    assert "(made by neutron) uses it" in res.stderr and len(border_objects(c)["l2-gateway-connection"]) == 1
    mine = ("---\nkind: L2Gateway\nspec:\n  name: red-gw\n  project_id: p-red\n  devices:\n"
            "  - {device: {site: s1, name: bgw}, segmentation_id: 200}\n")
    write(files, {"red.yaml": mine})
    res = ctl(*c, "apply", "-f", str(files), check=False)
    assert res.returncode == 1 and "red.yaml: document 0 (L2Gateway p-red/red-gw): name: l2-gateway" in res.stderr
    assert "was made by neutron" in res.stderr
    (files / "red.yaml").unlink()

    # Two gateways of one project and name: files cannot tell them apart.
    ctl(*c, "l2-gateway", "create", "blue-gw", "--project", "p-blue", "--device", f"{device}=100")
    res = ctl(*c, "diff", "-f", str(files), check=False)
    assert res.returncode == 1 and "(L2Gateway p-blue/blue-gw): name: the coordinator holds 2 of these" in res.stderr
    assert "delete all but one first" in res.stderr
    assert len(border_objects(c)["l2-gateway"]) == 3
