"""libvirt storage pool and volume XML: golden files, libvirt's RNG schemas, the test driver, round trips.

As in ``test_domain_xml.py``, the golden configs are the fixtures of every check: each is rendered
and compared with its file under ``golden/storage/`` (``VDC_UPDATE_GOLDEN=1`` rewrites them),
validated with ``virt-xml-validate`` (``storagepool`` / ``storagevol``), given to libvirt's test
driver and read back, and a coverage test fails when a dataclass field is never given a non-default
value by some golden config.

The test driver (``test:///default``) defines pools of every type we model (it touches no storage),
and keeps volumes of its dir pools in memory, so both round trips run for every golden.
"""

from __future__ import annotations

import dataclasses
import typing
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdc.libvirt.storage_xml import (
    BackingStoreConfig,
    PoolAuthConfig,
    PoolConfig,
    PoolHostConfig,
    PoolSourceConfig,
    PoolType,
    StorageXmlError,
    VolumeConfig,
    VolumeFormat,
)
from xmlconfigs import check_golden, config_classes, stale_golden_files, unexercised_fields, virt_xml_validate

GOLDEN_DIR = Path(__file__).parent / "golden" / "storage"
GiB = 1024**3
IMAGES = "/var/lib/vdc/pools/images"
"""Where the golden volumes live: the target of the dir pool the test-driver round trip creates."""

POOLS: dict[str, PoolConfig] = {
    # A local directory: the pool type that works end to end.
    "pool-dir": PoolConfig(
        name="vdc-default",
        type="dir",
        uuid="3f1c7a52-9d4e-4b8a-a6f0-2c5e8d9b1a07",
        target_path="/var/lib/vdc/pools/default",
    ),
    # An NFS export mounted on every host: a shared pool.
    "pool-netfs": PoolConfig(
        name="vdc-shared-nfs",
        type="netfs",
        target_path="/var/lib/vdc/pools/shared-nfs",
        source=PoolSourceConfig(hosts=(PoolHostConfig("nfs.storage.example.com"),), dir="/export/vdc", format="nfs"),
    ),
    # An LVM volume group made of two physical volumes.
    "pool-logical": PoolConfig(
        name="vdc-fast",
        type="logical",
        target_path="/dev/vdc-fast",
        source=PoolSourceConfig(name="vdc-fast", devices=("/dev/sdb", "/dev/sdc"), format="lvm2"),
    ),
    # A Ceph pool through three monitors, cephx key in a libvirt secret found by its usage.
    "pool-rbd": PoolConfig(
        name="vdc-ceph",
        type="rbd",
        source=PoolSourceConfig(
            name="vdc-vms",
            hosts=(
                PoolHostConfig("mon1.ceph.example.com", 6789),
                PoolHostConfig("mon2.ceph.example.com", 6789),
                PoolHostConfig("mon3.ceph.example.com"),
            ),
            auth=PoolAuthConfig(type="ceph", username="libvirt", secret_usage="client.libvirt secret"),
        ),
    ),
    # An iSCSI target on a portal, CHAP password in a libvirt secret found by its UUID.
    "pool-iscsi": PoolConfig(
        name="vdc-san",
        type="iscsi",
        target_path="/dev/disk/by-path",
        source=PoolSourceConfig(
            hosts=(PoolHostConfig("192.0.2.10", 3260),),
            devices=("iqn.2024-01.com.example.san:vdc",),
            auth=PoolAuthConfig(type="chap", username="vdc", secret_uuid="8b2f4c1e-5a6d-4e7f-9a0b-1c2d3e4f5a6b"),
        ),
    ),
}

