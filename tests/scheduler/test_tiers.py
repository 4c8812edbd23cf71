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
