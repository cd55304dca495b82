"""Peers people use today, on the same hosts and the same N domains as the VM scale benchmark.

    .venv/bin/python bench/peers.py --hosts 3 --vms 60            # its own rig; prints a table
    .venv/bin/python bench/peers.py --hosts 10 --vms 1000 --peers ansible

- **ansible**: ``ansible-playbook`` with community.libvirt's ``virt`` module (from the ``ansible`` package
  on PyPI, the ``bench`` dependency group). One inventory host per libvirt host (``ansible_connection:
  local``, ``uri`` = the host's URI), one ``command: define`` task and one ``state: running`` task, each
  looping over that host's domains; ``--forks`` (default 10) hosts at a time.
- **terraform**: Terraform and dmacvicar/terraform-provider-libvirt, built from the Go module proxy into
  ``~/.cache/vdc/peers/`` and found through ``dev_overrides`` (no registry, no ``terraform init``); one
  ``provider "libvirt"`` alias per host and one ``libvirt_domain`` (``running = true``) per domain,
  ``terraform apply -auto-approve -parallelism=P`` (default 10). On libvirt's test driver the provider
  defines nothing (it needs a machine type from the host's capabilities and the test driver lists none),
  so the result is "not run" with that error; see bench/README.md.

Each run is timed from the tool's start to its exit (wall, and CPU of the tool and every process it
started: ``wait4``'s rusage). Then what is really defined and running on the hosts is counted with
libvirt-python (the tool's own report is not trusted), and the domains are destroyed and undefined, so
the next stage starts from empty hosts. The domain XML comes from the same code as vm_scale.py's raw
baseline (``vdc.controllers.vm_domain.domain_for`` of the same VM manifest), so every peer defines the
same domains.

From vm_scale.py (the API):

    jobs = peers.vm_scale_jobs(uris, n)               # N domains round-robin over the hosts
    res = peers.run_ansible(jobs, forks=10, work_dir=state / "ansible")
    res = peers.run_terraform(jobs, parallelism=10, work_dir=state / "terraform")
    print(peers.table([res, ...]))
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import libvirt
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = Path(os.environ.get("VDC_CACHE") or Path.home() / ".cache" / "vdc") / "peers"

TERRAFORM_VERSION = "v1.8.5"  # the newest release whose go.mod has no replace directives (`go install` works)
PROVIDER_MODULE = "github.com/dmacvicar/terraform-provider-libvirt"
PROVIDER_VERSION = "v0.8.3"  # the Go module proxy serves it here (v0.9.0 and the version list: 403)


def log(msg: str) -> None:
    print(f"[peers {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- what every peer gets and returns -------------------------------------------------------------


@dataclass(frozen=True)
class DomainJob:
    """One domain to define and start: the host's libvirt URI, the domain's name, UUID and XML."""

    uri: str
    name: str
    uuid: str
    xml: str


@dataclass
class PeerResult:
    """One peer's run. ``seconds``/``cpu_seconds`` are None when it did not run (``not_run`` says why).
    ``defined``/``running`` are counted on the hosts afterwards; ``failures`` = domains not running."""

    name: str
    seconds: float | None
    cpu_seconds: float | None
    defined: int
    running: int
    failures: int
    not_run: str | None = None
    expected: int = 0
    settings: str = ""  # forks / parallelism used
    exit_code: int | None = None
    tool_failures: int | None = None  # what the tool itself reported failed (items / resources)
    error: str | None = None  # the tool's first error line, when it failed
    log: str | None = None
    cleanup_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_run(name: str, why: str, expected: int = 0) -> PeerResult:
    return PeerResult(name, None, None, 0, 0, expected, not_run=why, expected=expected)


def make_jobs(
    uris: Sequence[str], names: Sequence[str], xml_for: Callable[[str], tuple[str, str, str]]
) -> list[DomainJob]:
    """The domains ``names`` round-robin over ``uris`` (as vm_scale.run_baseline spreads them);
    ``xml_for(name)`` returns (libvirt domain name, UUID, XML)."""
    jobs = []
    for i, name in enumerate(names):
        dom_name, dom_uuid, xml = xml_for(name)
        jobs.append(DomainJob(uris[i % len(uris)], dom_name, dom_uuid, xml))
    return jobs


def vm_scale_jobs(uris: Sequence[str], n: int, namespace: str = "bench-raw") -> list[DomainJob]:
    """The N domains vm_scale.run_baseline defines, built by the same calls (``vm_manifest``,
    ``VirtualMachine.model_validate``, ``domain_for`` with the host's domain type and the tiny guest's
    directory), with fresh UUIDs, round-robin over ``uris``."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import vm_scale  # lazily: vm_scale may import this module (it also puts operator/ on sys.path)
    from vdc.api.virtualmachine import VirtualMachine
    from vdc.controllers.vm_domain import domain_for
    from vdc.libvirt.host_facts import read_host_facts

    with contextlib.closing(libvirt.open(uris[0])) as conn:
        domain_type = vm_scale.guest_domain_type(read_host_facts(conn))

    def xml_for(name: str) -> tuple[str, str, str]:
        body = vm_scale.vm_manifest(name, namespace)
        body["metadata"]["uid"] = str(uuid.uuid4())
        vm = VirtualMachine.model_validate(body)
        config = domain_for(vm, domain_type=domain_type, host_file_dirs=(vm_scale.BOOT_DIR,))
        return config.name, config.uuid, config.to_string()

    return make_jobs(uris, vm_scale.vm_names(n), xml_for)


