"""isthmus's certificate authority (`isthmusctl pki init|issue|show`: ctl/pki.py), and the identity a peer
certificate carries.

The only module that imports ``cryptography``. The conventions below are the contract the
coordinator checks on every mutual-TLS connection; changing one breaks certificates already issued.

Files, in one directory (``--dir``, default ``$ISTHMUS_PKI_DIR``, else ``./pki``)::

    ca.pem  ca.key                         the CA (key mode 0600; the directory 0700 when init creates it)
    coordinator-<name>.pem  .key           one per coordinator
    agent-<site>.pem  .key                 one per site
    operator-<name>.pem  .key              one per person or tool using the API

Every key is EC P-256 (ECDSA with SHA-256), unencrypted PKCS#8 PEM, as gRPC reads it.

The CA: self-signed, CN ``isthmus CA``, basicConstraints CA:true pathlen:0, keyUsage
keyCertSign and cRLSign, 10 years by default.

Every leaf: basicConstraints CA:false, keyUsage digitalSignature, subject and authority key
identifiers, a random serial, one year by default (never past the CA's end), and exactly one
isthmus URI in its subjectAltName naming what it is:

coordinator <name>
    subject OU=coordinator, CN=isthmus coordinator <name>
    SAN     URI isthmus://coordinator/<name>, and the DNS names and IP addresses clients dial
            (default, when neither is given: DNS localhost, IP 127.0.0.1 and ::1)
    EKU     serverAuth, clientAuth (a coordinator is also etcd's client)
agent <site>
    subject OU=agent, CN=isthmus agent <site>
    SAN     URI isthmus://site/<site>, DNS <site>.site.isthmus.internal
    EKU     clientAuth
operator <name>
    subject OU=<role: viewer | operator | admin>, CN=<name>
    SAN     URI isthmus://user/<name>
    EKU     clientAuth

Site and coordinator names are DNS labels (as ``model.check_name``); operator names are
1-64 of ``A-Z a-z 0-9 _ . @ -`` starting with a letter or digit. API roles are ordered
viewer < operator < admin (``ROLES``): each allows what the one before it allows.

The coordinator derives a peer's ``Identity`` from the certificate gRPC verified
(``identity_from_auth_context(context.auth_context())``): the kind and name come from
the one isthmus URI, the role from the single OU, and only when the OU is the one that kind
carries (``agent`` for sites, ``coordinator`` for coordinators, one of ``ROLES`` for users).
Anything else is ``Identity("unknown", <CN>, "")`` and is owed nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from isthmus.core import model
from isthmus.core.errors import InvalidArgument, IsthmusError
from isthmus.core.files import write_atomically

# ---------------------------------------------------------------- the conventions (the contract)

ENV_PKI_DIR = "ISTHMUS_PKI_DIR"
DEFAULT_PKI_DIR = "pki"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_COMMON_NAME = "isthmus CA"
CA_DAYS = 3650
LEAF_DAYS = 365
MAX_DAYS = 36500
# Leaves start this long before they are issued, so a peer whose clock lags a little accepts them.
CLOCK_SKEW = dt.timedelta(minutes=5)

KINDS = ("coordinator", "agent", "operator")  # what `pki issue` makes
ROLES = ("viewer", "operator", "admin")  # API roles of operators, weakest first
AGENT_ROLE = "agent"  # the OU of agent certificates
COORDINATOR_ROLE = "coordinator"  # the OU of coordinator certificates

URI_PREFIX = "isthmus://"
SITE_URI = URI_PREFIX + "site/"  # + <site>
COORDINATOR_URI = URI_PREFIX + "coordinator/"  # + <name>
USER_URI = URI_PREFIX + "user/"  # + <name>
SITE_DNS_SUFFIX = ".site.isthmus.internal"  # <site> + this: the agent's DNS name
DEFAULT_COORDINATOR_DNS = ("localhost",)
DEFAULT_COORDINATOR_IPS = ("127.0.0.1", "::1")
AUTH_CONTEXT_PEM_KEY = "x509_pem_cert"  # where gRPC's auth context holds the peer's certificate

# Identity kinds: what a verified peer certificate names.
SITE, COORDINATOR, USER, UNKNOWN = "site", "coordinator", "user", "unknown"

_USER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", re.ASCII)
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?", re.ASCII)
_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


class PkiError(IsthmusError):
    """A certificate, key or directory that cannot be used as asked; the message says which and why."""


@dataclass(frozen=True)
class Identity:
    """Who a verified certificate names.

    kind: "site" (an agent), "coordinator", "user" (an operator) or "unknown".
    name: the site, coordinator or user name; for "unknown" the subject CN (may be empty).
    role: "agent", "coordinator", one of ROLES for users, or "" when the certificate carries none.
    """

    kind: str
    name: str
    role: str

    def has_role(self, minimum: str) -> bool:
        """Whether this is a user whose role is minimum or above it in ROLES.

        Raises PkiError if minimum is not one of ROLES.
        """
        check_role(minimum)
        return self.kind == USER and self.role in ROLES and ROLES.index(self.role) >= ROLES.index(minimum)


# ---------------------------------------------------------------- names


def check_role(role: str) -> None:
    """Raises PkiError unless role is one of ROLES."""
    if role not in ROLES:
        raise PkiError(f"role {role!r} is not one of {', '.join(ROLES)}")


def check_name(kind: str, name: str) -> None:
    """Raises PkiError unless name suits a certificate of kind (one of KINDS, else PkiError too)."""
    if kind == "operator":
        if not _USER_NAME_RE.fullmatch(name):
            raise PkiError(f"operator name {name!r} is not 1-64 of A-Z a-z 0-9 _ . @ - "
                           "starting with a letter or digit")
        return
    if kind not in KINDS:
        raise PkiError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        model.check_name(name, f"{'site' if kind == 'agent' else kind} name")
    except InvalidArgument as exc:
        raise PkiError(str(exc)) from None


def check_dns_name(name: str) -> None:
    """Raises PkiError unless name is an ASCII host name (labels of letters, digits and '-')."""
    if len(name) > 253 or not _DNS_NAME_RE.fullmatch(name):
        raise PkiError(f"{name!r} is not a DNS name")


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Raises PkiError unless text is an IPv4 or IPv6 address."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PkiError(f"{text!r} is not an IP address") from None


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise PkiError(f"days {days} is not in 1..{MAX_DAYS}")


# ---------------------------------------------------------------- files


def _write(path: Path, data: bytes, mode: int) -> None:
    # Renamed into place: a reader never sees half a key, and the key file is 0600 from its first byte.
    write_atomically(path, data, mode)


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                force: bool) -> None:
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise PkiError(f"{path} exists; --force replaces it")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        _write(key_path, key_pem, 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise PkiError(f"cannot write {exc.filename or cert_path.parent}: {exc.strerror}") from exc


def read_file(path: Path) -> bytes:
    """The bytes of a file of the PKI; PkiError naming it when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror}") from exc


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not cert_path.exists() or not key_path.exists():
        raise PkiError(f"no CA in {directory} ({CA_CERT_FILE} and {CA_KEY_FILE}): run 'isthmusctl pki init' first")
    cert = _load_cert(read_file(cert_path), str(cert_path))
    try:
        key = serialization.load_pem_private_key(read_file(key_path), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{key_path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    if key.public_key() != cert.public_key():
        raise PkiError(f"{key_path} is not the key of {cert_path}")
    if not _is_ca(cert):
        raise PkiError(f"{cert_path} is not a CA certificate")
    if cert.not_valid_after_utc <= _now():
        raise PkiError(f"the CA in {cert_path} expired at {cert.not_valid_after_utc.isoformat()}; "
                       "run 'isthmusctl pki init --force' and issue every certificate again")
    return cert, key


# ---------------------------------------------------------------- building certificates


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, unit: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)] if unit else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def init_ca(directory: Path, days: int = CA_DAYS, force: bool = False) -> Path:
    """Create a CA in directory: ca.pem and ca.key (mode 0600); return the path of ca.pem.

    directory: created (mode 0700) if missing.
    days: validity from now, 1..MAX_DAYS.
    force: replace an existing CA; every certificate the old one issued stops being trusted.
    Raises PkiError if days is out of range, a CA file exists and force is false, or a file
    cannot be written.
    """
    _check_days(days)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not directory.exists():
        try:
            directory.mkdir(parents=True, mode=0o700)
            directory.chmod(0o700)  # mkdir's mode is subject to the umask
        except OSError as exc:
            raise PkiError(f"cannot create {directory}: {exc.strerror}") from exc
    elif not force and (cert_path.exists() or key_path.exists()):
        raise PkiError(f"a CA exists in {directory}; --force replaces it "
                       "(every certificate it issued stops being trusted)")
    key = _new_key()
    name = _name(CA_COMMON_NAME)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key, force=True)
    return cert_path