VOLUMES: dict[str, VolumeConfig] = {
    # A blank sparse data disk.
    "volume-raw": VolumeConfig(name="db-0-data.img", capacity_bytes=GiB),
    # A blank thin root disk.
    "volume-qcow2": VolumeConfig(name="db-0-root.qcow2", capacity_bytes=20 * GiB, format="qcow2"),
    # A VM's root disk as a copy-on-write overlay on an appliance's base image.
    "volume-qcow2-backing": VolumeConfig(
        name="web-0-root.qcow2",
        capacity_bytes=20 * GiB,
        format="qcow2",
        backing=BackingStoreConfig(path=f"{IMAGES}/debian-12-generic.qcow2", format="qcow2"),
    ),
    # A cloud-init NoCloud seed, fully allocated, as read back (with its path).
    "volume-iso": VolumeConfig(
        name="web-0-cidata.iso",
        capacity_bytes=374784,
        format="iso",
        allocation_bytes=374784,
        target_path=f"{IMAGES}/web-0-cidata.iso",
    ),
}

GOLDEN: dict[str, PoolConfig | VolumeConfig] = {**POOLS, **VOLUMES}


def render(config: PoolConfig | VolumeConfig) -> str:
    return config.to_string() + "\n"


def parse(name: str, text: str) -> PoolConfig | VolumeConfig:
    return PoolConfig.from_string(text) if name in POOLS else VolumeConfig.from_string(text)


# --- 1. golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_generated_xml_matches_golden_file(name: str) -> None:
    check_golden(GOLDEN_DIR, name, render(GOLDEN[name]))


def test_every_golden_file_has_a_config() -> None:
    stale = stale_golden_files(GOLDEN_DIR, GOLDEN)
    assert not stale, f"golden files without a config in GOLDEN: {stale}"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file_parses_back_to_its_config(name: str) -> None:
    assert parse(name, (GOLDEN_DIR / f"{name}.xml").read_text()) == GOLDEN[name]


def test_pool_xml_has_the_shape_libvirt_documents() -> None:
    rbd = ET.fromstring(POOLS["pool-rbd"].to_string())
    assert rbd.find("target") is None
    assert rbd.find("source/auth").attrib == {"type": "ceph", "username": "libvirt"}  # type: ignore[union-attr]
    assert rbd.find("source/auth/secret").attrib == {"usage": "client.libvirt secret"}  # type: ignore[union-attr]
    netfs = ET.fromstring(POOLS["pool-netfs"].to_string())
    assert netfs.find("source/dir").attrib == {"path": "/export/vdc"}  # type: ignore[union-attr]
    assert netfs.find("source/format").attrib == {"type": "nfs"}  # type: ignore[union-attr]
    assert ET.fromstring(POOLS["pool-dir"].to_string()).find("source") is None


# --- 2. libvirt's RNG schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_generated_xml_validates_against_libvirt_schema(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(render(GOLDEN[name]))
    schema = "storagepool" if name in POOLS else "storagevol"
    virt_xml_validate(path, schema)


# --- 3. libvirt's test driver ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_driver() -> Iterator[typing.Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(POOLS))
def test_libvirt_test_driver_accepts_and_returns_the_pool(name: str, test_driver: typing.Any) -> None:
    config = POOLS[name]
    pool = test_driver.storagePoolDefineXML(config.to_string(), 0)
    try:
        defined = PoolConfig.from_string(pool.XMLDesc(0))
        # libvirt gives a pool defined without a UUID one of its own.
        assert defined == dataclasses.replace(config, uuid=config.uuid or pool.UUIDString())
        pool.create(0)
        try:
            # A running pool's XML adds capacity, allocation and available: still parses the same.
            assert PoolConfig.from_string(pool.XMLDesc(0)) == defined
        finally:
            pool.destroy()
    finally:
        pool.undefine()


@pytest.fixture(scope="module")
def images_pool(test_driver: typing.Any) -> Iterator[typing.Any]:
    """A running dir pool at ``IMAGES`` in the test driver (its volumes live in memory)."""
    config = PoolConfig(name=f"vdc-xml-test-{uuid.uuid4().hex[:8]}", type="dir", target_path=IMAGES)
    pool = test_driver.storagePoolDefineXML(config.to_string(), 0)
    pool.create(0)
    try:
        yield pool
    finally:
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        pool.destroy()
        pool.undefine()