def by_host(jobs: Sequence[DomainJob]) -> dict[str, list[DomainJob]]:
    """Jobs grouped by URI, hosts in the order they first appear."""
    out: dict[str, list[DomainJob]] = {}
    for job in jobs:
        out.setdefault(job.uri, []).append(job)
    return out


# --- counting and cleaning up on the hosts (libvirt-python) ---------------------------------------


def _per_host(jobs: Sequence[DomainJob], fn: Callable[[libvirt.virConnect, set[str]], Any]) -> list[Any]:
    groups = by_host(jobs)

    def one(uri: str) -> Any:
        conn = libvirt.open(uri)
        try:
            return fn(conn, {j.name for j in groups[uri]})
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    with concurrent.futures.ThreadPoolExecutor(max(1, min(16, len(groups)))) as pool:
        return list(pool.map(one, groups))


def count_on_hosts(jobs: Sequence[DomainJob]) -> tuple[int, int]:
    """(defined, running) of the jobs' domains, as the hosts' libvirtds list them."""

    def count(conn: libvirt.virConnect, names: set[str]) -> tuple[int, int]:
        defined = {d.name() for d in conn.listAllDomains(0)} & names
        active = {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)} & names
        return len(defined), len(active)

    counts = _per_host(jobs, count)
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def clean_hosts(jobs: Sequence[DomainJob]) -> float:
    """Destroy and undefine the jobs' domains (by name) wherever they are; returns the seconds it took."""

    def clean(conn: libvirt.virConnect, names: set[str]) -> None:
        for dom in conn.listAllDomains(0):
            if dom.name() not in names:
                continue
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()

    t0 = time.monotonic()
    _per_host(jobs, clean)
    return time.monotonic() - t0


# --- running a tool -------------------------------------------------------------------------------


@dataclass
class ToolRun:
    seconds: float
    cpu_seconds: float
    exit_code: int
    timed_out: bool


