"""Pure policy: money budgets per tenant and pool, free-tier quotas per pool (see ``policy``)."""

from tierserve.budgets.policy import Budget, BudgetBook, BudgetConfigError, PoolState, Quota, Usage, Verdict

__all__ = ["Budget", "BudgetBook", "BudgetConfigError", "PoolState", "Quota", "Usage", "Verdict"]
