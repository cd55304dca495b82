"""Appliance: a virtual appliance imported from OVF/OVA (namespaced)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from vdc.api.common import CleanPath, Name, ObjectName, SharedWith, ShortText, cel, field, list_map, validations
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, ready_column, reason_column
from vdc.api.quantity import Quantity

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://")]
Text = Annotated[str, StringConstraints(max_length=4096)]


class HostPathSource(ApiModel):
    """A file on one host."""

    host: Name = field("The Host holding the file.")
    path: CleanPath = field(
        "Absolute path of the OVA or .ovf on that host, under a directory the Host's hostFiles.allowedPaths declares."
    )


class VolumeSource(ApiModel):
    """A volume already in a pool."""

    pool: Name = field("The StoragePool.")
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = field("The volume's name.")


class ApplianceSource(ApiModel):
    """Where the OVA or OVF comes from: exactly one of url, hostPath, volume."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "(has(self.url) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) + (has(self.volume) ? 1 : 0) == 1",
                "set exactly one of url, hostPath, volume",
            )
        )
    }

    url: Url | None = field("http(s) URL of an .ova, or of an .ovf whose files sit beside it.", default=None)
    host_path: HostPathSource | None = field("A file on a host.", default=None)
    volume: VolumeSource | None = field("A volume already in a pool.", default=None)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", max_length=64)] | None = field(
        "Expected SHA-256 of the OVA itself, checked before anything else.", default=None
    )


class TrustBundleRef(ApiModel):
    """CA certificates (PEM) trusted to sign packages: a key of a ConfigMap or of a Secret in the
    Appliance's own namespace; exactly one of configMap, secret."""

    model_config = {
        "json_schema_extra": validations(
            cel("has(self.configMap) != has(self.secret)", "set exactly one of configMap, secret")
        )
    }

    config_map: ObjectName | None = field("A ConfigMap in the Appliance's namespace.", default=None)
    secret: ObjectName | None = field("A Secret in the Appliance's namespace.", default=None)
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = field(
        "The key holding the PEM certificates.", default="ca.crt"
    )


class ApplianceSpec(ApiModel):
    """Desired state of an appliance."""

    source: ApplianceSource = field("Where the OVA/OVF comes from.", update="immutable")
    storage_pool: Name = field("StoragePool where the base images land.", update="immutable")
    max_size: Quantity = field(
        "Largest download and largest converted disk accepted (protects against sizes that lie).",
        default="20Gi",
        update="live",
    )
    shared_with: SharedWith = field(
        "Namespaces besides its own whose VMs may be made from this appliance (an appliance catalogue). "
        "Default: its own namespace only.",
        default_factory=SharedWith,
        update="live",
    )
    require_signature: bool = field(
        "Refuse the package (Failed, SignatureNotTrusted) unless its .cert signature chains to a trusted CA: "
        "this trustBundle's or the operator's cluster-wide bundle. A signature that does not verify is "
        "refused whatever this says.",
        default=False,
        update="live",
    )
    trust_bundle: TrustBundleRef | None = field(
        "CA certificates, besides the operator's cluster-wide bundle, trusted to sign this package.",
        default=None,
        update="live",
    )


class ApplianceDisk(ApiModel):
    """A disk of a virtual system."""

    id: ShortText = field("The OVF disk id.")
    capacity: Quantity | None = field("Virtual size.", default=None)
    format: ShortText | None = field("Source format (vmdk streamOptimized, raw, qcow2 …).", default=None)
    file: ShortText | None = field("The file in the package.", default=None)
    volume: ShortText | None = field("Base volume in the pool.", default=None)
    bus: Literal["ide", "scsi", "sata", "virtio"] | None = field(
        "Controller the descriptor attaches it to.", default=None
    )


class ApplianceNic(ApiModel):
    """A NIC of a virtual system."""

    network: ShortText = field("The OVF network it connects to.")
    model: ShortText | None = field("Adapter model (e1000, vmxnet3, virtio …).", default=None)


class VirtualSystem(ApiModel):
    """The hardware of one virtual system of the appliance."""

    id: ShortText = field("The VirtualSystem id.")
    name: ShortText | None = field("Display name.", default=None)
    os: ShortText | None = field("Operating system (OperatingSystemSection).", default=None)
    cpus: int | None = field("Virtual CPUs.", default=None, ge=1)
    memory: Quantity | None = field("Memory.", default=None)
    firmware: Literal["BIOS", "UEFI"] | None = field("Firmware.", default=None)
    disks: list[ApplianceDisk] = field("Disks.", default_factory=list, extra=list_map("id"))
    nics: list[ApplianceNic] = field("NICs.", default_factory=list)


class DeploymentOption(ApiModel):
    """A deployment option of the DeploymentOptionSection (small / medium / large …) and what it gives."""

    id: ShortText = field("The option's id; name it in a VM's fromAppliance.deploymentOption.")
    label: ShortText | None = field("Label.", default=None)
    description: Text | None = field("Description.", default=None)
    default: bool = field("Whether it is the descriptor's default.", default=False)
    virtual_systems: list[VirtualSystem] = field(
        "The hardware of each virtual system in this option.", default_factory=list, extra=list_map("id")
    )
    property_defaults: dict[ShortText, Text] = field(
        "Property defaults this option sets (ProductSection <Value ovf:configuration>).",
        default_factory=dict,
        max_length=128,
    )


