"""Host credentials from a Secret become files and URI parameters libvirt understands."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from vdc.libvirt.credentials import CredentialsError, files_for, uri_with_files, write_files


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_ssh_uri_gets_keyfile_and_known_hosts(tmp_path: Path) -> None:
    files = files_for(
        "qemu+ssh://root@hv1/system", {"ssh-privatekey": b64("KEY"), "known_hosts": b64("hv1 ssh-ed25519 AAA")}
    )
    assert files == {"id_key": b"KEY", "known_hosts": b"hv1 ssh-ed25519 AAA"}
    uri = uri_with_files("qemu+ssh://root@hv1/system?no_tty=1", tmp_path, set(files))
    assert uri == f"qemu+ssh://root@hv1/system?no_tty=1&keyfile={tmp_path}/id_key&known_hosts={tmp_path}/known_hosts"


def test_tls_uri_gets_a_pki_path_with_libvirts_file_names(tmp_path: Path) -> None:
    data = {"tls.crt": b64("C"), "tls.key": b64("K"), "ca.crt": b64("A")}
    assert files_for("qemu+tls://hv2/system", data) == {
        "clientcert.pem": b"C",
        "clientkey.pem": b"K",
        "cacert.pem": b"A",
    }
    assert uri_with_files("qemu+tls://hv2/system", tmp_path, set()) == f"qemu+tls://hv2/system?pkipath={tmp_path}"


@pytest.mark.parametrize(
    ("uri", "data", "missing"),
    [
        ("qemu+ssh://hv/system", {"known_hosts": b64("x")}, "ssh-privatekey"),
        ("qemu+tls://hv/system", {"tls.crt": b64("x")}, "ca.crt, tls.key"),
    ],
)
def test_a_secret_without_the_needed_keys_is_refused_naming_them(uri: str, data: dict[str, str], missing: str) -> None:
    with pytest.raises(CredentialsError, match=missing):
        files_for(uri, data)


def test_unix_uris_need_no_files() -> None:
    assert files_for("qemu+unix:///system?socket=/x", {"ssh-privatekey": b64("K")}) == {}


def test_files_are_private(tmp_path: Path) -> None:
    directory = write_files("hv1", {"id_key": b"SECRET"}, base=tmp_path / "creds")
    assert (directory / "id_key").read_bytes() == b"SECRET"
    assert stat.S_IMODE((directory / "id_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