@pytest.mark.parametrize("name", sorted(VOLUMES))
def test_libvirt_test_driver_creates_and_returns_the_volume(name: str, images_pool: typing.Any) -> None:
    config = VOLUMES[name]
    vol = images_pool.createXML(config.to_string(), 0)
    try:
        created = VolumeConfig.from_string(vol.XMLDesc(0))
        # libvirt places the volume in the pool's directory, whatever the XML says.
        assert created == dataclasses.replace(config, target_path=f"{IMAGES}/{config.name}")
        assert vol.path() == f"{IMAGES}/{config.name}"
    finally:
        vol.delete(0)


# --- 4. property: any valid config round-trips ----------------------------------------------------

xml_text = st.text(alphabet=st.characters(categories=("L", "M", "N", "P", "S", "Zs")), max_size=20)
nonempty = xml_text.filter(bool)
names = nonempty.filter(lambda s: "/" not in s)
uuids = st.uuids().map(str)
hosts = st.builds(PoolHostConfig, name=nonempty, port=st.none() | st.integers(1, 65535))


def auths(auth_type: typing.Literal["ceph", "chap"]) -> st.SearchStrategy[PoolAuthConfig]:
    return st.one_of(
        st.builds(PoolAuthConfig, type=st.just(auth_type), username=xml_text, secret_usage=xml_text),
        st.builds(PoolAuthConfig, type=st.just(auth_type), username=xml_text, secret_uuid=uuids),
    )


@st.composite
def pools(draw: st.DrawFn) -> PoolConfig:
    pool_type: PoolType = draw(st.sampled_from(typing.get_args(PoolType)))
    source = PoolSourceConfig()
    if pool_type == "netfs":
        source = PoolSourceConfig(
            hosts=(draw(hosts),),
            dir=draw(xml_text),
            format=draw(st.sampled_from(["auto", "nfs", "glusterfs", "cifs"])),
        )
    elif pool_type == "logical":
        source = PoolSourceConfig(
            name=draw(nonempty), devices=tuple(draw(st.lists(xml_text, max_size=4))), format="lvm2"
        )
    elif pool_type == "rbd":
        source = PoolSourceConfig(
            name=draw(nonempty),
            hosts=tuple(draw(st.lists(hosts, min_size=1, max_size=4))),
            auth=draw(st.none() | auths("ceph")),
        )
    elif pool_type == "iscsi":
        source = PoolSourceConfig(hosts=(draw(hosts),), devices=(draw(xml_text),), auth=draw(st.none() | auths("chap")))
    return PoolConfig(
        name=draw(names),
        type=pool_type,
        uuid=draw(st.none() | uuids),
        target_path=None if pool_type == "rbd" else draw(xml_text),
        source=source,
    )