def issue(directory: Path, kind: str, name: str, *, role: str = "", dns: Sequence[str] = (),
          ips: Sequence[str] = (), days: int = LEAF_DAYS, not_before: dt.datetime | None = None,
          force: bool = False) -> tuple[Path, Path]:
    """Issue a certificate of kind for name, signed by the CA in directory; return (cert path, key path).

    kind: "coordinator", "agent" or "operator"; the files are <kind>-<name>.pem and .key (0600).
    name: the coordinator's name or the site (DNS labels), or the operator's user name.
    role: for operators, one of ROLES (required); empty for the other kinds.
    dns, ips: for coordinators, the names clients dial; when both are empty, localhost,
        127.0.0.1 and ::1.
    days: validity, 1..MAX_DAYS, from not_before; the end is capped at the CA's.
    not_before: start of validity (an aware datetime); default now less CLOCK_SKEW. A past start
        with few days makes an expired certificate, a future one a not-yet-valid one (for tests).
    force: replace existing files of the same name.
    Raises PkiError for a bad kind, name, role, DNS name, IP address or days; when no usable CA
    is in directory; when the files exist and force is false; or when they cannot be written.
    """
    check_name(kind, name)
    _check_days(days)
    if kind == "operator":
        check_role(role)
    elif role:
        raise PkiError(f"a role is for operator certificates; a {kind} certificate's role is its kind")
    if kind != "coordinator" and (dns or ips):
        raise PkiError("DNS names and IP addresses are for coordinator certificates")
    for d in dns:
        check_dns_name(d)
    addresses = [parse_ip(i) for i in ips]
    if not_before is not None and not_before.tzinfo is None:
        raise PkiError("not_before must carry a time zone")
    ca_cert, ca_key = _load_ca(directory)

    sans: list[x509.GeneralName]
    if kind == "coordinator":
        if not dns and not ips:
            dns, addresses = DEFAULT_COORDINATOR_DNS, [parse_ip(i) for i in DEFAULT_COORDINATOR_IPS]
        sans = [x509.UniformResourceIdentifier(COORDINATOR_URI + name)]
        sans += [x509.DNSName(d) for d in dict.fromkeys(dns)]
        sans += [x509.IPAddress(a) for a in dict.fromkeys(addresses)]
        subject = _name(f"isthmus coordinator {name}", COORDINATOR_ROLE)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    elif kind == "agent":
        sans = [x509.UniformResourceIdentifier(SITE_URI + name), x509.DNSName(name + SITE_DNS_SUFFIX)]
        subject = _name(f"isthmus agent {name}", AGENT_ROLE)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        sans = [x509.UniformResourceIdentifier(USER_URI + name)]
        subject = _name(name, role)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]

    start = not_before if not_before is not None else _now() - CLOCK_SKEW
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise PkiError(f"the CA ends at {ca_cert.not_valid_after_utc.isoformat()}, "
                       f"before the certificate would start")
    key = _new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{kind}-{name}.pem", directory / f"{kind}-{name}.key"
    _write_pair(cert_path, key_path, cert, key, force)
    return cert_path, key_path


