"""The one place that builds a Docker client: for a compute target, and for image builds.

`client_for(target)` connects to the target's engine (unix://, tcp:// with or without TLS, ssh://) and returns a
`docker.DockerClient`; close it when done (`with client_for(target) as client: ...`). `check_connection(target)`
answers a one-line summary of the engine or raises `EngineError` saying why it cannot be used.

TLS material is kept in the database as PEM text (the client key encrypted). The Docker SDK reads it from files on
every new connection, so for a tcp:// target with TLS the texts are written to a private temporary directory (0700,
files 0600) that lives exactly as long as the client: `close()` removes it, and so does garbage collection of a client
nobody closed. Messages never contain the key.
"""

from __future__ import annotations

import errno
import fnmatch
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
import weakref
from pathlib import Path
from urllib.parse import urlsplit

import docker
import requests
from django.conf import settings
from docker.api import APIClient
from docker.errors import APIError, DockerException
from docker.tls import TLSConfig
from docker.utils import kwargs_from_env

from studio.crypto import decrypt

DEFAULT_TIMEOUT_SECONDS = 10
SCHEMES = ("unix://", "tcp://", "ssh://")


GENERIC_FAILURE = "Could not connect to the target's Docker engine."


class EngineError(ValueError):
    """A target's Docker engine cannot be used; the message says why and how to fix it.

    What a connection attempt found (refused, timed out, something else answered) tells about the network the studio
    sits in, so it is shown to a workspace's owners only (they may read the engine's address anyway); everyone else,
    and the run pages every member reads, get `public`: the generic failure, or the message itself when it only
    repeats the target's own settings ("no URL", "not allowed")."""

    def __init__(self, message: str, *, public: str | None = None):
        super().__init__(message)
        self.public = public or GENERIC_FAILURE


def connection_report(target, *, owner: bool) -> tuple[bool, str]:
    """(connected, message) for a "Test connection": owners read what the engine said or why it failed; everyone else
    only whether it worked."""
    try:
        summary = check_connection(target)
    except EngineError as error:
        if owner or error.public == str(error):
            return False, str(error)
        return False, f"{error.public} An owner of this workspace can test it to see why."
    return True, summary if owner else "The engine answered."


def _settings_error(message: str) -> EngineError:
    """A problem with the target's own settings: nothing was probed, anyone may read it."""
    return EngineError(message, public=message)


class _DirectAPIClient(APIClient):
    """An APIClient that takes nothing from the environment: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE would replace the
    target's own CA (requests lets them override a session's `verify`), *_PROXY would route the engine's traffic
    through a proxy, and ~/.netrc would add credentials. An engine is addressed directly, as its target says."""

    @property
    def trust_env(self) -> bool:
        return False

    @trust_env.setter
    def trust_env(self, value: bool) -> None:
        """requests.Session.__init__ sets it; the property above has the last word."""


class EngineClient(docker.DockerClient):
    """A DockerClient that is a context manager and removes its TLS files when closed."""

    tls_dir: Path | None = None

    def __init__(self, **kwargs):
        self.api = _DirectAPIClient(**kwargs)

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.tls_dir is not None:
                shutil.rmtree(self.tls_dir, ignore_errors=True)


def client_for(target, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> docker.DockerClient:
    """A client connected to the target's engine (the API version is negotiated here, so this already talks to it).

    `timeout` bounds every API call, in seconds; pass a longer one for slow operations (pulls, builds).
    Raises EngineError when the target is not a Docker target, its URL is unusable, or the engine does not answer.
    """
    url = _docker_url(target)
    tls_dir = None
    kwargs = {"base_url": url, "timeout": timeout}
    if url.startswith("ssh://"):
        kwargs["use_ssh_client"] = True  # the system's ssh: its config, agent and known_hosts apply
    elif url.startswith("tcp://") and _has_tls(target):
        tls_dir = Path(tempfile.mkdtemp(prefix="studio-tls-"))  # mkdtemp makes it 0700
        try:
            kwargs["tls"] = _tls_config(target, tls_dir)
        except BaseException:
            shutil.rmtree(tls_dir, ignore_errors=True)
            raise
    try:
        client = EngineClient(**kwargs)
    except Exception as exc:
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)
        raise _engine_error(exc, url, timeout, target) from None
    if tls_dir is not None:
        client.tls_dir = tls_dir
        weakref.finalize(client, shutil.rmtree, tls_dir, ignore_errors=True)
    return client


