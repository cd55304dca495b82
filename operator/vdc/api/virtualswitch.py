"""VirtualSwitch: one distributed switch, the same libvirt network on every matching host."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from vdc.api.common import (
    IPV4,
    IPV4_CIDR,
    IPV6_CIDR,
    MAC,
    AllowedNamespaces,
    Bandwidth,
    LabelSelector,
    Name,
    ShortText,
    cel,
    field,
    list_map,
    validations,
)
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, ready_column, reason_column

IPv4Address = Annotated[str, StringConstraints(max_length=15, pattern=IPV4)]
IfName = Annotated[str, StringConstraints(min_length=1, max_length=15, pattern=r"^[a-zA-Z0-9_.:-]+$")]


class DhcpRange(ApiModel):
    """Addresses handed out by the switch's IPAM."""

    start: IPv4Address = field("First address.")
    end: IPv4Address = field("Last address.")


class Subnet(ApiModel):
    """The switch's IPv4 subnet: one subnet across all hosts."""

    cidr: Annotated[str, StringConstraints(max_length=18, pattern=IPV4_CIDR)] = field(
        "Subnet, e.g. 10.10.0.0/24.", update="immutable"
    )
    gateway: IPv4Address | None = field("Gateway address (default: the first address).", default=None)
    dhcp_range: DhcpRange | None = field(
        "Range the IPAM allocates from (default: the subnet less the gateway).", default=None
    )


class Ipv6Subnet(ApiModel):
    """An optional IPv6 subnet."""

    cidr: Annotated[str, StringConstraints(max_length=43, pattern=IPV6_CIDR)] = field("IPv6 subnet.")


class Dns(ApiModel):
    """DNS offered to guests."""

    servers: list[IPv4Address] = field("DNS servers (default: the gateway).", default_factory=list, max_length=8)
    domain: Annotated[str, StringConstraints(max_length=253)] | None = field("Search domain.", default=None)


class BridgeUplink(ApiModel):
    """An existing bridge on each host (bridge mode)."""

    name: IfName = field("The host bridge's name, e.g. br0.")


class Overlay(ApiModel):
    """A VXLAN segment spanning the hosts (overlay mode)."""

    vni: int = field("VXLAN network identifier.", ge=1, le=16777215, update="immutable")
    port: int = field("UDP port.", default=4789, ge=1, le=65535, update="restart")
    underlay_interface: IfName | None = field(
        "Host interface carrying VXLAN traffic (default: the one with the host's underlay address).",
        default=None,
    )


class VirtualSwitchSpec(ApiModel):
    """Desired state of a distributed virtual switch."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "self.mode != 'bridge' || has(self.bridge)",
                "bridge mode needs bridge.name",
                field_path=".bridge",
            ),
            cel(
                "self.mode != 'overlay' || has(self.overlay)",
                "overlay mode needs overlay.vni",
                field_path=".overlay",
            ),
            cel(
                "self.mode == 'bridge' || has(self.subnet)",
                "nat, isolated and overlay switches need subnet.cidr",
                field_path=".subnet",
            ),
            cel(
                "!has(self.vlan) || self.mode == 'bridge' || self.mode == 'overlay'",
                "vlan is only possible in bridge and overlay modes",
                field_path=".vlan",
            ),
        )
    }

    mode: Literal["nat", "isolated", "bridge", "overlay"] = field(
        "nat: libvirt NAT network; isolated: no uplink; bridge: an existing host bridge; "
        "overlay: a VXLAN segment across hosts.",
        update="immutable",
    )
    host_selector: LabelSelector = field(
        "Hosts that get this switch. Empty: every host.", default_factory=LabelSelector, update="live"
    )
    subnet: Subnet | None = field("IPv4 subnet and IPAM range.", default=None, update="live")
    ipv6: Ipv6Subnet | None = field("Optional IPv6 subnet.", default=None, update="restart")
    dns: Dns | None = field("DNS for guests.", default=None, update="restart")
    bridge: BridgeUplink | None = field("The host bridge (bridge mode).", default=None, update="restart")
    overlay: Overlay | None = field("VXLAN settings (overlay mode).", default=None, update="restart")
    vlan: int | None = field("802.1Q VLAN tag.", default=None, ge=1, le=4094, update="restart")
    mtu: int | None = field("MTU of the switch.", default=None, ge=576, le=9216, update="restart")
    bandwidth: Bandwidth | None = field(
        "Default limits of every port; a VM NIC may only lower them.", default=None, update="live"
    )
    allowed_namespaces: AllowedNamespaces = field(
        "Tenant namespaces whose VMs may attach NICs to this switch. Default: all namespaces.",
        default_factory=AllowedNamespaces,
        update="live",
    )
    public: bool = field(
        "Addresses on this switch are public: each NIC on it counts against its namespace's "
        "ComputeQuota publicAddresses.",
        default=False,
        update="live",
    )


class SwitchHostStatus(ApiModel):
    """The switch on one host."""

    host: Name = field("The Host's name.")
    state: Literal["Pending", "Active", "Inactive", "Failed", "Unknown"] = field("Network state.")
    bridge: IfName | None = field("The host-side bridge.", default=None)
    message: ShortText = field("What is wrong, if anything.", default="")


class AddressAllocation(ApiModel):
    """One address of the switch's IPAM."""

    ip: IPv4Address = field("Allocated address.")
    mac: Annotated[str, StringConstraints(pattern=MAC, max_length=17)] = field("MAC address it is bound to.")
    owner: Annotated[str, StringConstraints(max_length=400)] = field("namespace/vm/interface holding it.")
    pending: bool | None = field(
        "Persisted, not yet handed to the hosts' DHCP: its VM waits (set only while so).", default=None
    )


class VirtualSwitchStatus(ApiModel):
    """Observed state of a virtual switch."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    hosts: list[SwitchHostStatus] = field(
        "Per host state.",
        default_factory=list,
        extra=list_map("host"),
    )
    ready_hosts: int = field("Hosts where the switch is active.", default=0, ge=0)
    allocations: list[AddressAllocation] = field(
        "Addresses allocated by the IPAM.",
        default_factory=list,
        extra=list_map("ip"),
    )
    free_addresses: int | None = field("Addresses left in the range.", default=None, ge=0)


class VirtualSwitch(Resource):
    """A distributed virtual switch: the same network, subnet and IPAM on every matching host."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="VirtualSwitch",
        plural="virtualswitches",
        short_names=("vswitch",),
        scope="Cluster",
        printer_columns=(
            ready_column(),
            PrinterColumn("Mode", ".spec.mode"),
            PrinterColumn("Subnet", ".spec.subnet.cidr"),
            PrinterColumn("Hosts", ".status.readyHosts", type="integer"),
            PrinterColumn("Free", ".status.freeAddresses", type="integer", priority=1),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "VirtualSwitch"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: VirtualSwitchSpec = field("Desired state.")
    status: VirtualSwitchStatus | None = field("Observed state, written by the operator.", default=None)
