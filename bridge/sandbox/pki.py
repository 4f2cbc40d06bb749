"""Certificates and keys for the sandbox's control plane, made once and kept."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=3650)
SERVICE_IP = "10.96.0.1"

# name -> (common name, organisation, is_server)
CLIENT_IDENTITIES: dict[str, tuple[str, str | None]] = {
    "admin": ("skbridge-sandbox-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


class SandboxPKI:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.ca_cert.exists():
            self._make_ca()
        ca_key = serialization.load_pem_private_key(self.path("ca.key").read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        if not self.path("apiserver.crt").exists():
            sans: list[x509.GeneralName] = [
                x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                          "kubernetes.default.svc.cluster.local")
            ]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", SERVICE_IP)]
            self._issue("apiserver", _name("kube-apiserver"), ca_key, ca_cert, server_sans=sans)
        if not self.path("kwok-serving.crt").exists():
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            self._issue("kwok-serving", _name("kwok-kubelet"), ca_key, ca_cert, server_sans=sans)
        for name, (cn, org) in CLIENT_IDENTITIES.items():
            if not self.path(f"{name}.crt").exists():
                self._issue(name, _name(cn, org), ca_key, ca_cert)
        if not self.path("sa.key").exists():
            sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_private(self.path("sa.key"), _key_pem(sa_key))
            self.path("sa.pub").write_bytes(sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def ensure_node(self, node_name: str, address: str = "127.0.0.1") -> None:
        """The kubelet's client identity (`system:node:<name>`, for the Node authorizer) and its
        serving certificate (the API server reaches it at the node's address for logs)."""
        ca_key = serialization.load_pem_private_key(self.path("ca.key").read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        client = f"kubelet-{node_name}"
        if not self.path(f"{client}.crt").exists():
            self._issue(client, _name(f"system:node:{node_name}", "system:nodes"), ca_key, ca_cert)
        serving = f"kubelet-serving-{node_name}"
        if not self.path(f"{serving}.crt").exists():
            ips = sorted({"127.0.0.1", address})
            sans: list[x509.GeneralName] = [x509.DNSName(node_name), x509.DNSName("localhost"),
                                            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]
            self._issue(serving, _name(f"system:node:{node_name}", "system:nodes"), ca_key, ca_cert, server_sans=sans)

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("skbridge-sandbox-ca"))
            .issuer_name(_name("skbridge-sandbox-ca"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.path("ca.key"), _key_pem(key))
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        name: str,
        subject: x509.Name,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        *,
        server_sans: list[x509.GeneralName] | None = None,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_sans else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server_sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(server_sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(self.path(f"{name}.key"), _key_pem(key))
        self.path(f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
