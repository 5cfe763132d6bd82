"""The form that adds or edits a compute target.

The TLS client key is write-only: the form never renders it back (not even after a validation error), stores it
encrypted, and on edit only says that one is stored, with a checkbox to remove it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django import forms

from studio.crypto import decrypt, encrypt
from studio.docker_engine import engine_not_allowed
from studio.models import ComputeTarget, Workspace

BUILTIN_TARGET = "local"
MAX_CPUS = 4096
MAX_MB = 1024**3  # 1 PiB: within every database's integer column
QUEUE_MAX_LENGTH = ComputeTarget._meta.get_field("queue").max_length
DOCKER_ONLY = (
    "docker_url",
    "tls_ca_cert",
    "tls_client_cert",
    "cpu_limit",
    "memory_limit_mb",
    "gpus",
    "shm_size_mb",
    "callback_url",
)
CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
KEY_RE = re.compile(
    r"-----BEGIN ((RSA|EC|ENCRYPTED) )?PRIVATE KEY-----.+-----END ((RSA|EC|ENCRYPTED) )?PRIVATE KEY-----", re.S
)
KEY_STORED_HELP = "A key is stored; leave empty to keep it."
KEY_HELP = "PEM private key of the client certificate, unencrypted. Stored encrypted and never shown again."
KEY_AGAIN = "Paste the key again: for safety it is never sent back to the browser."


def is_builtin(target: ComputeTarget) -> bool:
    """The `local` target every workspace gets: the submit form's default, served by a worker's default queue."""
    return bool(target.pk) and target.name == BUILTIN_TARGET


class SecretTextarea(forms.Textarea):
    """A textarea that, like a password input, never renders its value."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


