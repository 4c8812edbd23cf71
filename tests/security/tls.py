"""A self-signed certificate for 127.0.0.1, and a ``tierserve serve`` over HTTPS with it."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.server import READY_TIMEOUT_S, RunningServer, ServerStartError, free_port, tierserve_command


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def start_tls_server(repo: Path, cert: Path, key: Path, extra_args: Sequence[str] = ()) -> RunningServer:
    """Like ``support.server.start_server``, but ready means ``https://.../v2/health/ready`` answers."""
    workdir = Path(tempfile.mkdtemp(prefix="tierserve-tls-"))
    log_path = workdir / "server.log"
    port = free_port()
    command = [
        *tierserve_command(), "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
        "--port", str(port), "--state-dir", str(workdir / "state"),
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), *extra_args,
    ]  # fmt: skip
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    server = RunningServer(process, port, workdir, log_path, log_file)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise ServerStartError(f"tierserve exited: {server.log_tail()}")
                try:
                    if client.get(f"https://{server.url}/v2/health/ready").status_code == 200:
                        return server
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerStartError(f"not ready over HTTPS: {server.log_tail()}")
                time.sleep(0.05)
    except BaseException:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
