"""Host credentials: files from a Secret, and the libvirt URI that uses them. Secrets are never logged.

``qemu+ssh``: keys ``ssh-privatekey`` (required) and ``known_hosts`` (optional) -> ``keyfile=`` and
``known_hosts=`` URI parameters. ``qemu+tls``: ``tls.crt``, ``tls.key``, ``ca.crt`` -> a ``pkipath=``
directory holding ``clientcert.pem``, ``clientkey.pem`` and ``cacert.pem`` (libvirt's names).
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SSH_FILES = {"ssh-privatekey": "id_key", "known_hosts": "known_hosts"}
TLS_FILES = {"tls.crt": "clientcert.pem", "tls.key": "clientkey.pem", "ca.crt": "cacert.pem"}


class CredentialsError(ValueError):
    """The Secret does not hold what the URI's transport needs (the message says which keys)."""


def transport(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    return scheme.split("+", 1)[1] if "+" in scheme else ""


def files_for(uri: str, secret_data: Mapping[str, str]) -> dict[str, bytes]:
    """File name -> content for the URI's transport, from a Secret's base64 ``data``."""
    kind = transport(uri)
    wanted = SSH_FILES if kind in ("ssh", "libssh", "libssh2") else TLS_FILES if kind == "tls" else {}
    required = {"ssh-privatekey"} if wanted is SSH_FILES else set(TLS_FILES) if wanted is TLS_FILES else set()
    missing = sorted(required - set(secret_data))
    if missing:
        raise CredentialsError(f"the credentials Secret lacks key(s) {', '.join(missing)} needed for {kind}")
    return {name: base64.b64decode(secret_data[key]) for key, name in wanted.items() if key in secret_data}


def uri_with_files(uri: str, directory: Path, names: set[str]) -> str:
    """The URI with libvirt's parameters pointing at the credential files in ``directory``."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("keyfile", "known_hosts", "pkipath")]
    kind = transport(uri)
    if kind in ("ssh", "libssh", "libssh2"):
        query.append(("keyfile", str(directory / "id_key")))
        if "known_hosts" in names:
            query.append(("known_hosts", str(directory / "known_hosts")))
    elif kind == "tls":
        query.append(("pkipath", str(directory)))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def write_files(host: str, files: Mapping[str, bytes], base: Path | None = None) -> Path:
    """Write the files into a private directory (0700, files 0600) for this host; returns it."""
    root = base or Path(tempfile.gettempdir()) / f"vdc-credentials-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    directory = root / host
    directory.mkdir(mode=0o700, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
    return directory


def effective_uri(host: str, uri: str, secret_data: Mapping[str, str] | None, base: Path | None = None) -> str:
    """The URI to open for a Host: with its credential files (from the Secret's ``data``) written under
    ``base`` and named in the URI; the URI as it is when there is no Secret or its transport needs none."""
    if secret_data is None:
        return uri
    files = files_for(uri, secret_data)
    if not files:
        return uri
    return uri_with_files(uri, write_files(host, files, base), set(files))