class ComputeTargetForm(forms.ModelForm):
    tls_client_key = forms.CharField(
        label="TLS client key",
        required=False,
        strip=False,
        widget=SecretTextarea(
            attrs={
                "rows": 4,
                "autocomplete": "off",
                "spellcheck": "false",
                "class": "secret",
                "placeholder": "-----BEGIN PRIVATE KEY-----",
            }
        ),
        help_text=KEY_HELP,
    )
    remove_tls_client_key = forms.BooleanField(label="Remove the stored key", required=False)

    class Meta:
        model = ComputeTarget
        fields = [
            "name",
            "kind",
            "queue",
            "python_path",
            "docker_url",
            "tls_ca_cert",
            "tls_client_cert",
            "cpu_limit",
            "memory_limit_mb",
            "gpus",
            "shm_size_mb",
            "callback_url",
        ]
        labels = {
            "python_path": "Python interpreter",
            "docker_url": "Engine URL",
            "tls_ca_cert": "TLS CA certificate",
            "tls_client_cert": "TLS client certificate",
            "cpu_limit": "CPU limit",
            "memory_limit_mb": "Memory limit (MB)",
            "gpus": "GPUs",
            "shm_size_mb": "Shared memory (MB)",
            "callback_url": "Callback URL",
        }
        help_texts = {
            "docker_url": "Required for Docker targets: unix:///var/run/docker.sock, tcp://host:2376 (with TLS) or "
            "ssh://user@host.",
            "tls_ca_cert": "PEM CA certificate that signed the engine's certificate (tcp:// engines).",
            "tls_client_cert": "PEM client certificate the engine trusts (tcp:// engines).",
            "cpu_limit": "CPU cores a run may use, e.g. 0.5 or 2.",
            "memory_limit_mb": "Memory a run may use, in MB (at least 6).",
        }
        widgets = {
            "tls_ca_cert": forms.Textarea(
                attrs={"rows": 4, "spellcheck": "false", "placeholder": "-----BEGIN CERTIFICATE-----"}
            ),
            "tls_client_cert": forms.Textarea(
                attrs={"rows": 4, "spellcheck": "false", "placeholder": "-----BEGIN CERTIFICATE-----"}
            ),
            "callback_url": forms.TextInput(attrs={"placeholder": "http://host.docker.internal:8000"}),
            "docker_url": forms.TextInput(attrs={"placeholder": "unix:///var/run/docker.sock"}),
        }

    def __init__(self, *args, workspace: Workspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.instance.workspace = workspace
        self.has_stored_key = bool(self.instance.tls_client_key_encrypted)
        self.builtin = is_builtin(self.instance)
        queue = self.fields["queue"]
        queue.required = False
        queue.help_text = (
            "The Celery queue whose workers run this target's runs (studioctl.py worker --queues NAME). "
            "Empty: local for a local target, docker-NAME for a Docker target."
        )
        queue.widget.attrs["placeholder"] = "local, or docker-NAME for a Docker target"
        if not self.instance.pk:
            self.initial["queue"] = ""  # not the model's default: the default depends on the kind
        if self.has_stored_key:
            self.fields["tls_client_key"].help_text = KEY_STORED_HELP
        else:
            del self.fields["remove_tls_client_key"]
        if self.builtin:
            for name in ("name", "kind"):
                self.fields[name].disabled = True
            self.fields["kind"].help_text = "The built-in local target stays a local process."
            self.fields["name"].help_text = "The built-in target keeps its name: new runs default to it."
        if self.is_bound:
            self.data = self.data.copy()  # clean_* may blank a field that must not be echoed back

    # Fields ---------------------------------------------------------------------------------------------------------

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        taken = ComputeTarget.objects.filter(workspace=self.workspace, name__iexact=name).exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError(
                f"There is already a target named {name} in this workspace: choose another name."
            )
        return name

    def clean_docker_url(self):
        url = self.cleaned_data["docker_url"].strip()
        if not url:
            return url
        if not url.startswith(("unix://", "tcp://", "ssh://")):
            raise forms.ValidationError(
                "Start with unix://, tcp:// or ssh://, e.g. unix:///var/run/docker.sock, tcp://host:2376 or "
                "ssh://user@host."
            )
        if url.startswith("unix://"):
            if not url.removeprefix("unix://").startswith("/"):
                raise forms.ValidationError("Give the socket's absolute path, e.g. unix:///var/run/docker.sock.")
            return self._allowed(url)
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            raise forms.ValidationError("The port is not a number from 1 to 65535.") from None
        if not parts.hostname:
            raise forms.ValidationError("Name the engine's host, e.g. tcp://gpu-box:2376 or ssh://user@gpu-box.")
        return self._allowed(url)

    @staticmethod
    def _allowed(url: str) -> str:
        refusal = engine_not_allowed(url)
        if refusal:
            raise forms.ValidationError(refusal)
        return url

    def clean_tls_ca_cert(self):
        return self._clean_certificates("tls_ca_cert", many=True)

    def clean_tls_client_cert(self):
        return self._clean_certificates("tls_client_cert", many=False)

    def clean_tls_client_key(self):
        text = self.cleaned_data["tls_client_key"].strip()
        if not text:
            return ""
        if not KEY_RE.search(text):
            raise forms.ValidationError(
                "Paste a PEM private key: the text from -----BEGIN PRIVATE KEY----- to -----END PRIVATE KEY-----."
            )
        try:
            serialization.load_pem_private_key(text.encode(), password=None)
        except TypeError:
            raise forms.ValidationError(
                "This key is protected by a passphrase, which Docker cannot use: remove it "
                "(openssl pkey -in key.pem -out key-plain.pem) and paste the result."
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise forms.ValidationError("This is not a readable PEM private key: paste the whole key file.") from None
        return text + "\n"

    def clean_cpu_limit(self):
        value = self.cleaned_data["cpu_limit"]
        if value is not None and not 0 < value <= MAX_CPUS:
            raise forms.ValidationError(f"Give a number of CPU cores above 0 and at most {MAX_CPUS:,}, e.g. 0.5 or 2.")
        return value

    def clean_memory_limit_mb(self):
        value = self.cleaned_data["memory_limit_mb"]
        if value is not None and value < 6:
            raise forms.ValidationError("Docker needs at least 6 MB of memory for a container.")
        if value is not None and value > MAX_MB:
            raise forms.ValidationError(f"At most {MAX_MB:,} MB (1 PiB).")
        return value

    def clean_shm_size_mb(self):
        value = self.cleaned_data["shm_size_mb"]
        if value is not None and not 1 <= value <= MAX_MB:
            raise forms.ValidationError(f"Give 1 to {MAX_MB:,} MB, or leave it empty for Docker's default (64 MB).")
        return value

    def clean_gpus(self):
        value = self.cleaned_data["gpus"].strip().lower()
        if value in ("", "all"):
            return value
        if value.isdigit() and int(value) > 0:
            return str(int(value))
        raise forms.ValidationError("Use all, a number of GPUs (1, 2, …), or leave it empty for none.")

    def clean_callback_url(self):
        url = self.cleaned_data["callback_url"].strip()
        if not url:
            return url
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise forms.ValidationError("The port is not a number from 1 to 65535.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise forms.ValidationError(
                "Give an http:// or https:// URL at which containers reach the studio, e.g. "
                "http://host.docker.internal:8000."
            )
        return url

    # The whole form -------------------------------------------------------------------------------------------------

    def clean(self):
        data = super().clean()
        kind = self.instance.kind if self.builtin else data.get("kind")
        if kind == ComputeTarget.Kind.LOCAL:
            self._clean_local(data)
        elif kind == ComputeTarget.Kind.DOCKER:
            self._clean_docker(data)
        if not data.get("queue") and "queue" not in self.errors and data.get("name"):
            data["queue"] = BUILTIN_TARGET if kind == ComputeTarget.Kind.LOCAL else f"docker-{data['name']}"
            if len(data["queue"]) > QUEUE_MAX_LENGTH:
                self.add_error(
                    "queue", f"docker-{data['name']} is longer than {QUEUE_MAX_LENGTH} characters: name a queue."
                )
        return data

    def _clean_local(self, data):
        for name in DOCKER_ONLY:
            if data.get(name) not in (None, ""):
                self.add_error(
                    name, "Only Docker targets use this: choose Docker engine as the kind, or leave it empty."
                )
        if data.get("tls_client_key"):
            self.add_error("tls_client_key", "Only Docker targets use a TLS key: choose Docker engine as the kind.")

    def _clean_docker(self, data):
        if data.get("python_path"):
            self.add_error("python_path", "Docker targets run in the environment's image: leave this empty.")
        url = data.get("docker_url")
        if "docker_url" not in self.errors and not url:
            self.add_error("docker_url", "A Docker target needs its engine's URL, e.g. unix:///var/run/docker.sock.")
        new_key = data.get("tls_client_key", "")
        remove = data.get("remove_tls_client_key", False)
        if new_key and remove:
            self.add_error("remove_tls_client_key", "Either paste a new key or remove the stored one, not both.")
            return
        key_after = bool(new_key) or (self.has_stored_key and not remove)
        tls_given = [name for name in ("tls_ca_cert", "tls_client_cert") if data.get(name)]
        if url and not url.startswith("tcp://"):
            for name in tls_given + (["tls_client_key"] if new_key else []):
                self.add_error(name, "TLS applies to tcp:// engines only: clear this, or use a tcp:// URL.")
            return
        cert = data.get("tls_client_cert")
        if "tls_client_cert" in self.errors or "tls_client_key" in self.errors:
            return
        if cert and not key_after:
            message = (
                "The client certificate needs its key: keep the stored key, or remove the certificate too."
                if remove
                else "The client certificate needs its key: paste it here."
            )
            self.add_error("tls_client_key", message)
        elif new_key and not cert:
            self.add_error("tls_client_cert", "The client key needs its certificate: paste it here.")
        elif key_after and not cert:
            self.add_error("tls_client_cert", "The stored key needs its certificate: paste it here, or remove the key.")
        elif cert and key_after:
            self._check_pair(cert, new_key)

    def _check_pair(self, cert_text: str, new_key: str):
        """A client certificate and its key must belong together (else every TLS handshake fails)."""
        key_text = new_key
        if not key_text:
            try:
                key_text = decrypt(self.instance.tls_client_key_encrypted)
            except ValueError as exc:
                self.add_error("tls_client_key", str(exc))
                return
        key = serialization.load_pem_private_key(key_text.encode(), password=None)
        cert = x509.load_pem_x509_certificate(cert_text.encode())
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            field = "tls_client_key" if new_key else "tls_client_cert"
            self.add_error(field, "This key and the client certificate do not belong together.")

    def _clean_certificates(self, name: str, *, many: bool) -> str:
        text = self.cleaned_data[name].strip()
        if not text:
            return ""
        if "PRIVATE KEY" in text:
            self.data[name] = ""  # never echo a key back
            raise forms.ValidationError(
                "This is a private key, not a certificate: paste it in the TLS client key field."
            )
        if not CERT_RE.search(text):
            raise forms.ValidationError(
                "Paste a PEM certificate: the text from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----."
            )
        try:
            if many:
                x509.load_pem_x509_certificates(text.encode())
            else:
                x509.load_pem_x509_certificate(text.encode())
        except ValueError:
            raise forms.ValidationError("This is not a readable PEM certificate: paste the whole file.") from None
        return text + "\n"

    def full_clean(self):
        super().full_clean()
        typed_key = self.is_bound and self.data.get("tls_client_key", "").strip()
        if typed_key and self._errors and "tls_client_key" not in self._errors:
            self.add_error("tls_client_key", KEY_AGAIN)

    def save(self, commit: bool = True) -> ComputeTarget:
        target = super().save(commit=False)
        new_key = self.cleaned_data.get("tls_client_key")
        if new_key:
            target.tls_client_key_encrypted = encrypt(new_key)
        elif self.cleaned_data.get("remove_tls_client_key") or target.kind == ComputeTarget.Kind.LOCAL:
            target.tls_client_key_encrypted = ""
        if commit:
            target.save()
        return target
