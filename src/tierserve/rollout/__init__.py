"""Safe rollouts, pure policy: the judge, the controller's state machine and the sticky split.

No clock, threads, awaits or I/O here: ``tierserve.engine`` routes requests and collects each arm's
window, ``tierserve.releases`` stores rollouts and runs the controller on a timer.
"""

from tierserve.rollout.controller import (
    AbSplit,
    Decision,
    Mode,
    Phase,
    Rollout,
    RolloutPlan,
    RouteChoice,
    evaluate,
    look_alpha,
    promote,
    rollback,
    route,
    start,
)
from tierserve.rollout.judge import Action, Check, Criteria, Gate, Verdict, judge
from tierserve.rollout.split import RouteKeys, bucket
from tierserve.rollout.window import ArmWindow

__all__ = [
    "AbSplit",
    "Action",
    "ArmWindow",
    "Check",
    "Criteria",
    "Decision",
    "Gate",
    "Mode",
    "Phase",
    "Rollout",
    "RolloutPlan",
    "RouteChoice",
    "RouteKeys",
    "Verdict",
    "bucket",
    "evaluate",
    "judge",
    "look_alpha",
    "promote",
    "rollback",
    "route",
    "start",
]
