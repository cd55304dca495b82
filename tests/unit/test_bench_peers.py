"""bench/peers.py's pure parts: jobs round-robin, the Ansible inventory/playbook/config it writes."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import peers

URIS = ["test+unix:///default?socket=/s/a/libvirt-sock", "test+unix:///default?socket=/s/b/libvirt-sock"]


def _xml_for(name: str) -> tuple[str, str, str]:
    return f"ns_{name}", f"00000000-0000-0000-0000-{int(name[3:]):012d}", f"<domain><name>ns_{name}</name></domain>"


def _jobs(n: int = 5) -> list[peers.DomainJob]:
    return peers.make_jobs(URIS, [f"vm-{i}" for i in range(1, n + 1)], _xml_for)


def test_jobs_go_round_robin_over_the_hosts() -> None:
    jobs = _jobs(5)
    assert [j.uri for j in jobs] == [URIS[0], URIS[1], URIS[0], URIS[1], URIS[0]]
    assert jobs[2] == peers.DomainJob(URIS[0], "ns_vm-3", "00000000-0000-0000-0000-000000000003", jobs[2].xml)
    grouped = peers.by_host(jobs)
    assert list(grouped) == URIS
    assert [j.name for j in grouped[URIS[1]]] == ["ns_vm-2", "ns_vm-4"]


def test_ansible_files_one_inventory_host_per_uri(tmp_path: Path) -> None:
    jobs = _jobs(5)
    files = peers.ansible_files(jobs, forks=7, work_dir=tmp_path, python="/venv/bin/python")
    inv = yaml.safe_load(files["inventory.yml"])
    assert inv["all"]["vars"] == {"ansible_connection": "local", "ansible_python_interpreter": "/venv/bin/python"}
    hosts = inv["all"]["hosts"]
    assert list(hosts) == ["h1", "h2"]
    assert hosts["h1"]["libvirt_uri"] == URIS[0]
    assert [d["name"] for d in hosts["h1"]["vdc_domains"]] == ["ns_vm-1", "ns_vm-3", "ns_vm-5"]
    xml_path = hosts["h2"]["vdc_domains"][0]["xml"]
    assert xml_path == str(tmp_path / "xml/h2/ns_vm-2.xml")
    assert files["xml/h2/ns_vm-2.xml"] == jobs[1].xml
    assert "forks = 7\n" in files["ansible.cfg"]
    assert "pipelining = True" in files["ansible.cfg"]


def test_ansible_playbook_defines_then_starts_each_hosts_domains() -> None:
    play = yaml.safe_load(peers.ANSIBLE_PLAYBOOK)[0]
    assert play["hosts"] == "all" and play["gather_facts"] is False
    define, start = play["tasks"]
    assert define["community.libvirt.virt"]["command"] == "define"
    assert define["community.libvirt.virt"]["uri"] == "{{ libvirt_uri }}"
    assert start["community.libvirt.virt"]["state"] == "running"
    assert define["loop"] == start["loop"] == "{{ vdc_domains }}"


def test_ansible_failed_items_counted_from_the_default_callback() -> None:
    out = (
        "changed: [h1] => (item=a)\n"
        "failed: [h1] (item=b) => {...}\n"
        "failed: [h2] (item=c) => {...}\n"
        'fatal: [h1]: FAILED! => {"msg": "One or more items failed"}\n'
    )
    assert peers.ansible_failed_items(out) == 2
    assert peers.ansible_failed_items('fatal: [h1]: FAILED! => {"msg": "boom"}\n') == 1
    assert peers.ansible_failed_items("ok: [h1]\n") == 0


def test_not_run_result_prints_why() -> None:
    res = peers.not_run("terraform", "provider cannot open test+unix URIs", expected=3)
    assert res.failures == 3 and res.seconds is None
    assert peers.table([res]) == "terraform  not run: provider cannot open test+unix URIs"


DOMAIN_XML = """<domain xmlns:vdc="https://vdc.dev/xmlns/owner/v1" type="test">
  <name>bench-raw_vm-0001</name>
  <uuid>c4db6a41-4d32-4a83-93a8-58cb0fbcd4f3</uuid>
  <memory unit="KiB">65536</memory>
  <currentMemory unit="KiB">65536</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <kernel>/boot/vmlinuz</kernel>
    <initrd>/boot/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <devices>
    <serial type="pty"><target port="0" /></serial>
  </devices>
</domain>"""


def test_domain_spec_reads_our_xml() -> None:
    job = peers.DomainJob(URIS[0], "bench-raw_vm-0001", "c4db6a41-4d32-4a83-93a8-58cb0fbcd4f3", DOMAIN_XML)
    assert peers.domain_spec(job) == peers.DomainSpec(
        name="bench-raw_vm-0001",
        type="test",
        vcpu=1,
        memory_mib=64,
        kernel="/boot/vmlinuz",
        initrd="/boot/initrd.img",
        cmdline="console=ttyS0 quiet",
        serial_console=True,
    )


def test_terraform_config_one_alias_per_host_one_domain_per_job() -> None:
    jobs = [
        peers.DomainJob(URIS[i % 2], f"bench-raw_vm-000{i + 1}", "u", DOMAIN_XML.replace("vm-0001", f"vm-000{i + 1}"))
        for i in range(3)
    ]
    tf = peers.terraform_config(jobs)
    assert tf.count('provider "libvirt" {') == 2
    assert f'  alias = "h2"\n  uri   = "{URIS[1]}"' in tf
    assert tf.count('resource "libvirt_domain"') == 3
    second = tf[tf.index('resource "libvirt_domain" "d2"') :]
    second = second[: second.index("\n}\n")]
    assert "provider = libvirt.h2" in second
    assert 'name     = "bench-raw_vm-0002"' in second
    assert 'type     = "test"' in second and "memory   = 64" in second and "running  = true" in second
    assert 'cmdline  = [{ "console" = "ttyS0" }, { _ = "quiet" }]' in second
    assert 'target_type = "serial"' in second
    assert peers._hcl("a${b}%{c}") == '"a$${b}%%{c}"'


def test_terraform_cli_config_overrides_the_provider(tmp_path: Path) -> None:
    rc = peers.terraform_cli_config(tmp_path / "prov")
    assert f'"registry.terraform.io/dmacvicar/libvirt" = "{tmp_path / "prov"}"' in rc
    assert "dev_overrides" in rc