@st.composite
def volumes(draw: st.DrawFn) -> VolumeConfig:
    volume_format: VolumeFormat = draw(st.sampled_from(typing.get_args(VolumeFormat)))
    backing = None
    if volume_format == "qcow2":
        backing = draw(
            st.none() | st.builds(BackingStoreConfig, path=nonempty, format=st.sampled_from(["raw", "qcow2"]))
        )
    return VolumeConfig(
        name=draw(names),
        capacity_bytes=draw(st.integers(0, 2**62)),
        format=volume_format,
        allocation_bytes=draw(st.integers(0, 2**62)),
        backing=backing,
        target_path=draw(st.none() | xml_text),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(pools())
def test_any_valid_pool_round_trips_through_xml(config: PoolConfig) -> None:
    assert PoolConfig.from_string(config.to_string()) == config


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(volumes())
def test_any_valid_volume_round_trips_through_xml(config: VolumeConfig) -> None:
    assert VolumeConfig.from_string(config.to_string()) == config


# --- 5. every field is exercised by the golden configs --------------------------------------------


def test_every_field_has_a_non_default_value_in_some_golden_config() -> None:
    missing = unexercised_fields((PoolConfig, VolumeConfig), GOLDEN.values())
    assert not missing, f"fields no golden config sets to a non-default value: {missing}"


def test_every_literal_value_appears_in_some_golden_config() -> None:
    """Each pool type, source format we build for, auth type and volume format is shown to libvirt."""
    pools_, vols = list(POOLS.values()), list(VOLUMES.values())
    assert {p.type for p in pools_} == set(typing.get_args(PoolType))
    assert {p.source.auth.type for p in pools_ if p.source.auth} == {"ceph", "chap"}
    assert {v.format for v in vols} == {"raw", "qcow2", "iso"}


def test_coverage_walk_reaches_every_config_class() -> None:
    assert config_classes(PoolConfig) == {PoolConfig, PoolSourceConfig, PoolHostConfig, PoolAuthConfig}
    assert config_classes(VolumeConfig) == {VolumeConfig, BackingStoreConfig}


# --- parsing what libvirt returns, refusals -------------------------------------------------------

# What the QEMU driver (libvirt 9) returns for a running dir pool and for a qcow2 overlay in it.
QEMU_POOL_XML = """<pool type='dir'>
  <name>vdc-default</name>
  <uuid>d7edfc28-8031-453d-9af0-489a665a66e9</uuid>
  <capacity unit='bytes'>270553174016</capacity>
  <allocation unit='bytes'>19198980096</allocation>
  <available unit='bytes'>251354193920</available>
  <source>
  </source>
  <target>
    <path>/var/lib/vdc/pools/default</path>
    <permissions>
      <mode>0711</mode>
      <owner>0</owner>
      <group>0</group>
    </permissions>
  </target>
</pool>
"""

QEMU_VOLUME_XML = """<volume type='file'>
  <name>ov.qcow2</name>
  <key>/var/lib/vdc/pools/default/ov.qcow2</key>
  <capacity unit='bytes'>1073741824</capacity>
  <allocation unit='bytes'>200704</allocation>
  <physical unit='bytes'>196624</physical>
  <target>
    <path>/var/lib/vdc/pools/default/ov.qcow2</path>
    <format type='qcow2'/>
    <permissions>
      <mode>0600</mode>
      <owner>0</owner>
      <group>0</group>
    </permissions>
    <timestamps>
      <atime>1795315260.073963157</atime>
      <mtime>1795315260.070049397</mtime>
      <ctime>1795315260.073905845</ctime>
      <btime>0</btime>
    </timestamps>
    <compat>1.1</compat>
    <clusterSize unit='B'>65536</clusterSize>
    <features/>
  </target>
  <backingStore>
    <path>/var/lib/vdc/pools/default/base.qcow2</path>
    <format type='qcow2'/>
    <permissions>
      <mode>0600</mode>
      <owner>0</owner>
      <group>0</group>
    </permissions>
  </backingStore>
</volume>
"""


def test_parses_what_the_qemu_driver_returns_for_a_pool() -> None:
    assert PoolConfig.from_string(QEMU_POOL_XML) == PoolConfig(
        name="vdc-default",
        type="dir",
        uuid="d7edfc28-8031-453d-9af0-489a665a66e9",
        target_path="/var/lib/vdc/pools/default",
    )


def test_parses_what_the_qemu_driver_returns_for_a_volume() -> None:
    assert VolumeConfig.from_string(QEMU_VOLUME_XML) == VolumeConfig(
        name="ov.qcow2",
        capacity_bytes=GiB,
        format="qcow2",
        allocation_bytes=200704,
        backing=BackingStoreConfig(path="/var/lib/vdc/pools/default/base.qcow2", format="qcow2"),
        target_path="/var/lib/vdc/pools/default/ov.qcow2",
    )


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [
        ("<capacity>123</capacity>", 123),
        ("<capacity unit='bytes'>123</capacity>", 123),
        ("<capacity unit='KiB'>2</capacity>", 2048),
        ("<capacity unit='k'>2</capacity>", 2048),
        ("<capacity unit='KB'>2</capacity>", 2000),
        ("<capacity unit='G'>10</capacity>", 10 * GiB),
        ("<capacity unit='GiB'>10</capacity>", 10 * GiB),
        ("<capacity unit='TB'>1</capacity>", 10**12),
    ],
)
def test_sizes_in_any_libvirt_unit_are_read_in_bytes(capacity: str, expected: int) -> None:
    text = f"<volume><name>v</name>{capacity}<allocation>0</allocation><target><format type='raw'/></target></volume>"
    assert VolumeConfig.from_string(text).capacity_bytes == expected


