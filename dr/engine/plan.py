"""Plans: a set of steps ordered by their `requires`, checked when built.

Declaring dependencies instead of a list lets the runner start independent
branches together (fetching a snapshot while the cluster is provisioned),
and lets `dr plan` show the real order and why. A plan that cannot run (a
cycle, an unknown or duplicate name) fails when it is built, long before an
outage.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterator, Sequence
from typing import Any

from dr import errors
from dr.engine import step as step_mod


class Plan:
    """A named DAG of steps with a stable topological order."""

    def __init__(self, name: str, steps: Sequence[step_mod.Step]) -> None:
        self.name = name
        self._steps: dict[str, step_mod.Step] = {}
        for s in steps:
            if s.name in self._steps:
                raise errors.PlanError(f"plan {name!r} declares step {s.name!r} twice")
            self._steps[s.name] = s
        for s in steps:
            for dep in s.requires:
                if dep not in self._steps:
                    raise errors.PlanError(f"step {s.name!r} of plan {name!r} requires unknown step {dep!r}")
        self.order: tuple[str, ...] = self._topological_order()

    def _topological_order(self) -> tuple[str, ...]:
        position = {n: i for i, n in enumerate(self._steps)}
        sorter = graphlib.TopologicalSorter({n: s.requires for n, s in self._steps.items()})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = " → ".join(exc.args[1])
            raise errors.PlanError(f"plan {self.name!r} has a dependency cycle: {cycle}") from exc
        order: list[str] = []
        while sorter.is_active():
            # Among steps ready together, keep the order in which they were declared.
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            order.extend(ready)
            sorter.done(*ready)
        return tuple(order)

    def __iter__(self) -> Iterator[step_mod.Step]:
        return (self._steps[n] for n in self.order)

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, name: object) -> bool:
        return name in self._steps

    def step(self, name: str) -> step_mod.Step:
        try:
            return self._steps[name]
        except KeyError:
            raise errors.ConfigError(
                f"plan {self.name!r} has no step {name!r}; its steps are: {', '.join(self.order)}"
            ) from None

    def ancestors(self, name: str) -> set[str]:
        """Every step that must be done before `name` may start."""
        seen: set[str] = set()
        todo = list(self._steps[name].requires)
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(self._steps[dep].requires)
        return seen

    def describe(self) -> list[dict[str, Any]]:
        return [{"position": i + 1, **s.describe()} for i, s in enumerate(self)]