def run_tool(cmd: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, timeout: float) -> ToolRun:
    """Run ``cmd`` with its output in ``log_path``; wall time, and CPU (user+sys) of it and every
    descendant it waited for (``wait4``'s rusage: only this child's tree, whatever else runs)."""
    timed_out = threading.Event()
    with log_path.open("wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C, SIGTERM: take the tool's whole session down with us
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ToolRun(seconds, usage.ru_utime + usage.ru_stime, proc.returncode, timed_out.is_set())


def _first_error(log_path: Path, patterns: Sequence[str]) -> str | None:
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if any(p in line for p in patterns):
                return line.strip()[:400]
    return None


def _finish(res: PeerResult, jobs: Sequence[DomainJob]) -> PeerResult:
    """Count on the hosts, then clean them."""
    res.defined, res.running = count_on_hosts(jobs)
    res.failures = len(jobs) - res.running
    res.cleanup_seconds = clean_hosts(jobs)
    left = count_on_hosts(jobs)[0]
    if left:
        res.extra["left_after_cleanup"] = left
    return res


# --- Ansible --------------------------------------------------------------------------------------

ANSIBLE_PLAYBOOK = """\
# Generated by bench/peers.py: define and start each host's domains with community.libvirt.virt.
- name: define and start the benchmark's domains
  hosts: all
  gather_facts: false
  tasks:
    - name: define
      community.libvirt.virt:
        command: define
        xml: "{{ lookup('file', item.xml) }}"
        uri: "{{ libvirt_uri }}"
      loop: "{{ vdc_domains }}"
      loop_control:
        label: "{{ item.name }}"
    - name: start
      community.libvirt.virt:
        name: "{{ item.name }}"
        state: running
        uri: "{{ libvirt_uri }}"
      loop: "{{ vdc_domains }}"
      loop_control:
        label: "{{ item.name }}"
"""


def ansible_files(jobs: Sequence[DomainJob], forks: int, work_dir: Path, python: str) -> dict[str, str]:
    """The files an Ansible run needs, relative path -> text: ansible.cfg, inventory.yml (one host per
    URI, ``ansible_connection: local``), playbook.yml and one XML file per domain (xml/<host>/<name>.xml)."""
    files: dict[str, str] = {}
    hosts: dict[str, Any] = {}
    for i, (uri, host_jobs) in enumerate(by_host(jobs).items(), start=1):
        host = f"h{i}"
        domains = []
        for job in host_jobs:
            rel = f"xml/{host}/{job.name}.xml"
            files[rel] = job.xml
            domains.append({"name": job.name, "xml": str(work_dir / rel)})
        hosts[host] = {"libvirt_uri": uri, "vdc_domains": domains}
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": python},
            "hosts": hosts,
        }
    }
    files["inventory.yml"] = yaml.safe_dump(inventory, sort_keys=False, width=1000)
    files["playbook.yml"] = ANSIBLE_PLAYBOOK
    files["ansible.cfg"] = (
        "[defaults]\n"
        f"forks = {forks}\n"
        "inventory = inventory.yml\n"
        "gathering = explicit\n"
        "host_key_checking = False\n"
        "retry_files_enabled = False\n"
        "nocolor = True\n"
        f"interpreter_python = {python}\n"
        f"local_tmp = {work_dir / 'tmp'}\n"
        "\n[connection]\n"
        "pipelining = True\n"
    )
    return files


