"""Real-world OVF descriptors (corpus/) against the facts a person read off them by hand (corpus/facts.yaml).

Each file is parsed with ``parse_envelope`` and summarised with ``summarize`` for its default deployment
option and for every option the facts list; every mismatch is reported, each naming the fact, so one run
shows all that a parser change fixed or broke. Where and how each file was obtained: corpus/SOURCES.md.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from vdc.ovf.envelope import Envelope, VirtualSystem, parse_envelope
from vdc.ovf.errors import OvfError
from vdc.ovf.hardware import HardwareSummary, default_configuration, summarize

CORPUS = Path(__file__).parent / "corpus"
FACTS: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "facts.yaml").read_text())["files"]
MiB = 1 << 20

DiskFact = tuple[str | None, int | None, str | None, str | None]
NicFact = tuple[str | None, str | None, str | None]


def _disks_expected(facts: list[dict[str, Any]]) -> Counter[DiskFact]:
    return Counter((d["id"], d["capacity"], d["file"], d["bus"]) for d in facts)


def _disks_actual(hw: HardwareSummary) -> Counter[DiskFact]:
    return Counter((d.disk_id, d.capacity_bytes, d.file, d.bus) for d in hw.disks)


def _nics_expected(facts: list[dict[str, Any]]) -> Counter[NicFact]:
    return Counter((n["network"], n["model"], n["mac"]) for n in facts)


def _nics_actual(hw: HardwareSummary) -> Counter[NicFact]:
    return Counter((n.network, n.model, n.mac.lower() if n.mac else None) for n in hw.nics)


class Check:
    """Collects every mismatch (fact, expected, actual) rather than stopping at the first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures: list[str] = []

    def equal(self, fact: str, expected: object, actual: object) -> None:
        if expected != actual:
            self.failures.append(f"{fact}: the file says {expected!r}, the parser gives {actual!r}")

    def fail(self, fact: str, error: Exception) -> None:
        self.failures.append(f"{fact}: {type(error).__name__}: {error}")

    def done(self) -> None:
        if self.failures:
            pytest.fail(f"{self.name}: {len(self.failures)} fact(s) differ:\n  " + "\n  ".join(self.failures))


def _check_hardware(
    check: Check, envelope: Envelope, system: VirtualSystem, facts: dict[str, Any], configuration: str | None
) -> None:
    where = f"system {system.id!r}" + (f" option {configuration!r}" if configuration else " (default option)")
    try:
        hw = summarize(envelope, system, configuration=configuration)
    except Exception as e:  # a parser error is a finding to report like any other
        check.fail(f"{where} summarize", e)
        return
    if "cpus" in facts:
        check.equal(f"{where} vCPUs", facts["cpus"], hw.cpus)
    if "memory_mib" in facts:
        actual_mib = hw.memory_bytes / MiB if hw.memory_bytes is not None else None
        check.equal(f"{where} memory MiB", facts["memory_mib"], actual_mib)
    if "disks" in facts:
        check.equal(f"{where} disks (id, capacity, file, bus)", _disks_expected(facts["disks"]), _disks_actual(hw))
    if "nics" in facts:
        check.equal(f"{where} NICs (network, model, mac)", _nics_expected(facts["nics"]), _nics_actual(hw))


@pytest.mark.parametrize("name", sorted(FACTS))
def test_corpus_descriptor_matches_hand_read_facts(name: str) -> None:
    facts = FACTS[name]
    data = (CORPUS / name).read_bytes()
    if "refused" in facts:
        wanted = [facts["refused"]] if isinstance(facts["refused"], str) else facts["refused"]
        with pytest.raises(OvfError) as refused:
            parse_envelope(data)
        missing = [w for w in wanted if w not in str(refused.value)]
        assert not missing, f"{name}: the error {str(refused.value)!r} should contain {missing!r}"
        return
    try:
        envelope = parse_envelope(data)
    except OvfError as e:
        pytest.fail(f"{name}: parse_envelope refused it: {type(e).__name__}: {e}")

    check = Check(name)
    check.equal("OVF version", facts["version"], envelope.version)
    check.equal("deployment option ids", facts["deployment_options"], [o.id for o in envelope.deployment_options])
    check.equal("default deployment option", facts["default_option"], default_configuration(envelope))
    check.equal("properties (key: default)", facts["properties"], {p.key: p.default for p in envelope.properties()})
    startup = Counter(
        (i.id, i.order, i.start_delay, i.stop_delay, i.start_action, i.stop_action) for i in envelope.startup()
    )
    expected_startup = Counter(
        (s["id"], s["order"], s["start_delay"], s["stop_delay"], s["start_action"], s["stop_action"])
        for s in facts.get("startup", [])
    )
    check.equal("startup (id, order, startDelay, stopDelay, startAction, stopAction)", expected_startup, startup)

    systems = {s.id: s for s in envelope.virtual_systems()}
    check.equal("virtual system ids", sorted(facts["systems"]), sorted(systems))
    for system_id, system_facts in facts["systems"].items():
        system = systems.get(system_id)
        if system is None:
            continue
        _check_hardware(check, envelope, system, system_facts, None)
        for option, option_facts in (system_facts.get("options") or {}).items():
            _check_hardware(check, envelope, system, option_facts, option)
    check.done()


def test_every_corpus_file_has_facts_and_a_source() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.ovf"))
    sources = (CORPUS / "SOURCES.md").read_text()
    assert files, "the corpus is empty"
    assert [f for f in files if f not in FACTS] == [], "corpus files without an entry in facts.yaml"
    assert [f for f in files if f not in sources] == [], "corpus files not described in SOURCES.md"
    assert [f for f in FACTS if f not in files] == [], "facts.yaml entries without a corpus file"
