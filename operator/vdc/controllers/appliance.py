"""Appliance: an OVF/OVA package imported into base images — fetched, verified, converted, uploaded.

An import runs as a background task per Appliance (a work-queue worker only starts it), through the
phases Downloading, Verifying, Converting and Ready, with progress in status:

* **Downloading**: the package into the operator's work directory: an ``http(s)`` URL (resumed after
  an interruption or an operator restart; an ``.ovf`` URL fetches the files it references from
  beside it), a file on a host or a volume in a pool (both through libvirt streams).
* **Verifying**: ``spec.source.sha256`` of the whole package, then every member checked (no ``..``,
  links or devices; sizes as declared), extracted, and its digest compared with the manifest; the
  descriptor parsed (no DTDs or entities). Then the signature (``.cert``, ``vdc.ovf.signature``): one
  that does not verify over the manifest is refused; otherwise status.signature says Trusted (chains
  to the cluster-wide trust bundle or ``spec.trustBundle``), Untrusted (why) or Unsigned, and
  ``spec.requireSignature`` refuses anything but Trusted (``SignatureNotTrusted``).
* **Converting**: each disk image converted to qcow2 by ``qemu-img`` here, after checking it is a
  standalone image of the declared format (no backing file or extents pointing elsewhere), so no
  hostile image reaches a host; no larger than ``spec.maxSize``.
* **Uploading** (still Converting): each base image into the pool on every host where the pool runs,
  as ``appliance_<ns>_<name>_<uid8>_<disk>.qcow2``. Hosts that get the pool later get the images then.

Bad input (a digest that fails, a hostile archive or descriptor, a size over the limit, an unknown
format) ends in phase Failed with Stalled=True naming the file or element, and an Event; nothing is
retried until the spec changes. A lost connection or a host problem is retried with backoff.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import logging
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import libvirt
from cryptography import x509

from vdc.api.appliance import Appliance, ApplianceProgress, ApplianceSignature, ApplianceStatus, FileChecksum
from vdc.api.conditions import KstatusState, set_kstatus
from vdc.api.quantity import to_bytes
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import ObjectEvent, Watch
from vdc.controllers.appliance_plan import Description, base_volume_name, describe
from vdc.controllers.errors import DeletionWaits
from vdc.controllers.storagepool import libvirt_pool_name
from vdc.fetch import FetchFailed, FetchInterrupted, fetch
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.libvirt import storage
from vdc.libvirt.connection import ConnectionManager
from vdc.libvirt.errors import LibvirtFailure, NotFound
from vdc.ovf import convert
from vdc.ovf import manifest as ovf_manifest
from vdc.ovf.envelope import parse_envelope
from vdc.ovf.errors import OvfError, UnsafeArchive
from vdc.ovf.manifest import compare_digests, file_digest, require_verified
from vdc.ovf.ova import (
    OvfPackage,
    extract_directory,
    extract_ova,
    open_ova,
    open_ovf_directory,
    safe_member_name,
    stored_digests,
    stored_names,
)
from vdc.ovf.signature import UNSIGNED, SignatureCheck, TrustBundleError, check_signature, load_trust_bundle
from vdc.tenancy.view import TenancyView

log = logging.getLogger(__name__)

PROGRESS_WRITE_SECONDS = 2.0
CONVERTED = "converted.json"
"""In the work directory: the base images made, so adding hosts later needs no new download."""
RETRY_SECONDS = (5.0, 15.0, 30.0, 60.0, 120.0)
SIGNED = "signature"
"""In the work directory: the package's manifest and certificate as read, for the signature check."""


