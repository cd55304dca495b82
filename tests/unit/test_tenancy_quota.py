"""ComputeQuota arithmetic: what a VM takes and whether one more fits (vdc.tenancy.quota)."""

from __future__ import annotations

from vdc.api.computequota import QuotaAmounts
from vdc.tenancy.quota import Usage, exceeded, hard_limits, total, vm_usage

GI = 1 << 30


def test_vm_usage_counts_cpus_memory_max_created_volumes_and_public_nics() -> None:
    spec = {
        "cpu": {"count": 2},
        "memory": {"size": "1Gi", "max": "2Gi"},
        "disks": [
            {"name": "root", "source": {"clone": {"pool": "p", "baseVolume": "b"}}},
            {"name": "data", "source": {"blank": {"pool": "p", "size": "10Gi"}}},
            {"name": "old", "source": {"volume": {"pool": "p", "name": "x"}}},
        ],
        "interfaces": [{"name": "a", "switch": "internet"}, {"name": "b", "switch": "lan"}],
    }
    status = {"disks": [{"name": "root", "capacity": "5Gi"}]}
    assert vm_usage(spec, status, {"internet"}) == Usage(1, 2, 2 * GI, 15 * GI, 1)
    assert vm_usage({"memory": {"size": "512Mi"}}, None, set()) == Usage(1, 1, 512 << 20, 0, 0)


def test_exceeded_gives_the_numbers_per_limit_and_quota() -> None:
    quotas = {"small": QuotaAmounts(vcpus=4, memory="2Gi"), "count": QuotaAmounts(virtual_machines=3)}
    used = total([Usage(1, 2, GI, 0, 0), Usage(1, 1, GI // 2, 0, 0)])
    assert exceeded(quotas, used, Usage(1, 1, GI // 2, 0, 0)) is None
    message = exceeded(quotas, used, Usage(1, 2, GI, 0, 0))
    assert message == (
        "vCPUs: 3 used + 2 requested > 4 allowed by ComputeQuota small; "
        "memory: 1536Mi used + 1024Mi requested > 2048Mi allowed by ComputeQuota small"
    )
    assert "VMs: 3 used + 1 requested > 3 allowed by ComputeQuota count" in str(
        exceeded(quotas, used + Usage(1, 0, 0, 0, 0), Usage(1, 0, 0, 0, 0))
    )


def test_a_zero_limit_refuses_and_an_unset_one_does_not() -> None:
    assert exceeded({"q": QuotaAmounts(public_addresses=0)}, Usage(), Usage(1, 1, 0, 0, 1)) is not None
    assert exceeded({"q": QuotaAmounts()}, Usage(), Usage(1, 64, 64 * GI, 0, 9)) is None
    assert hard_limits(QuotaAmounts(memory="1Gi", vcpus=0)) == {"vcpus": 0, "memory": GI}