def build_client(*, timeout: float) -> docker.DockerClient:
    """The engine image builds run on: STUDIO_BUILD_DOCKER_URL, else DOCKER_HOST (and its TLS variables) or the local
    socket. Like every client made here, it takes no proxy or CA bundle from the environment."""
    kwargs = {"base_url": settings.STUDIO_BUILD_DOCKER_URL} if settings.STUDIO_BUILD_DOCKER_URL else kwargs_from_env()
    kwargs.setdefault("base_url", "unix:///var/run/docker.sock")
    try:
        return EngineClient(**kwargs, timeout=timeout)
    except Exception as exc:
        url = kwargs["base_url"]
        message = _reason(exc, url, timeout)
        raise EngineError(message, public=message) from None  # the administrator's engine: nothing of a user's to probe


def check_connection(target, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> str:
    """A summary of the target's engine, e.g. "Docker 20.10.24 on linux/x86_64, 3 images, 2 CPUs, 7.8 GB memory"."""
    url = _docker_url(target)
    with client_for(target, timeout=timeout) as client:
        try:
            info = client.info()
        except Exception as exc:
            raise _engine_error(exc, url, timeout, target) from None
    images = info.get("Images", 0)
    summary = (
        f"Docker {info.get('ServerVersion', '?')} on {info.get('OSType', '?')}/{info.get('Architecture', '?')}, "
        f"{images} image{'' if images == 1 else 's'}"
    )
    if info.get("NCPU"):
        summary += f", {info['NCPU']} CPU{'' if info['NCPU'] == 1 else 's'}"
    if info.get("MemTotal"):
        summary += f", {info['MemTotal'] / 1e9:.1f} GB memory"
    return summary


# Building the client ------------------------------------------------------------------------------------------------


def _docker_url(target) -> str:
    if target.kind != "docker":
        raise _settings_error(
            f"{target.name} is a {target.kind} target: only Docker targets have an engine to connect to.")
    url = (target.docker_url or "").strip()
    if not url:
        raise _settings_error(f"{target.name} has no Docker engine URL: set one on its edit page.")
    if not url.startswith(SCHEMES):
        raise _settings_error(
            f"The engine URL {url!r} is not supported: use unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host."
        )
    if url.startswith(("tcp://", "ssh://")) and not urlsplit(url).hostname:
        raise _settings_error(f"The engine URL {url!r} names no host: use e.g. tcp://host:2376 or ssh://user@host.")
    if url.startswith("unix://") and not url.removeprefix("unix://"):
        raise _settings_error(f"The engine URL {url!r} names no socket: use e.g. unix:///var/run/docker.sock.")
    refusal = engine_not_allowed(url)
    if refusal:
        raise _settings_error(refusal)
    return url


def engine_not_allowed(url: str) -> str:
    """Why STUDIO_DOCKER_ALLOWED_ENGINES refuses `url` ("" when it is allowed, or when the list is empty).

    Entries: `unix:///path/to.sock` (that socket), a host name or a pattern (`*.gpu.lab`), an IP address or a network
    (`10.1.0.0/16`), each with an optional `:port`. A host name is also checked against the networks by the
    addresses it resolves to, so a name cannot smuggle in an address the list leaves out."""
    allowed = [entry.strip() for entry in settings.STUDIO_DOCKER_ALLOWED_ENGINES if entry.strip()]
    if not allowed:
        return ""
    refusal = (f"The engine URL {url!r} is not one this studio allows: its administrator limits Docker targets to "
               f"{', '.join(allowed)} (STUDIO_DOCKER_ALLOWED_ENGINES).")
    if url.startswith("unix://"):
        return "" if url in allowed else refusal
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (22 if url.startswith("ssh://") else 2375)
    except ValueError:
        return refusal
    for entry in allowed:
        if entry.startswith("unix://"):
            continue
        pattern, _, entry_port = _split_host_port(entry)
        if entry_port and entry_port != str(port):
            continue
        if _host_matches(host, pattern.lower()):
            return ""
    return refusal


def _split_host_port(entry: str) -> tuple[str, str, str]:
    if entry.startswith("["):  # [::1]:2376
        host, _, rest = entry[1:].partition("]")
        return host, ":", rest.lstrip(":")
    if entry.count(":") == 1:
        return entry.partition(":")
    return entry, "", ""


def _host_matches(host: str, pattern: str) -> bool:
    try:
        network = ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return fnmatch.fnmatchcase(host, pattern)
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(info[4][0].split("%")[0])
                         for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
        except (OSError, UnicodeError):
            return False
    return bool(addresses) and all(address in network for address in addresses)


def _has_tls(target) -> bool:
    return bool(target.tls_ca_cert.strip() or target.tls_client_cert.strip() or target.tls_client_key_encrypted)


def _tls_config(target, tls_dir: Path) -> TLSConfig:
    """TLSConfig from the target's PEM texts, written as 0600 files into `tls_dir`; the engine is always verified."""
    ca_cert = client_cert = None
    if target.tls_ca_cert.strip():
        ca_cert = str(_private_file(tls_dir / "ca.pem", target.tls_ca_cert))
    has_cert, has_key = bool(target.tls_client_cert.strip()), bool(target.tls_client_key_encrypted)
    if has_cert != has_key:
        missing = "key" if has_cert else "certificate"
        raise _settings_error(
            f"{target.name} has a TLS client {'certificate' if has_cert else 'key'} but no {missing}: "
            f"give both, or neither, on its edit page."
        )
    if has_cert:
        try:
            key = decrypt(target.tls_client_key_encrypted)
        except ValueError:
            raise _settings_error(
                f"The TLS client key of {target.name} cannot be decrypted (the studio's secret key changed since it "
                "was saved): enter the key again on the target's edit page."
            ) from None
        client_cert = (
            str(_private_file(tls_dir / "cert.pem", target.tls_client_cert)),
            str(_private_file(tls_dir / "key.pem", key)),
        )
    # verify=True with a CA file checks the engine against that CA; without one, against the system's CAs.
    return TLSConfig(client_cert=client_cert, ca_cert=ca_cert, verify=True)


def _private_file(path: Path, content: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content.strip() + "\n")
    return path


# Explaining failures --------------------------------------------------------------------------------------------------


def _causes(exc: BaseException):
    """The exception and everything it wraps: causes, contexts, and exceptions held in args or `reason`."""
    seen, stack = set(), [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        stack.extend(item for item in nested if isinstance(item, BaseException))


def _engine_error(exc: Exception, url: str, timeout: float, target) -> EngineError:
    """What the connection found: for owners only (`public` is the generic failure)."""
    return EngineError(_redact(_reason(exc, url, timeout), target))


def _reason(exc: Exception, url: str, timeout: float) -> str:
    causes = list(_causes(exc))
    where = urlsplit(url)
    socket_path = url.removeprefix("unix://")
    tls_errors = [cause for cause in causes if isinstance(cause, ssl.SSLError)]
    if tls_errors:
        return _tls_reason(tls_errors, url)
    for cause in causes:
        if isinstance(cause, PermissionError) or getattr(cause, "errno", None) in (errno.EACCES, errno.EPERM):
            if url.startswith("unix://"):
                return (
                    f"Permission denied on the Docker socket {socket_path}: the user running Studio (uid "
                    f"{os.geteuid()}) needs access to it, usually by being in the `docker` group."
                )
            return f"Permission denied while connecting to {url}."
    for cause in causes:
        if isinstance(cause, FileNotFoundError) and url.startswith("unix://"):
            return f"There is no Docker socket at {socket_path}: is the engine running on this machine?"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            if url.startswith("unix://"):
                return f"Nothing is listening on {socket_path} (connection refused): is the engine running?"
            address = f"{where.hostname}:{where.port}" if where.port else where.hostname
            return (
                f"Cannot reach the Docker engine at {url}: connection refused on {address}. "
                "Is the engine running and listening on that address and port?"
            )
    for cause in causes:
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            return f"Cannot resolve the host {where.hostname!r} of {url}: check the name."
    for cause in causes:
        if isinstance(cause, (TimeoutError, socket.timeout, requests.exceptions.Timeout)) or "timed out" in str(cause):
            return f"The Docker engine at {url} did not answer within {timeout:g} s: is the host reachable?"
    if url.startswith("tcp://") and any(isinstance(cause, ConnectionResetError) for cause in causes):
        return (
            f"The Docker engine at {url} closed the connection: if it uses TLS (usually on port 2376), give its CA "
            "certificate and a client certificate and key."
        )
    for cause in causes:
        if isinstance(cause, APIError):
            status = cause.status_code
            if status == 404 and "/version" in str(cause):
                return (
                    f"Something answered at {url}, but not a Docker engine (HTTP 404 on /version): check the address "
                    "and port."
                )
            explanation = cause.explanation or str(cause)
            return f"The Docker engine at {url} refused the request (HTTP {status}): {explanation}"
    if url.startswith("ssh://"):
        login = f"{where.username}@{where.hostname}" if where.username else where.hostname
        command = f"ssh -p {where.port} {login}" if where.port else f"ssh {login}"
        return (
            f"Cannot connect to the Docker engine at {url} over ssh ({_first_line(exc)}). Check that "
            f"`{command} docker version` works for the user running Studio, without a password prompt."
        )
    if isinstance(exc, DockerException):
        return f"Cannot use the Docker engine at {url}: {_first_line(exc)}"
    return f"Cannot reach the Docker engine at {url}: {type(exc).__name__}: {_first_line(exc)}"


def _tls_reason(tls_errors: list[ssl.SSLError], url: str) -> str:
    for error in tls_errors:
        if isinstance(error, ssl.SSLCertVerificationError):
            return (
                f"TLS with {url} failed: the engine's certificate could not be verified ({error.verify_message}). "
                "Give the CA certificate that signed it, and check that it names the host of the URL."
            )
    reasons = [error.reason for error in tls_errors if error.reason]
    if any("ALERT" in reason for reason in reasons) or any(
        isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) for error in tls_errors
    ):
        detail = f" ({reasons[0]})" if reasons else ""
        return (
            f"TLS with {url} failed: the engine refused the client certificate{detail}. It needs a client "
            "certificate signed by a CA it trusts (its --tlscacert), with the matching key."
        )
    detail = reasons[0] if reasons else type(tls_errors[0]).__name__
    return f"TLS with {url} failed ({detail}): check the CA certificate, the client certificate and its key."


def _first_line(exc: BaseException) -> str:
    text = str(exc).removeprefix("Error while fetching server API version: ").strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(message: str, target) -> str:
    """Defence in depth: a message never carries PEM text, the stored token, nor any line of the key."""
    if "-----BEGIN" in message:
        message = message.split("-----BEGIN", 1)[0] + "[PEM text removed]"
    try:
        key = decrypt(target.tls_client_key_encrypted)
    except ValueError:
        key = ""  # a key nobody can decrypt cannot leak
    secrets = [target.tls_client_key_encrypted, *(line.strip() for line in key.splitlines())]
    for secret in secrets:
        if len(secret) >= 16 and not secret.startswith("-----"):
            message = message.replace(secret, "[removed]")
    return message