class ImportFailed(Exception):
    """The package cannot be imported as it is (the message says why): phase Failed, Stalled."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ImportWaiting(Exception):
    """The import cannot go on yet (no host with the pool, a host unreachable): retried later."""


def default_work_dir() -> Path:
    return Path(tempfile.gettempdir()) / "vdc-appliances"


class ApplianceController:
    def __init__(
        self, appliances: ObjectCache, pools: ObjectCache, vms: ObjectCache, connections: ConnectionManager,
        writer: KubeWriter, work_dir: Path | None = None, tenancy: TenancyView | None = None,
        trust_configmap: tuple[str, str] | None = None, cluster: ClusterView | None = None,
    ) -> None:  # fmt: skip
        self.cluster = cluster if cluster is not None else ClusterView(vms=vms, pools=pools, appliances=appliances)
        """Whose index says which VMs are made from an appliance."""
        self.tenancy = tenancy
        self.trust_configmap = trust_configmap
        """(namespace, name) of the ConfigMap whose PEM values are the cluster-wide trust bundle."""
        self.appliances = appliances
        self.pools = pools
        self.vms = vms
        self.connections = connections
        self.writer = writer
        self.work_dir = work_dir or default_work_dir()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._unsupported: dict[str, set[str]] = {}
        """uid -> hosts whose libvirt cannot take uploads (e.g. the test driver): not retried."""

    # --- reconcile: start (or not) an import ---------------------------------------------------
    async def reconcile(self, key: Key) -> float | None:
        body = self.appliances.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        uid = str(body["metadata"]["uid"])
        running = self._tasks.get(uid)
        if running is not None and not running.done():
            return None
        status = ApplianceStatus.model_validate(body.get("status") or {})
        generation = body["metadata"].get("generation")
        current = status.observed_generation == generation
        if current and status.phase == "Failed" and _ready_reason(status) != "AccessDenied":
            return None  # bad input: only a new spec helps (access may be granted meanwhile: looked at again)
        missing = self.pool_hosts(body) - set(status.hosts) - self._unsupported.get(uid, set())
        if current and status.phase == "Ready" and not missing:
            return None
        self._tasks[uid] = asyncio.create_task(self._import(key, uid), name=f"appliance-import-{key[0]}/{key[1]}")
        return None

    def pool_hosts(self, body: dict[str, Any]) -> set[str]:
        """Hosts where the appliance's pool runs (where base images can go)."""
        pool = self.pools.get(("", body["spec"]["storagePool"]))
        return {h["host"] for h in ((pool or {}).get("status") or {}).get("hosts", []) if h.get("state") == "Running"}

    def work_for(self, namespace: str, name: str, uid: str) -> Path:
        return self.work_dir / namespace / f"{name}-{uid[:8]}"

    # --- the import ----------------------------------------------------------------------------
    async def _import(self, key: Key, uid: str) -> None:
        attempt = 0
        while True:
            body = self.appliances.get(key)
            if body is None or body["metadata"].get("deletionTimestamp") or str(body["metadata"]["uid"]) != uid:
                return
            report = _Reporter(self, key)
            try:
                await self._run(body, report)
                return
            except ImportFailed as exc:
                await report.failed(exc.reason, str(exc))
                return
            except (FetchInterrupted, ImportWaiting, LibvirtFailure) as exc:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                attempt += 1
                await report.waiting(f"{exc}; trying again in {int(delay)}s")
                await asyncio.sleep(delay)
            except Exception as exc:  # a bug must not leave the appliance silently stuck
                log.exception("appliance %s/%s: import failed", *key)
                await report.failed("ImportError", f"unexpected error: {exc}")
                return

    async def _run(self, body: dict[str, Any], report: _Reporter) -> None:
        appliance = Appliance.model_validate(body)
        refusals = self.tenancy.appliance_refusals(appliance) if self.tenancy is not None else []
        if refusals:  # before anything is fetched or uploaded
            raise ImportFailed("AccessDenied", "; ".join(refusals))
        meta = appliance.metadata
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        work = self.work_for(namespace, name, uid)
        work.mkdir(parents=True, exist_ok=True)
        max_bytes = to_bytes(appliance.spec.max_size)
        hosts = self.pool_hosts(body)
        if not hosts:
            raise ImportWaiting(f"StoragePool {appliance.spec.storage_pool} runs on no Ready host yet")

        status = ApplianceStatus.model_validate(body.get("status") or {})
        images = _converted(work) if status.virtual_systems and (work / SIGNED / "signed.json").is_file() else None
        if images is None:
            images = await self._prepare(appliance, work, max_bytes, report)
        elif status.signature is None or status.observed_generation != body["metadata"].get("generation"):
            await self._signature(appliance, work, report)  # the trust policy may have changed

        done: set[str] = set(status.hosts) & hosts
        missing = sorted(hosts - done - self._unsupported.get(uid, set()))
        count = report.counter(sum(p.stat().st_size for p in images.values()) * len(missing))
        failures: dict[str, str] = {}
        for host in missing:
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                failures[host] = "unreachable"
                continue
            try:
                for volume, path in images.items():
                    if status.phase != "Ready":  # a Ready appliance stays Ready while a new host gets its images
                        await report.phase("Converting", f"uploading {volume} to host {host}")
                    await conn.call(
                        functools.partial(
                            storage.upload_volume_file,
                            pool=libvirt_pool_name(appliance.spec.storage_pool),
                            name=volume,
                            path=path,
                            progress=count,
                        )
                    )
            except LibvirtFailure as exc:
                if exc.code == libvirt.VIR_ERR_NO_SUPPORT:  # e.g. the test driver: never
                    self._unsupported.setdefault(uid, set()).add(host)
                failures[host] = str(exc)
                continue
            done.add(host)
            await report.hosts(sorted(done))
        problems = "; ".join(f"{h}: {m}" for h, m in sorted(failures.items()))
        if not done:
            raise ImportWaiting(f"no host took the base images ({problems or 'none has the pool'})")
        await report.ready(sorted(done), problems)

    async def _prepare(self, appliance: Appliance, work: Path, max_bytes: int, report: _Reporter) -> dict[str, Path]:
        """Fetch, verify, describe (in status) and convert: base volume name -> its qcow2 image here."""
        meta = appliance.metadata
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        fetched = await self._fetch(appliance, work, max_bytes, report)
        await report.phase("Verifying", "checking the package against its manifest")
        extracted_dir = work / "extracted"
        package, files, checksums = await asyncio.to_thread(
            _verify, fetched, extracted_dir, max_bytes, appliance.spec.source.sha256, report
        )
        try:
            await asyncio.to_thread(_keep_signed_files, package, work / SIGNED)
        except OvfError as exc:
            raise ImportFailed(type(exc).__name__, str(exc)) from None
        await self._signature(appliance, work, report)
        volumes = {
            disk.disk_id: base_volume_name(namespace, name, uid, disk.disk_id) for disk in package.envelope.disks
        }
        try:  # summarising the hardware is where a descriptor's items are checked against each other
            description = describe(package.envelope, volumes)
        except OvfError as exc:
            raise ImportFailed(type(exc).__name__, str(exc)) from None
        await report.describe(description, checksums)

        await report.phase("Converting", "converting disk images to qcow2")
        images: dict[str, Path] = {}
        for image in description.images:
            source = files.get(image.file)
            if source is None:
                raise ImportFailed("MissingFile", f"disk {image.disk_id}: file {image.file} is not in the package")
            target = work / "images" / volumes[image.disk_id]
            await asyncio.to_thread(_convert, source, image.format, target, max_bytes)
            images[volumes[image.disk_id]] = target
        (work / "images").mkdir(parents=True, exist_ok=True)
        (work / "images" / CONVERTED).write_text(json.dumps({v: str(p) for v, p in images.items()}))
        shutil.rmtree(extracted_dir, ignore_errors=True)  # the qcow2 images are what is kept
        return images

    async def _fetch(self, appliance: Appliance, work: Path, max_bytes: int, report: _Reporter) -> Path:
        """The package in ``work``: an ``.ova`` file, or an ``.ovf`` with its files beside it."""
        source = appliance.spec.source
        await report.phase("Downloading", "fetching the package")
        if source.url is not None:
            path = urllib.parse.urlparse(source.url).path
            if path.lower().endswith(".ovf"):
                return await self._fetch_ovf(source.url, work / "package", max_bytes, report)
            target = work / "package.ova"
            await asyncio.to_thread(_fetch_file, source.url, target, max_bytes, report.progress_sync)
            return target
        target = work / "package.ova"
        if source.host_path is not None:
            hp = source.host_path
            if not hp.path.lower().endswith(".ova"):
                raise ImportFailed("UnsupportedSource", f"hostPath {hp.path}: only an .ova file can come from a host")
            conn = self.connections.get(hp.host)
            if conn is None or not conn.connected:
                raise ImportWaiting(f"host {hp.host} is unreachable")
            try:
                await conn.call(functools.partial(storage.download_host_file, path=hp.path, dest=target,
                                                  progress=report.counter(None)))  # fmt: skip
            except NotFound as exc:
                raise ImportFailed("SourceNotFound", f"host {hp.host}: {exc}") from None
            return target
        assert source.volume is not None  # admission: exactly one source
        vol = source.volume
        for host in sorted(self.pool_hosts({"spec": {"storagePool": vol.pool}})):
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                continue
            try:
                download = functools.partial(
                    storage.download_pool_volume, pool=libvirt_pool_name(vol.pool), name=vol.name, dest=target,
                    progress=report.counter(None),
                )  # fmt: skip
                await conn.call(download)
            except NotFound:
                continue
            return target
        raise ImportWaiting(f"volume {vol.name} is in pool {vol.pool} on no reachable host")

    async def _fetch_ovf(self, url: str, directory: Path, max_bytes: int, report: _Reporter) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor_name = safe_member_name(urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]))
        descriptor = directory / descriptor_name
        await asyncio.to_thread(_fetch_file, url, descriptor, 16 << 20, report.progress_sync)
        try:
            envelope = parse_envelope(descriptor.read_bytes())
            names = [n for ref in envelope.references if not ref.is_external for n in stored_names(ref)]  # chunks
        except OvfError as exc:
            raise ImportFailed(type(exc).__name__, f"{descriptor_name}: {exc}") from None
        stem = descriptor_name.rsplit(".", 1)[0]
        for name in names:
            safe = safe_member_name(name)
            await asyncio.to_thread(_fetch_file, urllib.parse.urljoin(url, safe), directory / safe, max_bytes,
                                    report.progress_sync)  # fmt: skip
        for companion in (f"{stem}.mf", f"{stem}.cert"):
            try:
                await asyncio.to_thread(_fetch_file, urllib.parse.urljoin(url, companion), directory / companion,
                                        1 << 20, report.progress_sync)  # fmt: skip
            except ImportFailed:
                (directory / companion).unlink(missing_ok=True)  # optional: none published
        return descriptor

    # --- signature -----------------------------------------------------------------------------
    async def _signature(self, appliance: Appliance, work: Path, report: _Reporter) -> SignatureCheck:
        """Check the kept manifest and certificate against the trust bundles now; status.signature, and
        ImportFailed for a signature that does not verify or one ``spec.requireSignature`` refuses."""
        anchors, problems = await self._trust_anchors(appliance)
        try:
            result = await asyncio.to_thread(_check_signed_files, work / SIGNED, anchors)
        except OvfError as exc:
            await report.signature(None)
            raise ImportFailed(type(exc).__name__, str(exc)) from None
        if problems and result.state == "Untrusted":
            result = dataclasses.replace(result, reason=f"{result.reason} ({'; '.join(problems)})")
        await report.signature(result)
        if appliance.spec.require_signature and not result.trusted:
            what = "the package is not signed" if result.state == "Unsigned" else "the signature is not trusted"
            raise ImportFailed("SignatureNotTrusted", f"spec.requireSignature is set and {what}: {result.message}")
        return result

    async def _trust_anchors(self, appliance: Appliance) -> tuple[list[x509.Certificate], list[str]]:
        """The CA certificates of the cluster-wide bundle and of ``spec.trustBundle`` (a ConfigMap or Secret
        of the Appliance's own namespace: the reference has no namespace), and what could not be read."""
        sources: list[tuple[str, str, str, str | None]] = []  # kind, namespace, name, key (None: every key)
        if self.trust_configmap is not None:
            sources.append(("ConfigMap", *self.trust_configmap, None))
        ref = appliance.spec.trust_bundle
        if ref is not None:
            kind, ref_name = ("ConfigMap", ref.config_map) if ref.config_map else ("Secret", ref.secret)
            sources.append((kind, str(appliance.metadata["namespace"]), str(ref_name), ref.key))
        anchors: list[x509.Certificate] = []
        problems: list[str] = []
        for kind, namespace, name, key in sources:
            what = f"trust bundle {kind} {namespace}/{name}"
            try:
                if kind == "ConfigMap":
                    data = await self.writer.configmap_data(namespace, name)
                else:
                    data = {k: base64.b64decode(v).decode("utf-8", "replace")
                            for k, v in (await self.writer.secret_data(namespace, name)).items()}  # fmt: skip
            except kubernetes.client.ApiException as exc:
                problems.append(f"{what}: {exc.reason}")
                continue
            if key is not None and key not in data:
                problems.append(f"{what} has no key {key}")
                continue
            values = {key: data[key]} if key is not None else {k: v for k, v in data.items() if "CERTIFICATE" in v}
            if not values:
                problems.append(f"{what} holds no PEM certificate")
            for k, value in values.items():
                try:
                    anchors += load_trust_bundle(value, f"{what} key {k}")
                except TrustBundleError as exc:
                    problems.append(str(exc))
        return anchors, problems

    # --- deletion ------------------------------------------------------------------------------
    def users(self, namespace: str, name: str) -> list[Key]:
        """VMs made from the appliance (their disks are overlays on its base images), in any namespace."""
        return sorted(self.cluster.vms_using("Appliance", name, namespace))

    async def delete(self, body: dict[str, Any]) -> str:
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], str(meta["uid"])
        users = self.users(namespace, name)
        if users:
            own = [vm for ns, vm in users if ns == namespace]
            others = len(users) - len(own)  # other tenants' VMs are counted, not named
            listed = own[:5] + ([f"{others} in other namespaces"] if others else [])
            raise DeletionWaits(f"VMs made from appliance {name} still exist: {', '.join(listed)}")
        task = self._tasks.pop(uid, None)
        if task is not None and not task.done():
            task.cancel()
        status = ApplianceStatus.model_validate(body.get("status") or {})
        volumes = {d.volume for s in status.virtual_systems for d in s.disks if d.volume}
        pool = libvirt_pool_name(body["spec"]["storagePool"])
        for host in status.hosts:
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                continue
            for volume in volumes:
                try:
                    await conn.call(functools.partial(storage.delete_volume, pool=pool, name=volume))
                except LibvirtFailure as exc:
                    log.info("appliance %s/%s: base image %s on %s: %s", namespace, name, volume, host, exc)
        shutil.rmtree(self.work_for(namespace, name, uid), ignore_errors=True)
        return f"appliance {namespace}/{name}: {len(volumes)} base image(s) removed from {len(status.hosts)} host(s)"