def write_files(work_dir: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = work_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _venv_bin(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def run_ansible(
    jobs: Sequence[DomainJob], forks: int = 10, work_dir: Path | None = None, timeout: float = 3600
) -> PeerResult:
    """Define and start ``jobs`` with ansible-playbook + community.libvirt.virt (``forks`` hosts at a time),
    count on the hosts, clean up. Needs the ``bench`` dependency group (ansible, lxml)."""
    name = "ansible"
    settings = f"forks={forks}, {len(by_host(jobs))} inventory hosts, ansible_connection=local, pipelining"
    playbook_bin = _venv_bin("ansible-playbook")
    if playbook_bin is None:
        return not_run(name, "ansible-playbook not installed (uv sync --inexact --group bench)", len(jobs))
    try:
        import ansible_collections.community.libvirt  # noqa: F401
        import lxml  # noqa: F401
    except ImportError as exc:
        return not_run(name, f"{exc} (uv sync --inexact --group bench)", len(jobs))
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="vdc-peer-ansible-")).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    write_files(work_dir, ansible_files(jobs, forks, work_dir, sys.executable))
    (work_dir / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(work_dir / "ansible.cfg"),
        "ANSIBLE_HOME": str(work_dir / "home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
    }
    clean_hosts(jobs)
    log_path = work_dir / "ansible-playbook.log"
    log(f"ansible: {len(jobs)} domains on {len(by_host(jobs))} hosts, forks {forks} (log {log_path})")
    run = run_tool([playbook_bin, "playbook.yml"], cwd=work_dir, env=env, log_path=log_path, timeout=timeout)
    text = log_path.read_text(errors="replace")
    res = PeerResult(
        name,
        run.seconds,
        run.cpu_seconds,
        0,
        0,
        0,
        expected=len(jobs),
        settings=settings,
        exit_code=run.exit_code,
        tool_failures=ansible_failed_items(text),
        log=str(log_path),
    )
    if run.timed_out:
        res.error = f"killed after {timeout:.0f}s"
    elif run.exit_code != 0:
        res.error = _first_error(log_path, ("fatal:", "failed:", "ERROR!", "[ERROR]"))
    return _finish(res, jobs)


def ansible_failed_items(output: str) -> int:
    """Loop items and tasks the default callback reported failed (``failed: [host] (item=...)`` lines,
    and ``fatal: [host]`` lines of tasks without items)."""
    items = len(re.findall(r"^failed: \[", output, re.M))
    fatal = [line for line in re.findall(r"^fatal: \[.*$", output, re.M) if "item" not in line.lower()]
    return items + (len(fatal) if items == 0 else 0)


# --- Terraform ------------------------------------------------------------------------------------


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why (printed as "not run: <why>")."""


@dataclass(frozen=True)
class DomainSpec:
    """What a domain XML of ours says, in the terms of terraform-provider-libvirt's libvirt_domain."""

    name: str
    type: str
    vcpu: int
    memory_mib: int
    kernel: str
    initrd: str
    cmdline: str
    serial_console: bool


def domain_spec(job: DomainJob) -> DomainSpec:
    """Read the domain's name, type, vCPUs, memory, kernel boot and serial console from its XML."""
    root = ET.fromstring(job.xml)
    mem = root.find("memory")
    assert mem is not None and mem.text is not None
    unit = (mem.get("unit") or "KiB").lower()
    scale = {"b": 1, "bytes": 1, "kib": 2**10, "k": 2**10, "mib": 2**20, "m": 2**20, "gib": 2**30, "g": 2**30}[unit]
    return DomainSpec(
        name=root.findtext("name") or job.name,
        type=root.get("type") or "kvm",
        vcpu=int(root.findtext("vcpu") or 1),
        memory_mib=int(mem.text) * scale // 2**20,
        kernel=root.findtext("os/kernel") or "",
        initrd=root.findtext("os/initrd") or "",
        cmdline=root.findtext("os/cmdline") or "",
        serial_console=root.find("devices/serial") is not None,
    )


def _hcl(value: str) -> str:
    """An HCL string literal (JSON escapes, plus HCL's template sequences)."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def _hcl_cmdline(cmdline: str) -> str:
    """The provider's ``cmdline``: a list of maps, ``key = value`` per argument, ``_`` for a bare word."""
    items = []
    for word in cmdline.split():
        key, eq, value = word.partition("=")
        items.append(f"{{ {_hcl(key)} = {_hcl(value)} }}" if eq else f"{{ _ = {_hcl(word)} }}")
    return "[" + ", ".join(items) + "]"


def terraform_config(jobs: Sequence[DomainJob]) -> str:
    """main.tf: one ``provider "libvirt"`` alias per host URI (h1..hH), one ``libvirt_domain`` per job
    (``running = true``, the job's name, type, vCPUs, memory, kernel, initrd, cmdline, a serial pty console)."""
    out = [
        "# Generated by bench/peers.py.",
        "terraform {",
        "  required_providers {",
        '    libvirt = { source = "dmacvicar/libvirt" }',
        "  }",
        "}",
        "",
    ]
    aliases = {}
    for i, uri in enumerate(by_host(jobs), start=1):
        aliases[uri] = f"h{i}"
        out += ['provider "libvirt" {', f'  alias = "h{i}"', f"  uri   = {_hcl(uri)}", "}", ""]
    for i, job in enumerate(jobs, start=1):
        spec = domain_spec(job)
        out += [
            f'resource "libvirt_domain" "d{i}" {{',
            f"  provider = libvirt.{aliases[job.uri]}",
            f"  name     = {_hcl(spec.name)}",
            f"  type     = {_hcl(spec.type)}",
            f"  vcpu     = {spec.vcpu}",
            f"  memory   = {spec.memory_mib}",
            "  running  = true",
        ]
        if spec.kernel:
            out.append(f"  kernel   = {_hcl(spec.kernel)}")
        if spec.initrd:
            out.append(f"  initrd   = {_hcl(spec.initrd)}")
        if spec.cmdline:
            out.append(f"  cmdline  = {_hcl_cmdline(spec.cmdline)}")
        if spec.serial_console:
            out += [
                "  console {",
                '    type        = "pty"',
                '    target_port = "0"',
                '    target_type = "serial"',
                "  }",
            ]
        out += ["}", ""]
    return "\n".join(out)


def terraform_cli_config(provider_dir: Path) -> str:
    """TF_CLI_CONFIG_FILE: dev_overrides point dmacvicar/libvirt at the locally built provider, so
    neither ``terraform init`` nor a registry is needed."""
    return (
        "provider_installation {\n"
        "  dev_overrides {\n"
        f"    {_hcl('registry.terraform.io/dmacvicar/libvirt')} = {_hcl(str(provider_dir))}\n"
        "  }\n"
        "}\n"
        "disable_checkpoint = true\n"
    )


def _go_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", **extra}


def _run_build(cmd: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, what: str) -> None:
    log(f"building {what}: {' '.join(cmd)} (log {log_path}; minutes on 2 cores)")
    with log_path.open("ab") as out:
        # niced and one package at a time: the machine is shared
        rc = subprocess.run(
            ["nice", "-n", "19", *cmd], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if rc != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise PeerUnavailable(f"building {what} failed ({rc}): {' | '.join(tail)}")


def terraform_binaries(build: bool = True) -> tuple[Path, Path]:
    """(terraform, the provider's directory for dev_overrides), built into ~/.cache/vdc/peers/ from the
    Go module proxy when missing (``build``). Raises PeerUnavailable with the reason."""
    tf_dir = CACHE / f"terraform-{TERRAFORM_VERSION}"
    provider_dir = CACHE / f"terraform-provider-libvirt-{PROVIDER_VERSION}"
    terraform = tf_dir / "terraform"
    provider = provider_dir / "terraform-provider-libvirt"
    if terraform.exists() and provider.exists():
        return terraform, provider_dir
    if not build:
        raise PeerUnavailable(f"{terraform} or {provider} not built (python bench/peers.py --build-only)")
    go = shutil.which("go")
    if go is None:
        raise PeerUnavailable("no Go toolchain (go) on PATH to build terraform and the provider")
    CACHE.mkdir(parents=True, exist_ok=True)
    build_log = CACHE / "build.log"
    if not terraform.exists():
        tf_dir.mkdir(parents=True, exist_ok=True)
        cmd = [go, "install", "-p", "1", f"github.com/hashicorp/terraform@{TERRAFORM_VERSION}"]
        _run_build(cmd, cwd=CACHE, env=_go_env({"GOBIN": str(tf_dir)}), log_path=build_log, what="terraform")
    if not provider.exists():
        # `go install module@version` refuses a module whose go.mod has replace directives (the provider's
        # has three): download its source from the module proxy and build it as the main module instead.
        dl = subprocess.run(
            [go, "mod", "download", "-json", f"{PROVIDER_MODULE}@{PROVIDER_VERSION}"],
            cwd=CACHE,
            env=_go_env({}),
            capture_output=True,
            text=True,
        )
        if dl.returncode != 0:
            raise PeerUnavailable(f"go mod download {PROVIDER_MODULE}@{PROVIDER_VERSION}: {dl.stdout}{dl.stderr}")
        src = CACHE / "src" / f"terraform-provider-libvirt-{PROVIDER_VERSION}"
        if not src.exists():
            shutil.copytree(json.loads(dl.stdout)["Dir"], src)
            for path in [src, *src.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
        provider_dir.mkdir(parents=True, exist_ok=True)
        cmd = [go, "build", "-p", "1", "-o", str(provider), "."]
        _run_build(cmd, cwd=src, env=_go_env({}), log_path=build_log, what="terraform-provider-libvirt")
    return terraform, provider_dir


def terraform_version(terraform: Path) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        out = subprocess.run([str(terraform), "version", "-json"], capture_output=True, text=True, timeout=60)
        return str(json.loads(out.stdout).get("terraform_version", "?"))
    return "?"


def _terraform_apply(
    terraform: Path, provider_dir: Path, jobs: Sequence[DomainJob], parallelism: int, work_dir: Path, timeout: float
) -> tuple[ToolRun, Path]:
    work_dir.mkdir(parents=True, exist_ok=True)
    write_files(work_dir, {"main.tf": terraform_config(jobs), "terraformrc": terraform_cli_config(provider_dir)})
    for stale in ("terraform.tfstate", "terraform.tfstate.backup"):
        (work_dir / stale).unlink(missing_ok=True)
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(work_dir / "terraformrc"),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "TF_DATA_DIR": str(work_dir / ".terraform"),
    }
    log_path = work_dir / "terraform-apply.log"
    cmd = [str(terraform), "apply", "-auto-approve", "-input=false", "-no-color", f"-parallelism={parallelism}"]
    return run_tool(cmd, cwd=work_dir, env=env, log_path=log_path, timeout=timeout), log_path


def _terraform_error(log_path: Path) -> tuple[str | None, str | None]:
    """(first ``Error:`` line, it with the lines that follow it)."""
    text = log_path.read_text(errors="replace")
    detail = re.search(r"^Error: .*\n(?:.*\n){0,6}", text, re.M)
    return _first_error(log_path, ("Error: ",)), detail.group(0).strip() if detail else None


def run_terraform(
    jobs: Sequence[DomainJob],
    parallelism: int = 10,
    work_dir: Path | None = None,
    timeout: float = 3600,
    build: bool = True,
) -> PeerResult:
    """``terraform apply -auto-approve -parallelism=P`` of one libvirt_domain per job (dev_overrides, no
    init), count on the hosts, clean up. Builds terraform and the provider first when missing (``build``).

    A probe applies the first domain alone first (untimed): when it defines nothing, the result is
    ``not_run`` with the provider's error, without N failing resources (terraform takes minutes to
    print a thousand of them)."""
    name = "terraform"
    try:
        terraform, provider_dir = terraform_binaries(build)
    except PeerUnavailable as exc:
        return not_run(name, str(exc), len(jobs))
    settings = (
        f"-parallelism={parallelism}, terraform {TERRAFORM_VERSION}, dmacvicar/libvirt {PROVIDER_VERSION}, "
        f"{len(by_host(jobs))} provider aliases, dev_overrides (no init)"
    )
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="vdc-peer-terraform-")).resolve()
    clean_hosts(jobs)

    probe_jobs = list(jobs[:1])
    probe, probe_log = _terraform_apply(terraform, provider_dir, probe_jobs, 1, work_dir / "probe", min(timeout, 300))
    probe_defined = count_on_hosts(probe_jobs)[0]
    clean_hosts(probe_jobs)
    if probe.exit_code != 0 and probe_defined == 0:
        error, detail = _terraform_error(probe_log)
        why = f"terraform-provider-libvirt {PROVIDER_VERSION} defined no domain: {error or 'apply failed'}"
        if error and "achine type" in error:
            why += f" ({NO_MACHINE_TYPE})"
        res = not_run(name, why, len(jobs))
        res.settings, res.exit_code, res.log, res.error = settings, probe.exit_code, str(probe_log), error
        res.extra.update(
            probe_seconds=probe.seconds, first_error=detail, terraform_version=terraform_version(terraform)
        )
        return res

    log(f"terraform: {len(jobs)} domains on {len(by_host(jobs))} hosts, -parallelism={parallelism} (in {work_dir})")
    run, log_path = _terraform_apply(terraform, provider_dir, jobs, parallelism, work_dir, timeout)
    text = log_path.read_text(errors="replace")
    res = PeerResult(
        name,
        run.seconds,
        run.cpu_seconds,
        0,
        0,
        0,
        expected=len(jobs),
        settings=settings,
        exit_code=run.exit_code,
        tool_failures=len(re.findall(r"^Error: ", text, re.M)),
        log=str(log_path),
    )
    res.extra["terraform_version"] = terraform_version(terraform)
    if m := re.search(r"Apply complete! Resources: (\d+) added", text):
        res.extra["terraform_added"] = int(m.group(1))
    if run.timed_out:
        res.error = f"killed after {timeout:.0f}s"
    elif run.exit_code != 0:
        res.error, res.extra["first_error"] = _terraform_error(log_path)
    return _finish(res, jobs)


