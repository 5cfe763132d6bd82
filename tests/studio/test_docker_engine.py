"""studio.docker_engine: building a client for a target and checking its engine.

The TLS tests talk to a small HTTPS server that requires a client certificate (mutual TLS, like a Docker engine
started with --tlsverify) and answers the two calls `check_connection` makes. The real-engine tests need the engine at
unix:///var/run/docker.sock and are skipped, with the reason, without one.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import stat
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from studio.crypto import encrypt
from studio.docker_engine import EngineError, check_connection, client_for
from studio.models import ComputeTarget

ENGINE_SOCKET = "unix:///var/run/docker.sock"


# A small PKI: a CA, a server certificate for 127.0.0.1 and a client certificate --------------------------------------


@dataclass
class Pki:
    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca=False, ip=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki() -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("studio test CA", ca_key, None, None, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _certificate("engine", server_key, ca.subject, ca_key, ip="127.0.0.1")
    client = _certificate("studio", client_key, ca.subject, ca_key)
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    return Pki(pem(ca), pem(server), _pem_key(server_key), pem(client), _pem_key(client_key))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


# A fake engine over mutual TLS ---------------------------------------------------------------------------------------

INFO = {
    "ServerVersion": "20.10.24",
    "OSType": "linux",
    "Architecture": "x86_64",
    "Images": 3,
    "NCPU": 2,
    "MemTotal": 8_000_000_000,
}


class _EngineHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.peers.append(self.connection.getpeercert())
        if self.path in ("/version", "/v1.41/version"):
            body = {"ApiVersion": "1.41", "Version": "20.10.24", "Os": "linux", "Arch": "amd64"}
        elif self.path == "/v1.41/info":
            body = INFO
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        return


@pytest.fixture
def tls_engine(pki, tmp_path):
    """An HTTPS server on 127.0.0.1 that only talks to clients with a certificate signed by the test CA."""
    for name, content in (("ca.pem", pki.ca_cert), ("server.pem", pki.server_cert), ("server-key.pem", pki.server_key)):
        (tmp_path / name).write_text(content)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")
    context.load_verify_locations(tmp_path / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EngineHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.peers = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def docker_target(url: str, pki: Pki | None = None, **fields) -> ComputeTarget:
    if pki is not None:
        fields = {
            "tls_ca_cert": pki.ca_cert,
            "tls_client_cert": pki.client_cert,
            "tls_client_key_encrypted": encrypt(pki.client_key),
            **fields,
        }
    return ComputeTarget(name="remote", kind=ComputeTarget.Kind.DOCKER, docker_url=url, **fields)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """tempfile's directory for this test, so the TLS directories client_for makes can be watched."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


# Tests --------------------------------------------------------------------------------------------------------------


def test_it_connects_over_mutual_tls_and_summarises_the_engine(pki, tls_engine, private_tmp):
    target = docker_target(f"tcp://127.0.0.1:{tls_engine.server_port}", pki)
    summary = check_connection(target)
    assert summary == "Docker 20.10.24 on linux/x86_64, 3 images, 2 CPUs, 8.0 GB memory"
    assert tls_engine.peers and dict(x[0] for x in tls_engine.peers[0]["subject"])["commonName"] == "studio"
    assert list(private_tmp.iterdir()) == []


def test_it_writes_the_tls_files_private_and_removes_them_on_close(pki, tls_engine, private_tmp):
    target = docker_target(f"tcp://127.0.0.1:{tls_engine.server_port}", pki)
    client = client_for(target)
    tls_dir = client.tls_dir
    assert tls_dir.parent == private_tmp
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in tls_dir.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    for path in tls_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tls_dir / "key.pem").read_text().strip() == pki.client_key.strip()
    assert client.version()["Version"] == "20.10.24"
    client.close()
    assert not tls_dir.exists()


def test_it_removes_the_tls_files_of_a_client_nobody_closed(pki, tls_engine, private_tmp):
    client = client_for(docker_target(f"tcp://127.0.0.1:{tls_engine.server_port}", pki))
    tls_dir = client.tls_dir
    del client
    import gc

    gc.collect()
    assert not tls_dir.exists()


def test_it_is_a_context_manager(pki, tls_engine, private_tmp):
    with client_for(docker_target(f"tcp://127.0.0.1:{tls_engine.server_port}", pki)) as client:
        assert client.tls_dir.exists()
    assert list(private_tmp.iterdir()) == []


def test_it_explains_a_tls_failure_without_the_key_and_leaves_no_files(pki, tls_engine, private_tmp):
    other = make_pki()  # a CA that did not sign the engine's certificate
    target = docker_target(f"tcp://127.0.0.1:{tls_engine.server_port}", pki, tls_ca_cert=other.ca_cert)
    with pytest.raises(EngineError) as caught:
        check_connection(target)
    message = str(caught.value)
    assert message.startswith(
        f"TLS with tcp://127.0.0.1:{tls_engine.server_port} failed: the engine's certificate could not be verified ("
    )
    assert "Give the CA certificate that signed it" in message
    assert "PRIVATE KEY" not in message and pki.client_key.splitlines()[1] not in message
    assert list(private_tmp.iterdir()) == []