def test_volume_without_allocation_or_format_gets_libvirts_defaults() -> None:
    config = VolumeConfig.from_string("<volume><name>v</name><capacity unit='M'>1</capacity></volume>")
    assert config == VolumeConfig(name="v", capacity_bytes=2**20, format="raw", allocation_bytes=2**20)


def test_user_input_cannot_inject_xml() -> None:
    evil = "x</path></target><source><host name='evil'/></source><target><path>"
    config = dataclasses.replace(POOLS["pool-dir"], name="a'b\"c<d>&e", target_path=evil)
    text = config.to_string()
    assert ET.fromstring(text).find(".//host") is None
    assert PoolConfig.from_string(text) == config
    volume = dataclasses.replace(VOLUMES["volume-raw"], name="<name>&amp;<name>")
    assert VolumeConfig.from_string(volume.to_string()) == volume


@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\r", "\ufffe"])
def test_characters_xml_cannot_carry_are_refused(bad: str) -> None:
    with pytest.raises(StorageXmlError, match="cannot be represented in XML"):
        dataclasses.replace(POOLS["pool-dir"], target_path=f"/pools/{bad}").to_string()
    with pytest.raises(StorageXmlError, match="cannot be represented in XML"):
        dataclasses.replace(VOLUMES["volume-raw"], name=f"v{bad}").to_string()


