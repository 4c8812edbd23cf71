import pytest

from tierserve.errors import InvalidInput
from tierserve.scheduler.tiers import MissPolicy, TierTable


def test_defaults_gold_silver_bronze() -> None:
    table = TierTable()
    assert [(t.name, t.target_s, t.miss_policy) for t in table.tiers] == [
        ("gold", 0.05, MissPolicy.REJECT),
        ("silver", 0.15, MissPolicy.REJECT),
        ("bronze", 1.0, MissPolicy.BEST_EFFORT),
    ]
    assert table.resolve().tier.name == "bronze"


def test_tier_by_name_priority_level_or_model_default() -> None:
    table = TierTable()
    assert table.resolve(name="gold").tier.name == "gold"
    assert table.resolve(priority=1).tier.name == "gold"
    assert table.resolve(priority=2).tier.name == "silver"
    assert table.resolve(priority=9).tier.name == "bronze"
    assert table.resolve(priority=0, default="silver").tier.name == "silver"
    assert table.resolve(name="silver", priority=1).tier.name == "silver"  # the name wins


def test_triton_timeout_overrides_the_budget() -> None:
    choice = TierTable().resolve(name="gold", timeout_us=20_000)
    assert choice.tier.name == "gold" and choice.budget_s == pytest.approx(0.020)


def test_triton_timeout_zero_means_no_timeout() -> None:
    """tritonclient sends ``"timeout": 0`` for ``timeout=0``; Triton reads it as "no timeout"."""
    choice = TierTable().resolve(name="silver", timeout_us=0)
    assert choice.tier.name == "silver" and choice.budget_s == pytest.approx(0.150)


@pytest.mark.parametrize(
    "kwargs", [{"name": "platinum"}, {"name": 3}, {"priority": -1}, {"priority": "1"}, {"timeout_us": -1}]
)
def test_bad_tier_parameters_are_400(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        TierTable().resolve(**kwargs)  # type: ignore[arg-type]


def test_from_config() -> None:
    table = TierTable.from_config(
        {
            "tiers": [
                {"name": "rt", "target_ms": 20, "priority": 0},
                {"name": "batch", "target_ms": 5000, "priority": 5, "miss_policy": "best_effort"},
            ],
            "default_tier": "batch",
        }
    )
    assert table.default.name == "batch"
    assert table.get("rt").rejects_late and not table.get("batch").rejects_late
    with pytest.raises(InvalidInput):
        TierTable.from_config({"tiers": [{"name": "x", "target_ms": -1, "priority": 0}]})


def test_one_rule_names_a_requests_tier_strongest_first() -> None:
    table = TierTable()

    def name(params: dict[str, object], **sources: object) -> str:
        return table.for_request(params, **sources).tier.name  # type: ignore[arg-type]

    assert name({"tier": "silver"}, header="gold", key_tier="gold") == "silver"  # parameter
    assert name({}, header="silver", key_tier="gold") == "silver"  # header over the key
    assert name({"priority": 1}, key_tier="bronze") == "gold"  # Triton's priority over the key
    assert name({"priority": 0}, key_tier="silver") == "silver"  # priority 0 names nothing
    assert name({}, key_tier="silver", default_priority=1) == "silver"  # the key over the model's priority
    assert name({}, default_priority=1, model_default="bronze") == "gold"
    assert name({}, model_default="silver") == "silver"
    assert name({}) == table.default.name
    assert table.lowest.name == "bronze"
    choice = table.for_request({"timeout": 0}, default_timeout_us=20_000, header="gold")
    assert choice.budget_s == pytest.approx(0.020) and choice.client_timeout
