"""Which MigrationPolicy applies to a VM, and how a migration's tuning is resolved (vdc.operations.migration_policy)."""

from __future__ import annotations

from typing import Any

from vdc.api.migration import MigrationTuning
from vdc.operations.migration_policy import (
    DEFAULT_PARALLEL_PER_CLUSTER,
    DEFAULT_PARALLEL_PER_HOST,
    DEFAULT_TIMEOUT_PER_GIB,
    resolve,
    select_policy,
)


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def test_no_policy_selects_the_vm_and_the_defaults_apply() -> None:
    chosen = select_policy([policy("gold", vmSelector={"matchLabels": {"tier": "gold"}})], {"tier": "bronze"}, {})
    assert chosen is None
    tuning = resolve(chosen, None)
    assert tuning.policy is None
    assert tuning.bandwidth_bytes is None and not tuning.auto_converge and not tuning.allow_post_copy
    assert tuning.parallel_per_host == DEFAULT_PARALLEL_PER_HOST
    assert tuning.parallel_per_cluster == DEFAULT_PARALLEL_PER_CLUSTER
    assert tuning.completion_timeout_per_gib == DEFAULT_TIMEOUT_PER_GIB


def test_an_empty_policy_selects_every_vm() -> None:
    chosen = select_policy([policy("everyone", bandwidth="32Mi")], {"any": "thing"}, {"team": "x"})
    assert chosen is not None and chosen[0] == "everyone"
    assert resolve(chosen, None).bandwidth_bytes == 32 * 2**20


def test_the_policy_naming_more_vm_labels_wins_over_one_naming_fewer() -> None:
    policies = [
        policy("broad", vmSelector={"matchLabels": {"tier": "gold"}}, autoConverge=False),
        policy("narrow", vmSelector={"matchLabels": {"tier": "gold", "db": "yes"}}, autoConverge=True),
    ]
    assert select_policy(policies, {"tier": "gold", "db": "yes"}, {})[0] == "narrow"  # type: ignore[index]
    assert select_policy(policies, {"tier": "gold"}, {})[0] == "broad"  # type: ignore[index]


def test_vm_selector_terms_count_before_namespace_selector_terms() -> None:
    policies = [
        policy("by-namespace", namespaceSelector={"matchLabels": {"a": "1", "b": "2"}}),
        policy("by-vm", vmSelector={"matchLabels": {"app": "db"}}),
    ]
    chosen = select_policy(policies, {"app": "db"}, {"a": "1", "b": "2"})
    assert chosen is not None and chosen[0] == "by-vm"


def test_a_tie_goes_to_the_first_name_whatever_the_listing_order() -> None:
    a = policy("alpha", vmSelector={"matchLabels": {"x": "1"}}, bandwidth="1Mi")
    b = policy("beta", vmSelector={"matchLabels": {"y": "2"}}, bandwidth="2Mi")
    for order in ([a, b], [b, a]):
        chosen = select_policy(order, {"x": "1", "y": "2"}, {})
        assert chosen is not None and chosen[0] == "alpha"


def test_both_selectors_must_match() -> None:
    p = policy("p", vmSelector={"matchLabels": {"x": "1"}}, namespaceSelector={"matchLabels": {"env": "prod"}})
    assert select_policy([p], {"x": "1"}, {"env": "dev"}) is None
    assert select_policy([p], {"x": "1"}, {"env": "prod"}) is not None


def test_the_migrations_own_tuning_overrides_the_policy_field_by_field() -> None:
    chosen = select_policy(
        [policy("p", bandwidth="10Mi", autoConverge=True, maxDowntimeMilliseconds=500, parallelMigrationsPerHost=1)],
        {},
        {},
    )
    tuning = resolve(chosen, MigrationTuning.model_validate({"bandwidth": "100Mi", "completionTimeoutPerGiB": 9}))
    assert tuning.policy == "p"
    assert tuning.bandwidth_bytes == 100 * 2**20  # the override
    assert tuning.auto_converge is True  # the policy's (the override leaves it out)
    assert tuning.max_downtime_ms == 500
    assert tuning.completion_timeout_per_gib == 9
    assert tuning.parallel_per_host == 1  # only a policy sets parallelism
    assert tuning.completion_timeout(2 * 2**30) == 18
    assert tuning.completion_timeout(1) == 9  # at least one GiB's worth


def test_an_override_of_false_beats_a_policys_true() -> None:
    chosen = select_policy([policy("p", allowPostCopy=True)], {}, {})
    assert resolve(chosen, MigrationTuning(allow_post_copy=False)).allow_post_copy is False
    assert resolve(chosen, None).allow_post_copy is True