def _source(**kwargs: typing.Any) -> PoolSourceConfig:
    return PoolSourceConfig(**kwargs)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PoolConfig(name="", type="dir", target_path="/p"), "non-empty"),
        (lambda: PoolConfig(name="a/b", type="dir", target_path="/p"), "no '/'"),
        (lambda: PoolConfig(name="p", type="dir", target_path="/p", uuid="not-a-uuid"), "not a UUID"),
        (
            lambda: PoolConfig(name="p", type="dir", target_path="/p", uuid="3F1C7A52-9D4E-4B8A-A6F0-2C5E8D9B1A07"),
            "canonical",
        ),
        (lambda: PoolConfig(name="p", type="zfs", target_path="/p"), "not one of"),  # type: ignore[arg-type]
        (lambda: PoolConfig(name="p", type="dir"), "needs a target path"),
        (lambda: dataclasses.replace(POOLS["pool-rbd"], target_path="/p"), "no target path"),
        (
            lambda: PoolConfig(name="p", type="dir", target_path="/p", source=_source(name="x")),
            "does not use source name",
        ),
        (
            lambda: dataclasses.replace(POOLS["pool-netfs"], source=_source(hosts=(PoolHostConfig("h"),), dir="/e")),
            "format",
        ),
        (
            lambda: dataclasses.replace(
                POOLS["pool-netfs"], source=_source(hosts=(PoolHostConfig("h"),), dir="/e", format="lvm2")
            ),
            "format",
        ),
        (lambda: dataclasses.replace(POOLS["pool-netfs"], source=_source(dir="/e", format="nfs")), "exactly one"),
        (
            lambda: dataclasses.replace(
                POOLS["pool-netfs"], source=_source(hosts=(PoolHostConfig("h"),), format="nfs")
            ),
            "source dir",
        ),
        (lambda: dataclasses.replace(POOLS["pool-logical"], source=_source(format="lvm2")), "source name"),
        (lambda: dataclasses.replace(POOLS["pool-rbd"], source=_source(name="r")), "at least one source host"),
        (
            lambda: dataclasses.replace(
                POOLS["pool-rbd"],
                source=_source(
                    name="r", hosts=(PoolHostConfig("m"),), auth=PoolAuthConfig("chap", "u", secret_usage="s")
                ),
            ),
            "auth type ceph",
        ),
        (
            lambda: dataclasses.replace(POOLS["pool-iscsi"], source=_source(hosts=(PoolHostConfig("p"),))),
            "exactly one source device",
        ),
        (lambda: PoolHostConfig("h", port=0), "1-65535"),
        (lambda: PoolHostConfig(""), "non-empty"),
        (lambda: PoolAuthConfig("ceph", "u"), "exactly one"),
        (lambda: PoolAuthConfig("ceph", "u", secret_usage="s", secret_uuid=str(uuid.uuid4())), "exactly one"),
        (lambda: PoolAuthConfig("ceph", "u", secret_uuid="x"), "not a UUID"),
        (lambda: VolumeConfig(name="", capacity_bytes=1), "non-empty"),
        (lambda: VolumeConfig(name="a/b", capacity_bytes=1), "no '/'"),
        (lambda: VolumeConfig(name="v", capacity_bytes=-1), "negative"),
        (lambda: VolumeConfig(name="v", capacity_bytes=1, allocation_bytes=-1), "negative"),
        (lambda: VolumeConfig(name="v", capacity_bytes=1, format="vmdk"), "not one of"),  # type: ignore[arg-type]
        (
            lambda: VolumeConfig(name="v", capacity_bytes=1, backing=BackingStoreConfig("/b.qcow2", "qcow2")),
            "only a qcow2 volume",
        ),
        (lambda: BackingStoreConfig("", "raw"), "non-empty"),
    ],
)
def test_configs_libvirt_would_refuse_or_silently_change_are_refused(
    build: typing.Callable[[], object], message: str
) -> None:
    with pytest.raises(StorageXmlError, match=message):
        build()


@pytest.mark.parametrize(
    ("name", "old", "new", "message"),
    [
        ("pool-dir", '<pool type="dir">', "<pool type='zfs'>", "pool type"),
        ("pool-netfs", '<format type="nfs" />', "<format type='ext4'/>", "source format"),
        ("pool-rbd", 'port="6789"', "port='ceph'", "port"),
        ("pool-rbd", '<auth type="ceph"', "<auth type='kerberos'", "auth type"),
        ("volume-qcow2", '<format type="qcow2" />', "<format type='vmdk'/>", "volume format"),
        ("volume-raw", '<capacity unit="bytes">', "<capacity unit='parsecs'>", "unknown unit"),
        ("volume-raw", f">{GiB}</capacity>", ">lots</capacity>", "capacity"),
        (
            "volume-qcow2-backing",
            '<format type="qcow2" />\n  </backingStore>',
            "<format/></backingStore>",
            "backing store format",
        ),
    ],
)
def test_values_we_do_not_model_are_reported_with_the_element(name: str, old: str, new: str, message: str) -> None:
    text = render(GOLDEN[name])
    assert old in text
    with pytest.raises(StorageXmlError, match=message):
        parse(name, text.replace(old, new))


def test_not_xml_or_another_element_is_a_storage_xml_error() -> None:
    with pytest.raises(StorageXmlError, match="well-formed"):
        PoolConfig.from_string("<pool>")
    with pytest.raises(StorageXmlError, match="well-formed"):
        VolumeConfig.from_string("<volume>")
    with pytest.raises(StorageXmlError, match="expected <pool>"):
        PoolConfig.from_string(VOLUMES["volume-raw"].to_string())
    with pytest.raises(StorageXmlError, match="expected <volume>"):
        VolumeConfig.from_string(POOLS["pool-dir"].to_string())
