"""What every user command needs: the Kubernetes client (kubeconfig, context, namespace), our objects
read with one-line errors, and a libvirt connection to the host a VM runs on (the Host's URI and
credentials Secret, made into a URI exactly as the operator does: ``vdc.libvirt.credentials``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import libvirt

from vdc.api.appliance import Appliance
from vdc.api.host import Host
from vdc.api.meta import GROUP, VERSION
from vdc.api.storagepool import StoragePool
from vdc.api.virtualmachine import VirtualMachine
from vdc.cli.format import condition
from vdc.libvirt.credentials import CredentialsError, effective_uri
from vdc.libvirt.errors import translate

FIELD_MANAGER = "vdc-cli"
APPLY_PATCH = "application/apply-patch+yaml"


class CliError(Exception):
    """A failure the user can act on; printed as one line, exit code 1."""


def add_common_options(parser: argparse.ArgumentParser, *, namespaced: bool = True) -> None:
    """``-n/--namespace``, ``--kubeconfig`` and ``--context`` (as kubectl spells them)."""
    if namespaced:
        parser.add_argument(
            "-n",
            "--namespace",
            default=None,
            help="namespace (default: the kubeconfig context's namespace, else 'default')",
        )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current context)")


def port(text: str) -> int:
    """argparse type: a TCP port, 0-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535)")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def namespace_of_context(
    contexts: list[Mapping[str, Any]], active: Mapping[str, Any] | None, wanted: str | None
) -> str:
    """The namespace a kubeconfig context names (``wanted``, else the active one), else "default"."""
    chosen = active if wanted is None else next((c for c in contexts if c.get("name") == wanted), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def api_error(exc: kubernetes.client.ApiException, what: str) -> CliError:
    """A one-line error for an API failure about ``what`` (e.g. "virtualmachine team-a/web")."""
    message = ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = str(json.loads(exc.body or "{}").get("message") or "")
    if exc.status == 404:
        return CliError(f"{what} not found")
    if exc.status == 403:
        return CliError(f"permission denied (RBAC) on {what}: {message or exc.reason}")
    if exc.status == 401:
        return CliError(f"not authenticated to the API server: {message or exc.reason} (check --kubeconfig/--context)")
    return CliError(f"{what}: {message or exc.reason} (HTTP {exc.status})")


@dataclass
class Kube:
    """The API server, as the kubeconfig (or the in-cluster service account) says."""

    client: kubernetes.client.ApiClient
    namespace: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Kube:
        kubeconfig, context = getattr(args, "kubeconfig", None), getattr(args, "context", None)
        try:
            client = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = kubernetes.config.list_kube_config_contexts(kubeconfig)
            default_namespace = namespace_of_context(contexts, active, context)
        except (kubernetes.config.ConfigException, FileNotFoundError) as exc:
            if kubeconfig is not None or context is not None:
                raise CliError(f"kubeconfig: {exc}") from exc
            try:  # no kubeconfig: inside a pod, use its service account
                kubernetes.config.load_incluster_config()
            except kubernetes.config.ConfigException:
                raise CliError(f"no usable kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG") from exc
            client = kubernetes.client.ApiClient()
            default_namespace = "default"
        return cls(client, getattr(args, "namespace", None) or default_namespace)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.client)

    def get(self, plural: str, name: str, *, namespaced: bool, what: str) -> dict[str, Any]:
        try:
            if namespaced:
                body = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
            else:
                body = self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
        except kubernetes.client.ApiException as exc:
            raise api_error(exc, what) from exc
        return _object(body)

    def hosts(self) -> list[dict[str, Any]]:
        try:
            body = self.custom.list_cluster_custom_object(GROUP, VERSION, Host.KIND.plural)
        except kubernetes.client.ApiException as exc:
            raise api_error(exc, "hosts") from exc
        return list(_object(body).get("items") or [])

    def vm(self, name: str) -> dict[str, Any]:
        what = f"virtualmachine {self.namespace}/{name}"
        return self.get(VirtualMachine.KIND.plural, name, namespaced=True, what=what)

    def host(self, name: str) -> dict[str, Any]:
        return self.get(Host.KIND.plural, name, namespaced=False, what=f"host {name}")

    def pool(self, name: str) -> dict[str, Any]:
        return self.get(StoragePool.KIND.plural, name, namespaced=False, what=f"storagepool {name}")

    def apply_vm(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of ``patch`` (a partial VM) as field manager ``vdc-cli``, forcing conflicts."""
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualMachine", **patch}
        body["metadata"] = {**body.get("metadata", {}), "name": name, "namespace": self.namespace}
        try:
            result = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, VirtualMachine.KIND.plural, name, body,
                field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH,
            )  # fmt: skip
        except kubernetes.client.ApiException as exc:
            raise api_error(exc, f"virtualmachine {self.namespace}/{name}") from exc
        return _object(result)

    def create_appliance(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        try:
            result = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, Appliance.KIND.plural, body, field_manager=FIELD_MANAGER
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                raise CliError(f"appliance {self.namespace}/{name} already exists") from exc
            raise api_error(exc, f"appliance {self.namespace}/{name}") from exc
        return _object(result)

    def appliance_exists(self, name: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, Appliance.KIND.plural, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return False
            raise api_error(exc, f"appliance {self.namespace}/{name}") from exc
        return True

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        try:
            secret = kubernetes.client.CoreV1Api(self.client).read_namespaced_secret(name, namespace)
        except kubernetes.client.ApiException as exc:
            raise api_error(exc, f"secret {namespace}/{name}") from exc
        return {k: str(v) for k, v in (secret.data or {}).items()}


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CliError(f"unexpected answer from the API server: {type(body).__name__}")
    return body


def require_ready_host(host: Mapping[str, Any]) -> None:
    """CliError unless the Host's Ready condition is True (the message says why it is not)."""
    ready = condition(host, "Ready") or {}
    if ready.get("status") != "True":
        name = host["metadata"]["name"]
        why = ready.get("message") or ready.get("reason") or "no status yet"
        raise CliError(f"host {name} is not Ready: {why}")


def vm_host(vm: Mapping[str, Any]) -> str:
    """The host a VM was placed on (CliError while it has none)."""
    host = (vm.get("status") or {}).get("host")
    if not host:
        meta = vm["metadata"]
        raise CliError(f"vm {meta['namespace']}/{meta['name']} is not placed on a host yet")
    return str(host)


def libvirt_error(host: str, exc: libvirt.libvirtError) -> CliError:
    return CliError(f"host {host}: {translate(exc)}")


@contextlib.contextmanager
def host_connection(kube: Kube, host: Mapping[str, Any]) -> Iterator[libvirt.virConnect]:
    """An open libvirt connection to a Ready Host, with its credentials written to a private temporary
    directory that is removed when the connection is closed."""
    require_ready_host(host)
    name = str(host["metadata"]["name"])
    spec = host.get("spec") or {}
    uri = str(spec["uri"])
    ref = spec.get("credentialsSecretRef")
    data = kube.secret_data(ref["namespace"], ref["name"]) if ref else None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions; no stderr noise
    with tempfile.TemporaryDirectory(prefix="vdc-cli-") as base:
        try:
            target = effective_uri(name, uri, data, Path(base))
        except CredentialsError as exc:
            raise CliError(f"host {name}: {exc}") from exc
        try:
            conn = libvirt.open(target)
        except libvirt.libvirtError as exc:
            raise libvirt_error(name, exc) from exc
        try:
            yield conn
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


@contextlib.contextmanager
def vm_domain(
    kube: Kube, vm: Mapping[str, Any], host: Mapping[str, Any] | None = None
) -> Iterator[tuple[libvirt.virConnect, libvirt.virDomain]]:
    """The VM's host connection and its libvirt domain (the domain UUID is the object's uid). ``host``:
    the VM's Host object when the caller has read it already (else it is read here)."""
    name = vm_host(vm)
    meta = vm["metadata"]
    with host_connection(kube, host if host is not None else kube.host(name)) as conn:
        try:
            dom = conn.lookupByUUIDString(str(meta["uid"]))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise CliError(f"vm {meta['namespace']}/{meta['name']} has no domain on host {name} (yet)") from exc
            raise libvirt_error(name, exc) from exc
        yield conn, dom