def _converted(work: Path) -> dict[str, Path] | None:
    """The base images an earlier import left in ``work`` (None: none, or some are gone)."""
    try:
        images = {v: Path(p) for v, p in json.loads((work / "images" / CONVERTED).read_text()).items()}
    except (OSError, ValueError):
        return None
    return images if all(p.is_file() for p in images.values()) else None


# --- blocking steps (run in threads) -------------------------------------------------------------


def _fetch_file(url: str, target: Path, max_bytes: int, progress: Callable[[int, int | None], None]) -> None:
    try:
        fetch(url, target, max_bytes=max_bytes, progress=progress)
    except FetchFailed as exc:
        raise ImportFailed("DownloadFailed", str(exc)) from None


def _verify(
    path: Path, extracted: Path, max_bytes: int, sha256: str | None, report: _Reporter
) -> tuple[OvfPackage, dict[str, Path], list[FileChecksum]]:
    """Open and check the package; its payload files on disk, and the manifest entries verified."""
    try:
        if sha256 is not None and path.suffix == ".ova":
            actual = file_digest(path, "SHA256")
            if actual != sha256:
                raise ImportFailed(
                    "DigestMismatch", f"{path.name}: SHA-256 is {actual}, spec.source.sha256 says {sha256}"
                )
        if path.suffix == ".ova":
            package = open_ova(path, max_member_bytes=max_bytes)
            shutil.rmtree(extracted, ignore_errors=True)
            extracted.mkdir(parents=True)
            total = sum(f.size for f in package.files)
            result = extract_ova(package, extracted, max_member_bytes=max_bytes, progress=report.counter(total))
            files = {name: f.path for name, f in result.items()}
            if package.manifest is not None:
                require_verified(compare_digests(package.manifest, stored_digests(result)))
        else:
            package = open_ovf_directory(path, max_member_bytes=max_bytes)
            shutil.rmtree(extracted, ignore_errors=True)  # chunked files are joined (gzip ones inflated) there
            result = extract_directory(package, extracted, max_member_bytes=max_bytes)
            files = {name: f.path for name, f in result.items()}
            if package.manifest is not None:
                require_verified(compare_digests(package.manifest, stored_digests(result)))
    except OvfError as exc:
        raise ImportFailed(type(exc).__name__, str(exc)) from None
    checksums = [FileChecksum(file=e.file, algorithm=e.algorithm, digest=e.digest)
                 for e in (package.manifest.entries if package.manifest else ())]  # fmt: skip
    return package, files, checksums


