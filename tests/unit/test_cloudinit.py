"""NoCloud seed ISOs: label, files, meta-data, determinism, and what other tools read."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pycdlib
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vdc.cloudinit import (
    DEFAULT_USER_DATA,
    VOLUME_ID,
    CloudInitError,
    build_seed_iso,
    read_seed_iso,
    read_volume_id,
    seed_meta_data,
)

UID = "6f1c3a2e-9b7d-4e55-8c1a-0d2f4b6a8e90"
META = seed_meta_data("tenant-a", "web-1", UID, {})
NETWORK = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def test_volume_id_is_cidata() -> None:
    iso = build_seed_iso("#cloud-config\n", META, None)
    assert VOLUME_ID == "cidata"
    assert read_volume_id(iso) == "cidata"
    assert len(iso) % 2048 == 0


def test_files_have_exact_contents_and_network_config_only_when_given() -> None:
    user = "#cloud-config\nruncmd:\n  - echo hello\n"
    without = read_seed_iso(build_seed_iso(user, META, None))
    assert set(without) == {"user-data", "meta-data"}
    assert without["user-data"] == user.encode()

    with_net = read_seed_iso(build_seed_iso(user, META, NETWORK))
    assert set(with_net) == {"user-data", "meta-data", "network-config"}
    assert with_net["network-config"] == NETWORK.encode()
    assert with_net["user-data"] == user.encode()


def test_missing_user_data_becomes_an_empty_cloud_config_and_empty_stays_empty() -> None:
    files = read_seed_iso(build_seed_iso(None, META, None))
    assert files["user-data"] == DEFAULT_USER_DATA.encode()
    assert files["user-data"].startswith(b"#cloud-config\n")
    assert yaml.safe_load(files["user-data"]) == {}
    assert read_seed_iso(build_seed_iso("", META, None))["user-data"] == b""


def test_unicode_user_data_is_written_as_utf8() -> None:
    user = "#cloud-config\nwrite_files:\n  - content: 'Grüße, 世界 🚀 — ünïcödé'\n    path: /etc/motd\n"
    assert read_seed_iso(build_seed_iso(user, META, None))["user-data"] == user.encode("utf-8")


@pytest.mark.parametrize("char", ["x", "é", "世", "🚀"])
def test_large_user_data_up_to_the_api_limit(char: str) -> None:
    user = "#cloud-config\n#" + char * (65536 - len("#cloud-config\n#"))
    assert len(user) == 65536
    files = read_seed_iso(build_seed_iso(user, META, NETWORK))
    assert files["user-data"] == user.encode("utf-8")
    assert files["network-config"] == NETWORK.encode()


def test_meta_data_is_yaml_with_instance_id_and_hostname() -> None:
    extra = {"yes": "no", "port": "8080", "empty": "", "motd": "a: b # c", "ü\x85": "line\u2028sep 🚀"}
    meta = seed_meta_data("tenant-a", "web-1", UID, extra)
    parsed = yaml.safe_load(read_seed_iso(build_seed_iso(None, meta, None))["meta-data"])
    assert parsed == {
        "instance-id": UID,
        "local-hostname": "web-1",
        "yes": "no",
        "port": "8080",
        "empty": "",
        "motd": "a: b # c",
        "ü\x85": "line\u2028sep 🚀",
    }
    assert all(isinstance(v, str) for v in parsed.values())


def test_build_refuses_meta_data_without_instance_id_or_hostname() -> None:
    with pytest.raises(CloudInitError, match="instance-id"):
        build_seed_iso(None, {"local-hostname": "web-1"}, None)
    with pytest.raises(CloudInitError, match="local-hostname"):
        build_seed_iso(None, {"instance-id": UID}, None)


def test_seed_meta_data_merges_extra_but_keeps_the_uid_as_instance_id() -> None:
    assert seed_meta_data("ns", "db", "u1", {}) == {"instance-id": "u1", "local-hostname": "db"}
    assert seed_meta_data("ns", "db", "u1", {"local-hostname": "db.example.com", "k": "v"}) == {
        "instance-id": "u1",
        "local-hostname": "db.example.com",
        "k": "v",
    }
    assert seed_meta_data("ns", "db", "u1", {"instance-id": "u1"})["instance-id"] == "u1"
    with pytest.raises(CloudInitError, match="instance-id"):
        seed_meta_data("ns", "db", "u1", {"instance-id": "other"})


@pytest.mark.parametrize("name", ["", "Web", "a_b", "-a", "a-", "a.b", "a" * 64])
def test_seed_meta_data_refuses_names_that_are_not_dns_labels(name: str) -> None:
    with pytest.raises(CloudInitError, match="DNS label"):
        seed_meta_data("ns", name, "u1", {})


def test_seed_meta_data_needs_a_uid() -> None:
    with pytest.raises(CloudInitError, match="uid"):
        seed_meta_data("ns", "db", "", {})


def test_same_inputs_give_the_same_bytes_whatever_the_clock_and_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("#cloud-config\nhostname: x\n", seed_meta_data("ns", "x", UID, {"b": "2", "a": "1"}), NETWORK)
    images = []
    for now, tz in [
        (1_000_000_000.0, "UTC"),
        (1_700_000_123.75, "Asia/Kolkata"),
        (2_000_000_000.0, "America/New_York"),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(time, "time", lambda now=now: now)
            patch.setenv("TZ", tz)
            time.tzset()
            try:
                images.append(build_seed_iso(*args))
            finally:
                patch.undo()
                time.tzset()
    assert images[0] == images[1] == images[2]
    # the mapping's order does not matter either
    reordered = dict(reversed(list(args[1].items())))
    assert build_seed_iso(args[0], reordered, args[2]) == images[0]
    # and different inputs do give different images
    assert build_seed_iso("#cloud-config\nhostname: y\n", args[1], args[2]) != images[0]


def test_every_name_is_there_for_rock_ridge_joliet_and_plain_iso9660() -> None:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(build_seed_iso(None, META, NETWORK)))
    try:
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        for kind in ("rr_path", "joliet_path", "iso_path"):
            for _path, _dirs, files in iso.walk(**{kind: "/"}):
                names = set(files)
                break
            if kind == "iso_path":
                assert names == {"USERDATA.;1", "METADATA.;1", "NETWORKC.;1"}
            else:
                assert names == {"user-data", "meta-data", "network-config"}
    finally:
        iso.close()


def test_reading_something_that_is_not_an_iso_is_an_error() -> None:
    with pytest.raises(CloudInitError):
        read_seed_iso(b"\x00" * 64 * 1024)
    with pytest.raises(CloudInitError):
        read_volume_id(b"not an iso")


printable = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n\t"), max_size=4000)


@settings(max_examples=60, deadline=None)
@given(user=printable, network=st.none() | printable, extra=st.dictionaries(st.text(min_size=1), st.text(), max_size=5))
def test_any_printable_user_data_round_trips(user: str, network: str | None, extra: dict[str, str]) -> None:
    extra.pop("instance-id", None)
    meta = seed_meta_data("ns", "vm", UID, extra)
    image = build_seed_iso(user, meta, network)
    files = read_seed_iso(image)
    assert files["user-data"] == user.encode("utf-8")
    assert yaml.safe_load(files["meta-data"]) == meta
    if network is None:
        assert "network-config" not in files
    else:
        assert files["network-config"] == network.encode("utf-8")
    assert build_seed_iso(user, meta, network) == image


@pytest.mark.parametrize("tool", ["blkid", "isoinfo"])
def test_external_tools_read_the_label_as_cidata(tool: str, tmp_path: Path) -> None:
    exe = _which(tool)
    if exe is None:
        pytest.skip(f"{tool} is not installed")
    path = tmp_path / "seed.iso"
    path.write_bytes(build_seed_iso(None, META, NETWORK))
    if tool == "blkid":
        # -p probes the file directly (no cache), as udev does for the guest's CD-ROM
        out = subprocess.run([exe, "-p", "-o", "export", str(path)], capture_output=True, text=True, check=True)
        fields = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        assert fields["TYPE"] == "iso9660"
        assert fields["LABEL"] == "cidata"
    else:
        out = subprocess.run([exe, "-d", "-i", str(path)], capture_output=True, text=True, check=True)
        assert "Volume id: cidata" in out.stdout
        listing = subprocess.run([exe, "-R", "-f", "-i", str(path)], capture_output=True, text=True, check=True)
        assert {"/user-data", "/meta-data", "/network-config"} <= set(listing.stdout.split())