class ApplianceProperty(ApiModel):
    """A ProductSection property a VM may set."""

    key: ShortText = field("Property key.")
    type: ShortText = field("OVF type (string, boolean, uint32 …).", default="string")
    default: Text | None = field("Default value.", default=None)
    user_configurable: bool = field("Whether a VM may set it.", default=False)
    label: ShortText | None = field("Label.", default=None)
    description: Text | None = field("Description.", default=None)


class ApplianceNetwork(ApiModel):
    """A network of the NetworkSection."""

    name: ShortText = field("Network name; map it to a VirtualSwitch with networkMapping.")
    description: Text | None = field("Description.", default=None)


class StartupEntry(ApiModel):
    """StartupSection entry of a vApp: members start in order and stop in reverse order."""

    id: ShortText = field("Virtual system id.")
    order: int = field("Start order (lower first; members stop in reverse order).", default=0)
    start_delay: int = field("Seconds to wait after starting.", default=0, ge=0)
    stop_delay: int = field(
        "With stopAction guestShutdown: seconds the guest may take to shut down before it is forced off "
        "(0: the VM's terminationGracePeriodSeconds).",
        default=0,
        ge=0,
    )
    stop_action: Literal["powerOff", "guestShutdown", "none"] = field(
        "How the member stops: powerOff (forced off at once), guestShutdown (ACPI shutdown) or none (the "
        "VM's normal stop).",
        default="powerOff",
    )


class FileChecksum(ApiModel):
    """A manifest entry that was verified."""

    file: ShortText = field("File in the package.")
    algorithm: Literal["SHA1", "SHA256", "SHA512"] = field("Digest algorithm.")
    digest: Annotated[str, StringConstraints(max_length=128)] = field("Hex digest.")


class ApplianceProgress(ApiModel):
    """Bytes processed in the current phase."""

    bytes_done: int = field("Bytes done.", default=0, ge=0)
    bytes_total: int | None = field("Bytes in all (when known).", default=None, ge=0)


class ApplianceSignature(ApiModel):
    """What the package's .cert proves."""

    state: Literal["Trusted", "Untrusted", "Unsigned"] = field(
        "Trusted: the signature verifies and the signer's certificate chains to a trusted CA and is valid; "
        "Untrusted: it verifies but is not vouched for (message says why); Unsigned: no .cert."
    )
    subject: ShortText | None = field("The signer's certificate subject (RFC 4514).", default=None)
    issuer: ShortText | None = field("The signer's certificate issuer (RFC 4514).", default=None)
    not_after: ShortText | None = field("When the signer's certificate expires (RFC 3339).", default=None)
    message: Text | None = field("Why it is not trusted.", default=None)


class ApplianceStatus(ApiModel):
    """Observed state of an appliance."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    phase: Literal["Pending", "Downloading", "Verifying", "Converting", "Ready", "Failed"] | None = field(
        "Import phase.", default=None
    )
    progress: ApplianceProgress | None = field("Progress of the current phase.", default=None)
    ovf_version: ShortText | None = field("OVF version of the descriptor (1.x or 2.x).", default=None)
    virtual_systems: list[VirtualSystem] = field(
        "Parsed virtual systems, with the hardware of the default deployment option.",
        default_factory=list,
        extra=list_map("id"),
    )
    deployment_options: list[DeploymentOption] = field(
        "DeploymentOptionSection: the options a VM may choose, each with its hardware.",
        default_factory=list,
        extra=list_map("id"),
        max_length=32,
    )
    properties: list[ApplianceProperty] = field(
        "ProductSection properties.", default_factory=list, extra=list_map("key")
    )
    networks: list[ApplianceNetwork] = field("NetworkSection networks.", default_factory=list, extra=list_map("name"))
    startup: list[StartupEntry] = field("StartupSection of a vApp.", default_factory=list, extra=list_map("id"))
    checksums: list[FileChecksum] = field("Verified manifest entries.", default_factory=list, extra=list_map("file"))
    hosts: list[Name] = field(
        "Hosts whose copy of the pool holds the base images (a VM from the appliance runs on one of them).",
        default_factory=list,
        max_length=1024,
    )
    message: Text | None = field("What the import is doing or what went wrong.", default=None)
    signature: ApplianceSignature | None = field(
        "The package's signature (.cert), checked after the manifest.", default=None
    )


class Appliance(Resource):
    """A virtual appliance from an OVF/OVA package: parsed, verified, its disks as base images."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="Appliance",
        plural="appliances",
        short_names=("appliance",),
        scope="Namespaced",
        printer_columns=(
            ready_column(),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Pool", ".spec.storagePool"),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "Appliance"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: ApplianceSpec = field("Desired state.")
    status: ApplianceStatus | None = field("Observed state, written by the operator.", default=None)
