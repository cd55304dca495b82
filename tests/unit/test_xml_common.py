"""The XML elements domains and networks share (``vdc.libvirt.xml_common``): refusals, and a shared
element's error read inside a domain or network is that module's error."""

from __future__ import annotations

import typing
import xml.etree.ElementTree as ET

import pytest

from vdc.libvirt.domain_xml import DomainXmlError, InterfaceConfig
from vdc.libvirt.network_xml import NetworkConfig, NetworkXmlError
from vdc.libvirt.xml_common import BANDWIDTH_MAX, BandwidthConfig, BandwidthLimitConfig, XmlError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BandwidthConfig(), "inbound or outbound"),
        (lambda: BandwidthLimitConfig(average=0), "average must be 1-"),
        (lambda: BandwidthLimitConfig(average=1, peak=2**32), "peak must be 1-"),
        (lambda: BandwidthLimitConfig(average=1, burst=0), "burst must be 1-"),
    ],
)
def test_bandwidth_libvirt_would_refuse_or_ignore_is_refused(build: typing.Callable[[], object], message: str) -> None:
    with pytest.raises(XmlError, match=message):
        build()


def test_bandwidth_round_trips() -> None:
    config = BandwidthConfig(inbound=BandwidthLimitConfig(BANDWIDTH_MAX, 2, 3), outbound=BandwidthLimitConfig(5))
    assert BandwidthConfig.from_xml(config.to_xml()) == config
    assert ET.tostring(config.to_xml(), encoding="unicode") == (
        f'<bandwidth><inbound average="{BANDWIDTH_MAX}" peak="2" burst="3" /><outbound average="5" /></bandwidth>'
    )
    assert BandwidthConfig.from_xml(ET.fromstring("<bandwidth/>")) is None


def test_a_bad_bandwidth_inside_a_domain_or_network_is_that_modules_error() -> None:
    interface = ET.fromstring(
        "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='n'/>"
        "<bandwidth><inbound peak='5'/></bandwidth><model type='virtio'/></interface>"
    )
    with pytest.raises(DomainXmlError, match="bandwidth inbound average is missing"):
        InterfaceConfig.from_xml(interface)
    network = (
        "<network><name>n</name><bridge name='vdcbr-n'/><bandwidth><outbound average='0'/></bandwidth>"
        "<ip address='10.0.0.1' prefix='24'/></network>"
    )
    with pytest.raises(NetworkXmlError, match="average must be 1-"):
        NetworkConfig.from_string(network)
