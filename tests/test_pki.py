"""isthmusctl pki: the CA, the certificates it issues, the identities they carry, and real mutual TLS with them.

cryptography is imported here only to inspect what pki wrote and to forge certificates pki never issues.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import ipaddress
import json
import os
import ssl
import stat
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from isthmus.core import pki
from isthmus.core.pki import Identity, PkiError
from isthmus.ctl import pki as ctl_pki

SLACK = dt.timedelta(minutes=10)  # between now() and the moment pki issues, less its CLOCK_SKEW


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    return directory


# ---------------------------------------------------------------- the CA


def test_init_creates_a_directory_only_its_owner_reads_with_a_p256_ca(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "pki"
    cert_path = pki.init_ca(directory)

    assert cert_path == directory / "ca.pem"
    assert mode(directory) == 0o700 and mode(directory / "ca.key") == 0o600 and mode(cert_path) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == ["ca.key", "ca.pem"]  # no temporary files left
    ca = load(cert_path)
    assert ca.subject.rfc4514_string() == "CN=isthmus CA" and ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert abs(ca.not_valid_after_utc - (now() + dt.timedelta(days=3650))) < SLACK
    private = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    assert private.public_key() == key


def test_init_leaves_the_mode_of_an_existing_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    pki.init_ca(tmp_path, days=30)
    assert mode(tmp_path) == 0o750
    assert abs(load(tmp_path / "ca.pem").not_valid_after_utc - (now() + dt.timedelta(days=30))) < SLACK


def test_init_refuses_to_replace_a_ca_without_force(ca_dir: Path) -> None:
    before = (ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()
    with pytest.raises(PkiError, match="a CA exists in .*--force replaces it"):
        pki.init_ca(ca_dir)
    assert ((ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()) == before

    pki.init_ca(ca_dir, force=True)
    assert (ca_dir / "ca.pem").read_bytes() != before[0] and (ca_dir / "ca.key").read_bytes() != before[1]
    assert mode(ca_dir / "ca.key") == 0o600


def test_init_refuses_a_half_ca_too(tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_bytes(b"precious")
    with pytest.raises(PkiError, match="a CA exists"):
        pki.init_ca(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == b"precious"


@pytest.mark.parametrize("days", [0, -1, pki.MAX_DAYS + 1])
def test_init_refuses_days_out_of_range(tmp_path: Path, days: int) -> None:
    with pytest.raises(PkiError, match=f"days {days} is not in 1..{pki.MAX_DAYS}"):
        pki.init_ca(tmp_path / "pki", days=days)
    assert not (tmp_path / "pki").exists()


# ---------------------------------------------------------------- issuing


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_every_leaf_is_a_p256_end_entity_signed_by_the_ca(ca_dir: Path) -> None:
    ca = load(ca_dir / "ca.pem")
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    serials = set()
    for kind, name, role in [("coordinator", "c1", ""), ("agent", "site1", ""), ("operator", "alice", "viewer")]:
        cert_path, key_path = pki.issue(ca_dir, kind, name, role=role)
        assert (cert_path.name, key_path.name) == (f"{kind}-{name}.pem", f"{kind}-{name}.key")
        assert mode(key_path) == 0o600
        cert = load(cert_path)
        cert.verify_directly_issued_by(ca)
        assert cert.issuer == ca.subject
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert private.public_key() == key
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
        assert not ku.value.key_encipherment
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(key)
        assert abs(cert.not_valid_after_utc - (now() + dt.timedelta(days=365))) < SLACK
        assert cert.not_valid_before_utc < dt.datetime.now(dt.UTC)
        serials.add(cert.serial_number)
    assert len(serials) == 3


def test_a_coordinator_serves_localhost_by_default(ca_dir: Path) -> None:
    cert = load(pki.issue(ca_dir, "coordinator", "c1")[0])
    assert cert.subject.rfc4514_string() == "CN=isthmus coordinator c1,OU=coordinator"
    names = san(cert)
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == ["isthmus://coordinator/c1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                         ipaddress.ip_address("::1")]
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_coordinator_serves_the_names_given_instead(ca_dir: Path) -> None:
    cert = load(pki.issue(ca_dir, "coordinator", "c2", dns=["coord.example.net", "coord.example.net"],
                          ips=["192.0.2.10", "2001:db8::10"])[0])
    names = san(cert)
    assert names.get_values_for_type(x509.DNSName) == ["coord.example.net"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.10", "2001:db8::10"]
    only_ip = load(pki.issue(ca_dir, "coordinator", "c3", ips=["192.0.2.11"])[0])
    assert san(only_ip).get_values_for_type(x509.DNSName) == []


def test_an_agent_names_its_site(ca_dir: Path) -> None:
    cert = load(pki.issue(ca_dir, "agent", "region-one")[0])
    assert cert.subject.rfc4514_string() == "CN=isthmus agent region-one,OU=agent"
    names = san(cert)
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == ["isthmus://site/region-one"]
    assert names.get_values_for_type(x509.DNSName) == ["region-one.site.isthmus.internal"]
    assert names.get_values_for_type(x509.IPAddress) == []
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("role", pki.ROLES)
def test_an_operator_carries_its_role_as_ou(ca_dir: Path, role: str) -> None:
    cert = load(pki.issue(ca_dir, "operator", "alice@example.org", role=role)[0])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice@example.org"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
    assert san(cert).get_values_for_type(x509.UniformResourceIdentifier) == ["isthmus://user/alice@example.org"]
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_issue_refuses_to_replace_a_certificate_without_force(ca_dir: Path) -> None:
    cert_path, key_path = pki.issue(ca_dir, "agent", "site1")
    before = cert_path.read_bytes(), key_path.read_bytes()
    with pytest.raises(PkiError, match=r"agent-site1\.pem exists; --force replaces it"):
        pki.issue(ca_dir, "agent", "site1")
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before
    pki.issue(ca_dir, "agent", "site1", force=True)
    assert cert_path.read_bytes() != before[0] and key_path.read_bytes() != before[1]


def test_issue_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"no CA in .*run 'isthmusctl pki init' first"):
        pki.issue(tmp_path, "agent", "site1")


def test_issue_refuses_a_ca_whose_key_is_another(ca_dir: Path, tmp_path: Path) -> None:
    pki.init_ca(tmp_path / "other")
    (ca_dir / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    with pytest.raises(PkiError, match=r"ca\.key is not the key of .*ca\.pem"):
        pki.issue(ca_dir, "agent", "site1")


@pytest.mark.parametrize(
    "kind, name, message",
    [
        ("agent", "", "site name: is required"),
        ("agent", "Site1", "site name: 'Site1' is not a DNS label"),
        ("agent", "-site", "is not a DNS label"),
        ("agent", "a" * 64, "is not a DNS label"),
        ("agent", "../etc", "is not a DNS label"),
        ("coordinator", "c1.example", "coordinator name: 'c1.example' is not a DNS label"),
        ("operator", "", "operator name '' is not 1-64 of"),
        ("operator", "a" * 65, "is not 1-64 of"),
        ("operator", "bob smith", "is not 1-64 of"),
        ("operator", "../bob", "is not 1-64 of"),
        ("operator", "-bob", "starting with a letter or digit"),
        ("ca", "x", "kind 'ca' is not one of coordinator, agent, operator"),
    ],
)
def test_issue_refuses_bad_names(ca_dir: Path, kind: str, name: str, message: str) -> None:
    with pytest.raises(PkiError, match=message.replace(".", r"\.").replace("(", r"\(")):
        pki.issue(ca_dir, kind, name, role="viewer" if kind == "operator" else "")
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem"]


@pytest.mark.parametrize("name", ["a", "a" * 64, "alice@example.org", "svc_ci-01.bot"])
def test_operator_names_allow_mail_addresses_and_more(ca_dir: Path, name: str) -> None:
    pki.issue(ca_dir, "operator", name, role="viewer")


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        ("operator", {}, "role '' is not one of viewer, operator, admin"),
        ("operator", {"role": "root"}, "role 'root' is not one of viewer, operator, admin"),
        ("operator", {"role": "Admin"}, "role 'Admin' is not one of"),
        ("agent", {"role": "admin"}, "a role is for operator certificates"),
        ("coordinator", {"role": "viewer"}, "a role is for operator certificates"),
        ("agent", {"dns": ["x.example"]}, "DNS names and IP addresses are for coordinator certificates"),
        ("operator", {"role": "admin", "ips": ["192.0.2.1"]}, "are for coordinator certificates"),
        ("coordinator", {"dns": ["bad_name"]}, "'bad_name' is not a DNS name"),
        ("coordinator", {"dns": ["*.example.net"]}, "is not a DNS name"),
        ("coordinator", {"ips": ["192.0.2.300"]}, "'192.0.2.300' is not an IP address"),
        ("agent", {"days": 0}, "days 0 is not in 1..36500"),
        ("agent", {"not_before": dt.datetime(2030, 1, 1)}, "not_before must carry a time zone"),
    ],
)
def test_issue_refuses_bad_roles_and_options(ca_dir: Path, kind: str, kwargs: dict[str, object],
                                             message: str) -> None:
    name = "alice" if kind == "operator" else "x1"
    with pytest.raises(PkiError, match=message.replace(".", r"\.").replace("*", r"\*")):
        pki.issue(ca_dir, kind, name, **kwargs)  # type: ignore[arg-type]


def test_an_expired_certificate_for_tests(ca_dir: Path) -> None:
    start = now() - dt.timedelta(days=10)
    cert = load(pki.issue(ca_dir, "agent", "old", days=2, not_before=start)[0])
    assert cert.not_valid_before_utc == start.replace(microsecond=0)
    assert cert.not_valid_after_utc == (start + dt.timedelta(days=2)).replace(microsecond=0)
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)


def test_a_not_yet_valid_certificate_for_tests(ca_dir: Path) -> None:
    start = now() + dt.timedelta(days=3)
    cert = load(pki.issue(ca_dir, "agent", "future", days=1, not_before=start)[0])
    assert cert.not_valid_before_utc == start.replace(microsecond=0)
    assert cert.not_valid_after_utc == (start + dt.timedelta(days=1)).replace(microsecond=0)


def test_a_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, days=30)
    ca = load(tmp_path / "ca.pem")
    cert = load(pki.issue(tmp_path, "agent", "site1", days=365)[0])
    assert cert.not_valid_after_utc == ca.not_valid_after_utc
    with pytest.raises(PkiError, match="before the certificate would start"):
        pki.issue(tmp_path, "agent", "site2", not_before=now() + dt.timedelta(days=31))


# ---------------------------------------------------------------- identities


@pytest.mark.parametrize(
    "kind, name, role, identity",
    [
        ("agent", "site1", "", Identity("site", "site1", "agent")),
        ("coordinator", "c1", "", Identity("coordinator", "c1", "coordinator")),
        ("operator", "alice", "viewer", Identity("user", "alice", "viewer")),
        ("operator", "bob@example.org", "operator", Identity("user", "bob@example.org", "operator")),
        ("operator", "carol", "admin", Identity("user", "carol", "admin")),
    ],
)
def test_identity_of_each_kind_from_pem_and_der(ca_dir: Path, kind: str, name: str, role: str,
                                                identity: Identity) -> None:
    pem = pki.issue(ca_dir, kind, name, role=role)[0].read_bytes()
    assert pki.identity_from_pem(pem) == identity
    assert pki.identity_from_der(ssl.PEM_cert_to_DER_cert(pem.decode())) == identity
    assert pki.describe(pem)["identity"] == {"kind": identity.kind, "name": identity.name, "role": identity.role}


def test_the_ca_itself_is_no_one(ca_dir: Path) -> None:
    assert pki.identity_from_pem((ca_dir / "ca.pem").read_bytes()) == Identity("unknown", "isthmus CA", "")


def forged(ca_dir: Path, cn: str, units: Sequence[str], uris: Sequence[str]) -> bytes:
    """A certificate signed by the CA that `pki issue` would never make."""
    ca = load(ca_dir / "ca.pem")
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now()).not_valid_after(now() + dt.timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "units, uris, identity",
    [
        # no isthmus URI, or an ambiguous or malformed one: no one
        (["admin"], [], Identity("unknown", "mallory", "")),
        (["admin"], ["https://example.org/user/mallory"], Identity("unknown", "mallory", "")),
        (["agent"], ["isthmus://site/a", "isthmus://site/b"], Identity("unknown", "mallory", "")),
        (["agent"], ["isthmus://site/a", "isthmus://user/a"], Identity("unknown", "mallory", "")),
        (["agent"], ["isthmus://region/a"], Identity("unknown", "mallory", "")),
        (["agent"], ["isthmus://site/A"], Identity("unknown", "mallory", "")),
        (["agent"], ["isthmus://site/a/b"], Identity("unknown", "mallory", "")),
        (["admin"], ["isthmus://user/"], Identity("unknown", "mallory", "")),
        # other URIs beside the isthmus one do no harm
        (["agent"], ["https://example.org/", "isthmus://site/a"], Identity("site", "a", "agent")),
        # the role is the single OU, and only the one that kind carries
        (["admin"], ["isthmus://site/a"], Identity("site", "a", "")),
        (["coordinator"], ["isthmus://site/a"], Identity("site", "a", "")),
        (["agent"], ["isthmus://coordinator/c"], Identity("coordinator", "c", "")),
        (["agent"], ["isthmus://user/mallory"], Identity("user", "mallory", "")),
        (["root"], ["isthmus://user/mallory"], Identity("user", "mallory", "")),
        (["viewer", "admin"], ["isthmus://user/mallory"], Identity("user", "mallory", "")),
        ([], ["isthmus://user/mallory"], Identity("user", "mallory", "")),
    ],
)
def test_identity_of_certificates_pki_never_issues(ca_dir: Path, units: list[str], uris: list[str],
                                                   identity: Identity) -> None:
    assert pki.identity_from_pem(forged(ca_dir, "mallory", units, uris)) == identity


def test_identity_of_something_that_is_no_certificate() -> None:
    with pytest.raises(PkiError, match="not a PEM certificate"):
        pki.identity_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(PkiError, match="not a PEM certificate"):
        pki.identity_from_pem(b"hello")
    with pytest.raises(PkiError, match="not a DER certificate"):
        pki.identity_from_der(b"\x30\x03\x02\x01\x01")


def test_identity_from_an_auth_context_without_a_certificate_is_none(ca_dir: Path) -> None:
    # What gRPC's auth context holds for a plain-TCP peer, and for a verified one.
    assert pki.identity_from_auth_context({}) is None
    assert pki.identity_from_auth_context({"x509_pem_cert": []}) is None
    pem = pki.issue(ca_dir, "agent", "site1")[0].read_bytes()
    assert pki.identity_from_auth_context({"x509_pem_cert": [pem]}) == Identity("site", "site1", "agent")


def test_roles_are_ordered_viewer_operator_admin() -> None:
    assert pki.ROLES == ("viewer", "operator", "admin")
    admin, operator, viewer = (Identity("user", "u", r) for r in ("admin", "operator", "viewer"))
    assert admin.has_role("admin") and admin.has_role("operator") and admin.has_role("viewer")
    assert not operator.has_role("admin") and operator.has_role("operator") and operator.has_role("viewer")
    assert not viewer.has_role("operator") and viewer.has_role("viewer")
    assert not Identity("user", "u", "").has_role("viewer")
    assert not Identity("site", "admin", "agent").has_role("viewer")
    assert not Identity("unknown", "admin", "admin").has_role("viewer")
    with pytest.raises(PkiError, match="role 'root' is not one of"):
        admin.has_role("root")


def test_describe_says_what_show_shows(ca_dir: Path) -> None:
    cert_path = pki.issue(ca_dir, "coordinator", "c1", dns=["coord.example.net"], ips=["192.0.2.10"])[0]
    info = pki.describe(cert_path.read_bytes())
    cert = load(cert_path)
    assert info == {
        "common_name": "isthmus coordinator c1",
        "organizational_unit": "coordinator",
        "dns": ["coord.example.net"],
        "ips": ["192.0.2.10"],
        "uris": ["isthmus://coordinator/c1"],
        "key_usage": ["digitalSignature"],
        "extended_key_usage": ["serverAuth", "clientAuth"],
        "key": "EC secp256r1",
        "ca": False,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "serial": f"{cert.serial_number:x}",
        "issuer": "isthmus CA",
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "identity": {"kind": "coordinator", "name": "c1", "role": "coordinator"},
    }
    ca_info = pki.describe((ca_dir / "ca.pem").read_bytes())
    assert ca_info["ca"] is True and ca_info["key_usage"] == ["keyCertSign", "cRLSign"]
    assert ca_info["extended_key_usage"] == [] and ca_info["uris"] == []


# ---------------------------------------------------------------- isthmusctl pki


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = ctl_pki.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def fields(text: str) -> dict[str, str]:
    return dict((k, v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()))


def test_cli_init_issue_show_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "pki")
    status, out, err = run(capsys, "init", "--dir", d)
    assert (status, err) == (0, "")
    assert fields(out)["certificate"] == f"{d}/ca.pem" and fields(out)["key"] == f"{d}/ca.key"
    assert "identity" not in fields(out)

    status, out, _ = run(capsys, "issue", "coordinator", "c1", "--dir", d, "--dns", "coord.example.net",
                         "--ip", "192.0.2.10", "--ip", "2001:db8::1", "--days", "30")
    assert status == 0
    f = fields(out)
    assert f["certificate"] == f"{d}/coordinator-c1.pem" and f["key"] == f"{d}/coordinator-c1.key"
    assert f["identity"] == "coordinator c1 (role coordinator)"
    status, out, _ = run(capsys, "issue", "agent", "region-one", "--dir", d)
    assert (status, fields(out)["identity"]) == (0, "site region-one (role agent)")
    status, out, _ = run(capsys, "issue", "operator", "alice@example.org", "--role", "admin", "--dir", d)
    assert (status, fields(out)["identity"]) == (0, "user alice@example.org (role admin)")

    status, out, _ = run(capsys, "show", f"{d}/coordinator-c1.pem", "-o", "json")
    assert status == 0
    info = json.loads(out)
    assert info["dns"] == ["coord.example.net"] and info["ips"] == ["192.0.2.10", "2001:db8::1"]
    assert info["identity"] == {"kind": "coordinator", "name": "c1", "role": "coordinator"}
    not_after = dt.datetime.fromisoformat(info["not_after"])
    assert abs(not_after - (now() + dt.timedelta(days=30))) < SLACK

    status, out, _ = run(capsys, "show", f"{d}/agent-region-one.pem")
    f = fields(out)
    assert status == 0
    assert f["subject"] == "isthmus agent region-one" and f["ou"] == "agent" and f["issuer"] == "isthmus CA"
    assert f["uri"] == "isthmus://site/region-one" and f["dns"] == "region-one.site.isthmus.internal"
    assert f["extended-key-usage"] == "clientAuth" and f["identity"] == "site region-one (role agent)"
    assert "expired" not in out and "not yet valid" not in out


def test_cli_dir_defaults_to_the_environment_then_to_pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ISTHMUS_PKI_DIR", str(tmp_path / "from-env"))
    assert run(capsys, "init")[0] == 0
    assert run(capsys, "issue", "agent", "site1")[0] == 0
    assert (tmp_path / "from-env" / "agent-site1.pem").exists()
    monkeypatch.delenv("ISTHMUS_PKI_DIR")
    assert run(capsys, "init")[0] == 0
    assert (tmp_path / "pki" / "ca.pem").exists()


def test_cli_show_marks_expired_and_not_yet_valid(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = pki.issue(ca_dir, "agent", "old", days=1, not_before=now() - dt.timedelta(days=5))[0]
    new = pki.issue(ca_dir, "agent", "new", days=1, not_before=now() + dt.timedelta(days=5))[0]
    assert fields(run(capsys, "show", str(old))[1])["not-after"].endswith("(expired)")
    assert fields(run(capsys, "show", str(new))[1])["not-before"].endswith("(not yet valid)")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["init"], "isthmusctl pki: error: a CA exists in {d}; --force replaces it"),
        (["issue", "agent", "site9", "--dir", "{d}/nowhere"], "no CA in {d}/nowhere"),
        (["show", "{d}/missing.pem"], "cannot read {d}/missing.pem: No such file or directory"),
        (["show", "{d}/ca.key"], "is not a PEM certificate"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(ca_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                            message: str) -> None:
    argv = [a.format(d=ca_dir) for a in argv]
    if argv[0] != "show" and "--dir" not in argv:
        argv += ["--dir", str(ca_dir)]
    status, out, err = run(capsys, *argv)
    assert (status, out) == (1, "")
    assert err.startswith("isthmusctl pki: error: ") and err.count("\n") == 1
    assert message.format(d=ca_dir) in err


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: ACTION"),
        (["issue", "operator", "alice"], "the following arguments are required: --role"),
        (["issue", "operator", "alice", "--role", "root"], "argument --role: invalid choice: 'root'"),
        (["issue", "operator", "bob smith", "--role", "admin"], "operator name 'bob smith' is not 1-64 of"),
        (["issue", "agent", "Site1"], "site name: 'Site1' is not a DNS label"),
        (["issue", "agent", "site1", "--role", "admin"], "unrecognized arguments: --role admin"),
        (["issue", "agent", "site1", "--dns", "x.example"], "unrecognized arguments: --dns x.example"),
        (["issue", "coordinator", "c1", "--ip", "1.2.3"], "argument --ip: '1.2.3' is not an IP address"),
        (["issue", "coordinator", "c1", "--dns", "a_b"], "argument --dns: 'a_b' is not a DNS name"),
        (["issue", "ca", "x"], "argument KIND: invalid choice: 'ca'"),
        (["init", "--days", "0"], "argument --days: 0 is not in 1..36500"),
        (["init", "--days", "ten"], "argument --days: 'ten' is not a whole number of days"),
        (["show", "x.pem", "-o", "yaml"], "argument -o/--output: invalid choice: 'yaml'"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                 message: str) -> None:
    status, out, err = run(capsys, *argv, *(["--dir", str(tmp_path)] if argv[:1] == ["issue"] else []))
    assert (status, out) == (2, "")
    assert message in err and err.startswith("usage: isthmusctl pki")
    assert sorted(os.listdir(tmp_path)) == []


def test_cli_help_goes_to_out(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert ctl_pki.main(["--help"], out=out) == 0
    assert "isthmusctl pki issue agent" in out.getvalue()
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------- real mutual TLS over gRPC


class IdentifyingHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health service, noting the identity of each caller as the coordinator derives it."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[Identity] = []

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
                    ) -> health_pb2.HealthCheckResponse:
        auth = context.auth_context()
        identity = pki.identity_from_pem(auth["x509_pem_cert"][0])
        assert pki.identity_from_auth_context(auth) == identity
        self.callers.append(identity)
        return await super().Check(request, context)


class Server:
    def __init__(self, port: int, servicer: IdentifyingHealth, ca: bytes) -> None:
        self.port, self.servicer, self.ca = port, servicer, ca


@contextlib.asynccontextmanager
async def serving(ca_dir: Path, pair: tuple[Path, Path]) -> AsyncIterator[Server]:
    """A health server on a free loopback port presenting pair, requiring client certificates of ca_dir's CA."""
    ca = (ca_dir / "ca.pem").read_bytes()
    servicer = IdentifyingHealth()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials([(pair[1].read_bytes(), pair[0].read_bytes())], root_certificates=ca,
                                        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        yield Server(port, servicer, ca)
    finally:
        await server.stop(None)


def coordinator(ca_dir: Path) -> contextlib.AbstractAsyncContextManager[Server]:
    return serving(ca_dir, pki.issue(ca_dir, "coordinator", "c1"))


async def check(server: Server, pair: tuple[Path, Path] | None, options: Sequence[tuple[str, str]] = ()) -> object:
    """Call Check over mutual TLS presenting pair (no certificate when None); the status, or the RPC error code."""
    key, cert = (pair[1].read_bytes(), pair[0].read_bytes()) if pair else (None, None)
    creds = grpc.ssl_channel_credentials(server.ca, private_key=key, certificate_chain=cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds, options=options) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return reply.status


SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "kind, name, role, identity",
    [
        ("agent", "site1", "", Identity("site", "site1", "agent")),
        ("operator", "alice", "operator", Identity("user", "alice", "operator")),
        ("coordinator", "c2", "", Identity("coordinator", "c2", "coordinator")),
    ],
)
async def test_mutual_tls_tells_the_coordinator_who_calls(ca_dir: Path, kind: str, name: str, role: str,
                                                         identity: Identity) -> None:
    async with coordinator(ca_dir) as server:
        assert await check(server, pki.issue(ca_dir, kind, name, role=role)) == SERVING
        assert server.servicer.callers == [identity]