def test_it_explains_a_client_certificate_the_engine_does_not_trust(pki, tls_engine, private_tmp):
    other = make_pki()
    target = docker_target(
        f"tcp://127.0.0.1:{tls_engine.server_port}",
        pki,
        tls_client_cert=other.client_cert,
        tls_client_key_encrypted=encrypt(other.client_key),
    )
    with pytest.raises(EngineError) as caught:
        check_connection(target)
    message = str(caught.value)
    assert message.startswith(
        f"TLS with tcp://127.0.0.1:{tls_engine.server_port} failed: the engine refused the client certificate"
    )
    assert "signed by a CA it trusts" in message
    assert other.client_key.splitlines()[1] not in message
    assert list(private_tmp.iterdir()) == []


def test_it_explains_an_engine_that_wants_a_client_certificate(pki, tls_engine):
    target = docker_target(
        f"tcp://127.0.0.1:{tls_engine.server_port}", pki, tls_client_cert="", tls_client_key_encrypted=""
    )
    with pytest.raises(EngineError, match="the engine refused the client certificate"):
        check_connection(target)


def test_it_suggests_tls_when_a_tls_engine_is_addressed_without_it(tls_engine):
    with pytest.raises(EngineError, match="closed the connection: if it uses TLS .* give its CA certificate"):
        check_connection(docker_target(f"tcp://127.0.0.1:{tls_engine.server_port}"))


def test_it_explains_a_key_the_studio_cannot_decrypt(pki, private_tmp):
    target = docker_target("tcp://127.0.0.1:2376", pki, tls_client_key_encrypted="not-a-fernet-token")
    with pytest.raises(EngineError, match="cannot be decrypted .* enter the key again"):
        client_for(target)
    assert list(private_tmp.iterdir()) == []


def test_it_explains_an_unreachable_tcp_engine_quickly():
    with pytest.raises(EngineError) as caught:
        check_connection(docker_target("tcp://127.0.0.1:1"), timeout=3)
    assert str(caught.value) == (
        "Cannot reach the Docker engine at tcp://127.0.0.1:1: connection refused on 127.0.0.1:1. "
        "Is the engine running and listening on that address and port?"
    )


def test_it_explains_a_missing_socket(tmp_path):
    with pytest.raises(
        EngineError, match=f"There is no Docker socket at {tmp_path}/docker.sock: is the engine running"
    ):
        check_connection(docker_target(f"unix://{tmp_path}/docker.sock"))


def test_it_explains_permission_denied_on_the_socket():
    """A socket the studio's user may not open (as root: a child process that drops to `nobody`)."""
    directory = Path(tempfile.mkdtemp(prefix="studio-sock-"))
    directory.chmod(0o755)
    path = directory / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    path.chmod(0o600 if os.geteuid() == 0 else 0o000)
    target = docker_target(f"unix://{path}")
    try:
        if os.geteuid() != 0:
            with pytest.raises(EngineError) as caught:
                check_connection(target)
            message = str(caught.value)
        else:
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: drop to nobody, try, report the message through the pipe
                os.close(read)
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    check_connection(target)
                    result = "connected"
                except EngineError as exc:
                    result = str(exc)
                except BaseException as exc:  # noqa: BLE001 - anything else is reported to the parent as a failure
                    result = f"unexpected: {exc!r}"
                os.write(write, result.encode())
                os._exit(0)
            os.close(write)
            with os.fdopen(read) as pipe:
                message = pipe.read()
            os.waitpid(pid, 0)
        assert message.startswith(f"Permission denied on the Docker socket {path}: the user running Studio (uid ")
        assert "`docker` group" in message
    finally:
        listener.close()
        path.unlink()
        directory.rmdir()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:2375", "The engine URL 'http://127.0.0.1:2375' is not supported: use unix://"),
        ("npipe:////./pipe/docker_engine", "is not supported"),
        ("tcp://", "names no host"),
        ("unix://", "names no socket"),
        ("", "remote has no Docker engine URL: set one on its edit page."),
    ],
)
def test_it_refuses_a_url_it_cannot_use(url, message):
    with pytest.raises(EngineError, match=message):
        client_for(docker_target(url))


def test_it_refuses_a_local_target():
    with pytest.raises(EngineError, match="only Docker targets have an engine"):
        client_for(ComputeTarget(name="local", kind=ComputeTarget.Kind.LOCAL))


def test_an_engine_error_is_a_value_error():
    assert issubclass(EngineError, ValueError)


@pytest.fixture(scope="module")
def docker_engine():
    try:
        docker.DockerClient(base_url=ENGINE_SOCKET, timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine here
        pytest.skip(f"no Docker engine answers at {ENGINE_SOCKET}: {str(exc).splitlines()[0]}")


def test_it_summarises_the_local_engine(docker_engine):
    summary = check_connection(docker_target(ENGINE_SOCKET))
    expected = docker.DockerClient(base_url=ENGINE_SOCKET).version()["Version"]
    assert summary.startswith(f"Docker {expected} on linux/")
    assert " image" in summary


def test_it_gives_a_working_client_for_the_local_engine(docker_engine):
    with client_for(docker_target(ENGINE_SOCKET), timeout=5) as client:
        assert client.ping() is True
        assert client.api.timeout == 5
        assert client.tls_dir is None


def test_it_explains_an_ssh_engine_it_cannot_reach():
    with pytest.raises(EngineError) as caught:
        check_connection(docker_target("ssh://nobody@127.0.0.1:1"), timeout=5)
    message = str(caught.value)
    assert message.startswith("Cannot connect to the Docker engine at ssh://nobody@127.0.0.1:1 over ssh (")
    assert "`ssh -p 1 nobody@127.0.0.1 docker version` works for the user running Studio" in message