NO_MACHINE_TYPE = (
    "the provider takes the machine type from the host's capabilities and libvirt's test driver lists none "
    'for its only guest, hvm/i686; with machine = "q35" it fails with \'Cannot find machine type q35 for '
    "hvm/i686', with arch = \"x86_64\" with 'Could not find any guests for architecture type hvm/x86_64'"
)


# --- report ---------------------------------------------------------------------------------------


def table(results: Sequence[PeerResult], floor_seconds: float | None = None) -> str:
    """One line per peer: wall, CPU, defined/running of N, failures, settings (or why it did not run)."""
    lines = []
    for r in results:
        if r.not_run is not None:
            lines.append(f"{r.name:<10} not run: {r.not_run}")
            continue
        ratio = ""
        if floor_seconds and r.seconds is not None:
            ratio = f"  {r.seconds / floor_seconds:6.1f}x raw"
        cpu = f"{r.cpu_seconds:8.1f} s CPU" if r.cpu_seconds is not None else "     n/a CPU"
        lines.append(
            f"{r.name:<10} {r.seconds:8.2f} s  {cpu}  defined {r.defined}/{r.expected}"
            f"  running {r.running}/{r.expected}  failures {r.failures}{ratio}  ({r.settings})"
        )
        if r.error:
            lines.append(f"{'':<10} error: {r.error}")
    return "\n".join(lines)