def _authority_key_id(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# ---------------------------------------------------------------- reading certificates


def _load_cert(data: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{what} is not a PEM certificate: {exc}") from None


def _attributes(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def _first(values: list[str]) -> str:
    return values[0] if values else ""


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


_URI_KINDS = ((SITE_URI, SITE, AGENT_ROLE), (COORDINATOR_URI, COORDINATOR, COORDINATOR_ROLE), (USER_URI, USER, ""))


def _identity(cert: x509.Certificate) -> Identity:
    common_name = _first(_attributes(cert.subject, NameOID.COMMON_NAME))
    unknown = Identity(UNKNOWN, common_name, "")
    sans = _sans(cert)
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier) if sans else []
    ours = [u for u in uris if u.startswith(URI_PREFIX)]
    if len(ours) != 1:
        return unknown  # none, or two that disagree: it names no one we know
    units = _attributes(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    unit = units[0] if len(units) == 1 else ""
    for prefix, kind, kind_role in _URI_KINDS:
        if ours[0].startswith(prefix):
            name = ours[0].removeprefix(prefix)
            try:
                check_name("operator" if kind == USER else "agent" if kind == SITE else COORDINATOR, name)
            except PkiError:
                return unknown
            role = unit if (unit in ROLES if kind == USER else unit == kind_role) else ""
            return Identity(kind, name, role)
    return unknown


def identity_from_der(der: bytes) -> Identity:
    """The isthmus identity of a DER certificate (see the module docstring for the rules).

    It reads the certificate only: the caller trusts it because TLS verified its chain and dates.
    Raises PkiError if der is not a certificate.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PkiError(f"not a DER certificate: {exc}") from None
    return _identity(cert)


def identity_from_pem(pem: bytes) -> Identity:
    """The isthmus identity of the first certificate in pem, as gRPC's auth context gives it.

    It reads the certificate only: the caller trusts it because TLS verified its chain and dates.
    Raises PkiError if pem holds no certificate.
    """
    return _identity(_load_cert(pem))


def identity_from_auth_context(auth: Mapping[str, Sequence[bytes]]) -> Identity | None:
    """The identity of a gRPC peer from ``context.auth_context()``; None when it presented no certificate.

    gRPC puts the verified peer certificate under AUTH_CONTEXT_PEM_KEY, a list of one PEM.
    Raises PkiError if that is not a certificate.
    """
    pems = auth.get(AUTH_CONTEXT_PEM_KEY)
    return identity_from_pem(pems[0]) if pems else None


def describe(cert_pem: bytes) -> dict[str, object]:
    """What a PEM certificate says, for `pki show`: names, key, usages, dates (ISO 8601, UTC), serial, identity.

    Key usages other than digitalSignature, keyCertSign and cRLSign (which isthmus never sets) are not listed.

    Raises PkiError if cert_pem holds no certificate.
    """
    cert = _load_cert(cert_pem)
    sans = _sans(cert)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = [_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku]
    except x509.ExtensionNotFound:
        usages = []
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        key_usage = [n for n, on in (("digitalSignature", ku.digital_signature), ("keyCertSign", ku.key_cert_sign),
                                     ("cRLSign", ku.crl_sign)) if on]
    except x509.ExtensionNotFound:
        key_usage = []
    public_key = cert.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key_type = f"EC {public_key.curve.name}"
    elif isinstance(public_key, rsa.RSAPublicKey):
        key_type = f"RSA {public_key.key_size}"
    else:
        key_type = type(public_key).__name__.removesuffix("PublicKey")
    return {
        "common_name": _first(_attributes(cert.subject, NameOID.COMMON_NAME)),
        "organizational_unit": _first(_attributes(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)),
        "dns": sans.get_values_for_type(x509.DNSName) if sans else [],
        "ips": [str(i) for i in sans.get_values_for_type(x509.IPAddress)] if sans else [],
        "uris": sans.get_values_for_type(x509.UniformResourceIdentifier) if sans else [],
        "key_usage": key_usage,
        "extended_key_usage": usages,
        "key": key_type,
        "ca": _is_ca(cert),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "serial": f"{cert.serial_number:x}",
        "issuer": _first(_attributes(cert.issuer, NameOID.COMMON_NAME)),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "identity": asdict(_identity(cert)),
    }
