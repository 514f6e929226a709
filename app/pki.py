"""Throwaway TLS and SuperNode keys for a Deployment Engine federation on this machine.

Flower secures a federation with two things (https://flower.ai/docs/framework/how-to-enable-tls-connections.html,
how-to-authenticate-supernodes.html): TLS between SuperLink and SuperNodes / CLI (a CA certificate every party
trusts, and a certificate for the SuperLink's address signed by it), and, with ``--enable-supernode-auth``, an EC
key pair per SuperNode whose public key is registered with ``flwr supernode register`` before the node may connect
(an unregistered key is refused; the SuperLink gives each registered key its node id, which stays the node's when it
restarts with the same key). :func:`federation_keys` writes all of them for one run, valid for a day, for
``127.0.0.1``/``localhost`` only; across machines, who holds which file is in docs/deployment.md.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

CURVE = "SECP384R1"  # Flower's example keys (P-384); any NIST curve is accepted


def _pem_private(key, openssh: bool = False) -> bytes:
    from cryptography.hazmat.primitives import serialization

    fmt = serialization.PrivateFormat.OpenSSH if openssh else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def given_keys(folder: Path, num_nodes: int) -> dict:
    """The same paths as :func:`federation_keys` returns, for a folder the user filled (``deployment.keys``; the
    config check has made sure every file is there)."""
    folder = Path(folder).expanduser().resolve()
    return {"ca": folder / "ca.crt", "cert": folder / "superlink.crt", "key": folder / "superlink.key",
            "nodes": [(folder / f"node-{i}", folder / f"node-{i}.pub") for i in range(num_nodes)]}


def federation_keys(out: Path, num_nodes: int, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict:
    """Write ``ca.crt``, ``superlink.crt`` / ``superlink.key`` (for ``hosts``) and ``node-<i>`` / ``node-<i>.pub``
    (OpenSSH, as ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read them) under
    ``out``; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    curve = getattr(ec, CURVE)()
    ca_key = ec.generate_private_key(curve)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fl-mdisc throwaway CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(valid[0]).not_valid_after(valid[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(curve)
    names = [x509.IPAddress(ipaddress.ip_address(h)) if h.replace(".", "").isdigit() else x509.DNSName(h) for h in hosts]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.SubjectAlternativeName(names), critical=False).sign(ca_key, hashes.SHA256()))
    paths = {"ca": out / "ca.crt", "cert": out / "superlink.crt", "key": out / "superlink.key", "nodes": []}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(_pem_private(key))
    for i in range(num_nodes):
        k = ec.generate_private_key(curve)
        priv, pub = out / f"node-{i}", out / f"node-{i}.pub"
        priv.write_bytes(_pem_private(k, openssh=True))
        pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
        priv.chmod(0o600)
        paths["nodes"].append((priv, pub))
    paths["key"].chmod(0o600)
    return paths