# --- standalone -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=10, help="libvirt test-driver hosts (default %(default)s)")
    p.add_argument("--vms", type=int, default=1000, help="domains (default %(default)s)")
    p.add_argument("--peers", default="ansible,terraform", help="comma-separated (default %(default)s)")
    p.add_argument("--forks", type=int, default=10, help="ansible forks (default %(default)s)")
    p.add_argument("--parallelism", type=int, default=10, help="terraform -parallelism (default %(default)s)")
    p.add_argument("--timeout", type=float, default=3600, help="give up on a peer after this (default %(default)s s)")
    p.add_argument("--state", type=Path, default=None, help="state dir (default: a temp dir, removed after success)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument(
        "--no-build", action="store_true", help="do not build terraform and the provider when missing (not run)"
    )
    p.add_argument("--build-only", action="store_true", help="build terraform and the provider, then exit")
    args = p.parse_args(argv)
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    unknown = set(args.peers) - {"ansible", "terraform"}
    if unknown:
        p.error(f"unknown peers {sorted(unknown)}")
    if not 1 <= args.hosts <= 240 or args.vms < 1:
        p.error("--hosts must be 1..240 and --vms at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.build_only:
        try:
            terraform, provider_dir = terraform_binaries(build=True)
        except PeerUnavailable as exc:
            log(f"terraform: {exc}")
            return 1
        log(f"terraform {terraform_version(terraform)}: {terraform}; provider: {provider_dir}")
        return 0
    if os.geteuid() != 0:
        log("must run as root (the libvirt hosts use namespaces and bind mounts)")
        return 2
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import vm_scale

    temp_state = args.state is None
    state = Path(tempfile.mkdtemp(prefix="vdc-peers-")) if temp_state else args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    rig = vm_scale.Rig(state=state, keep=False, prefix=f"vdcp-{secrets.token_hex(3)}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ok = False
    results: list[PeerResult] = []
    floor: float | None = None
    try:
        rig.start_hosts(args.hosts)
        uris = [h.test_uri for h in rig.hosts]
        log(f"raw libvirt floor: {args.vms} domains over {args.hosts} hosts")
        base = vm_scale.run_baseline(uris, args.vms)
        floor = base.seconds
        jobs = vm_scale_jobs(uris, args.vms)
        for peer in args.peers:
            if peer == "ansible":
                res = run_ansible(jobs, forks=args.forks, work_dir=state / "ansible", timeout=args.timeout)
            else:
                res = run_terraform(
                    jobs,
                    parallelism=args.parallelism,
                    work_dir=state / "terraform",
                    timeout=args.timeout,
                    build=not args.no_build,
                )
            log(table([res], floor))
            results.append(res)
        ok = all(r.not_run is None and r.failures == 0 for r in results if r.name == "ansible")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        rig.teardown()
        if temp_state and ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            log(f"state (logs) kept in {state}")
    print(f"hosts / domains                    {args.hosts} / {args.vms}")
    print(f"raw libvirt define+start (floor)   {floor:.2f} s" if floor is not None else "raw: n/a")
    print(table(results, floor))
    if args.json:
        payload = {"hosts": args.hosts, "vms": args.vms, "raw_seconds": floor, "peers": [r.as_dict() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