def _keep_signed_files(package: OvfPackage, target: Path) -> None:
    """The package's manifest and certificate, as read now, into ``target`` (with ``signed.json`` naming
    them): the signature is checked over these bytes, now and whenever the trust policy changes."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    names = {"manifest": package.manifest_name, "certificate": package.certificate_name}
    for role, name in names.items():
        if name is None:
            continue
        if package.kind == "ova":
            unpacked = target / "unpacked"
            unpacked.mkdir(exist_ok=True)
            found = extract_ova(package, unpacked, names=(name,))  # sizes were checked by open_ova
            found[name].path.replace(target / role)
        else:
            shutil.copyfile(package.source / name, target / role)
    shutil.rmtree(target / "unpacked", ignore_errors=True)
    if package.manifest_name is not None:
        kept = ovf_manifest.parse_manifest((target / "manifest").read_bytes(), package.manifest_name)
        if kept != package.manifest:
            raise UnsafeArchive(f"{package.manifest_name} changed while the package was being read")
    (target / "signed.json").write_text(json.dumps(names))


def _check_signed_files(kept: Path, anchors: list[x509.Certificate]) -> SignatureCheck:
    names = json.loads((kept / "signed.json").read_text())
    if names.get("certificate") is None or names.get("manifest") is None:
        return UNSIGNED
    return check_signature(
        (kept / "certificate").read_bytes(),
        (kept / "manifest").read_bytes(),
        names["manifest"],
        trusted=anchors,
        now=datetime.now(UTC),
        cert_name=names["certificate"],
    )


def _convert(source: Path, source_format: str, target: Path, max_bytes: int) -> None:
    try:
        info = convert.image_info(source, source_format)
        convert.require_standalone(info, source)
        if info.virtual_size > max_bytes:
            raise UnsafeArchive(f"{source.name}: virtual size {info.virtual_size} is over spec.maxSize ({max_bytes})")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        convert.to_qcow2(source, source_format, target)
    except OvfError as exc:
        raise ImportFailed(type(exc).__name__, str(exc)) from None


# --- status ----------------------------------------------------------------------------------------


class _Reporter:
    """Writes an import's status: phase changes at once, progress at most every few seconds."""

    def __init__(self, controller: ApplianceController, key: Key) -> None:
        self.controller = controller
        self.key = key
        self.loop = asyncio.get_running_loop()
        self._last_progress = 0.0

    def _status(self) -> tuple[dict[str, Any], ApplianceStatus] | None:
        body = self.controller.appliances.get(self.key)
        if body is None:
            return None
        return body, ApplianceStatus.model_validate(body.get("status") or {})

    async def _write(self, change: Callable[[ApplianceStatus, int | None], ApplianceStatus]) -> bool:
        """Apply ``change`` to the cached status and write it if it differs; True when written."""
        found = self._status()
        if found is None:
            return False
        body, status = found
        generation = body["metadata"].get("generation")
        new = change(status, generation)
        new.observed_generation = generation
        wire = new.to_wire()
        if wire != (body.get("status") or {}) and (
            sent := await self.controller.writer.patch_status(Appliance.KIND, body, wire)
        ):
            self.controller.appliances.note_status(self.key, sent)
            return True
        return False

    async def _summary(
        self, phase: str | None, reason: str, message: str, *, ready: bool = False, stalled: bool = False,
        hosts: list[str] | None = None,
    ) -> bool:  # fmt: skip
        """Phase, message and the Ready/Reconciling/Stalled conditions (kstatus) in one write; True when
        written. ``phase`` None keeps the phase unless there is none yet (Pending)."""

        def change(s: ApplianceStatus, g: int | None) -> ApplianceStatus:
            s.phase = phase or s.phase or "Pending"  # type: ignore[assignment]
            s.message = message
            if phase is not None:
                s.progress = ApplianceProgress() if phase not in ("Ready", "Failed") else None
            if hosts is not None:
                s.hosts = hosts
            state: KstatusState = "Current" if ready else "Failed" if stalled else "InProgress"
            s.conditions = set_kstatus(s.conditions, state, reason, message, observed_generation=g)
            return s

        return await self._write(change)

    def counter(self, total: int | None) -> Callable[[int], None]:
        """A progress callback for a worker thread that adds up chunk lengths (see :meth:`progress_sync`)."""
        done = 0

        def count(n: int) -> None:
            nonlocal done
            done += n
            self.progress_sync(done, total)

        return count

    async def phase(self, phase: str, message: str) -> None:
        self._last_progress = time.monotonic()
        await self._summary(phase, phase, message)

    def progress_sync(self, done: int, total: int | None) -> None:
        """From a worker thread: progress, written now and then."""
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_WRITE_SECONDS:
            return
        self._last_progress = now

        def change(s: ApplianceStatus, _g: int | None) -> ApplianceStatus:
            s.progress = ApplianceProgress(bytes_done=done, bytes_total=total)
            return s

        asyncio.run_coroutine_threadsafe(self._write(change), self.loop)

    async def describe(self, d: Description, checksums: list[FileChecksum]) -> None:
        def change(s: ApplianceStatus, _g: int | None) -> ApplianceStatus:
            s.ovf_version = d.ovf_version
            s.virtual_systems = d.virtual_systems
            s.deployment_options = d.deployment_options
            s.properties = d.properties
            s.networks = d.networks
            s.startup = d.startup
            s.checksums = checksums
            return s

        await self._write(change)

    async def signature(self, result: SignatureCheck | None) -> None:
        def change(s: ApplianceStatus, _g: int | None) -> ApplianceStatus:
            s.signature = None
            if result is not None:
                expiry = result.not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if result.not_after else None
                s.signature = ApplianceSignature(state=result.state, subject=result.subject, issuer=result.issuer,
                                                 not_after=expiry, message=result.reason or None)  # fmt: skip
            return s

        await self._write(change)

    async def hosts(self, hosts: list[str]) -> None:
        def change(s: ApplianceStatus, _g: int | None) -> ApplianceStatus:
            s.hosts = hosts
            return s

        await self._write(change)

    async def ready(self, hosts: list[str], problems: str = "") -> None:
        was_ready = (self._status() or ({}, ApplianceStatus()))[1].phase == "Ready"
        message = f"base images on {len(hosts)} host(s)" + (f"; not on {problems}" if problems else "")
        if await self._summary("Ready", "Ready", message, ready=True, hosts=hosts) and not was_ready:
            await self._event("Imported", f"base images on {', '.join(hosts)}")

    async def waiting(self, message: str) -> None:
        found = self._status()
        phase = found[1].phase if found else None
        await self._summary(None if phase not in ("Ready", "Failed") else "Pending", "Waiting", message)

    async def failed(self, reason: str, message: str) -> None:
        if await self._summary("Failed", reason, message, stalled=True):
            await self._event(reason, message, warning=True)

    async def _event(self, reason: str, message: str, *, warning: bool = False) -> None:
        body = self.controller.appliances.get(self.key)
        if body is not None:
            await self.controller.writer.event(Appliance.KIND, body, reason, message, warning=warning)


def _ready_reason(status: ApplianceStatus) -> str | None:
    return next((c.reason for c in status.conditions if c.type == "Ready"), None)


def _every_appliance(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """Base images go wherever the pool runs: a Host that changed may need them (or no longer)."""
    return [key_of(body) for body in view.appliances]


def _every_appliance_on_new_labels(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """Namespace labels decide sharedWith/allowedNamespaces selectors: access may be granted or revoked."""
    return _every_appliance(view, event) if event.labels_changed else []


WATCHES = (
    Watch(kind="Host", map=_every_appliance),
    Watch(kind="Namespace", map=_every_appliance_on_new_labels),
)