async def test_a_client_of_another_ca_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_ca(other)
    async with coordinator(ca_dir) as server:
        assert await check(server, pki.issue(other, "agent", "site1")) == grpc.StatusCode.UNAVAILABLE
        assert server.servicer.callers == []


async def test_expired_and_not_yet_valid_clients_are_refused(ca_dir: Path) -> None:
    expired = pki.issue(ca_dir, "agent", "old", days=1, not_before=now() - dt.timedelta(days=2))
    early = pki.issue(ca_dir, "agent", "early", days=1, not_before=now() + dt.timedelta(days=1))
    async with coordinator(ca_dir) as server:
        assert await check(server, expired) == grpc.StatusCode.UNAVAILABLE
        assert await check(server, early) == grpc.StatusCode.UNAVAILABLE
        assert server.servicer.callers == []
        # The same server takes a valid certificate of the same CA: the dates alone were refused.
        assert await check(server, pki.issue(ca_dir, "agent", "now")) == SERVING
        assert server.servicer.callers == [Identity("site", "now", "agent")]


async def test_a_client_without_a_certificate_is_refused(ca_dir: Path) -> None:
    async with coordinator(ca_dir) as server:
        assert await check(server, None) == grpc.StatusCode.UNAVAILABLE
        assert server.servicer.callers == []


async def test_clients_check_the_coordinator_against_the_names_it_was_issued(ca_dir: Path) -> None:
    agent = pki.issue(ca_dir, "agent", "site1")
    async with coordinator(ca_dir) as server:  # localhost, 127.0.0.1 and ::1 by default
        assert await check(server, agent) == SERVING
    async with serving(ca_dir, pki.issue(ca_dir, "coordinator", "c3", dns=["coord.example.net"])) as server:
        # Dialed at 127.0.0.1, which this certificate does not name: the client refuses it.
        assert await check(server, agent) == grpc.StatusCode.UNAVAILABLE
        override = [("grpc.ssl_target_name_override", "coord.example.net")]
        assert await check(server, agent, options=override) == SERVING


async def test_an_agent_certificate_cannot_serve(ca_dir: Path) -> None:
    # Its extendedKeyUsage is clientAuth only, and gRPC's TLS checks the purpose.
    async with serving(ca_dir, pki.issue(ca_dir, "agent", "rogue")) as server:
        override = [("grpc.ssl_target_name_override", "rogue.site.isthmus.internal")]
        assert await check(server, pki.issue(ca_dir, "agent", "site1"), options=override) == \
            grpc.StatusCode.UNAVAILABLE
