"""Plans: order by requires, and refuse cycles, unknown and duplicate steps when built."""

from __future__ import annotations

import pytest

from dr import errors
from dr.engine import plan, step


def s(name: str, *requires: str) -> step.Step:
    return step.Step(name=name, requires=requires)


def test_order_follows_requires_and_keeps_declaration_order_among_peers() -> None:
    """Steps come after their requirements; independent ones keep the order they were declared in."""
    p = plan.Plan("p", [s("d", "b", "c"), s("c", "a"), s("b", "a"), s("a")])
    assert ("a", "c", "b", "d") == p.order


def test_cycle_is_refused_at_build_time_and_named() -> None:
    """A cycle raises PlanError naming the steps in it."""
    with pytest.raises(errors.PlanError, match="cycle") as info:
        plan.Plan("p", [s("a", "c"), s("b", "a"), s("c", "b")])
    assert all(name in str(info.value) for name in "abc")


def test_unknown_dependency_is_refused() -> None:
    """A step requiring a step that is not in the plan raises PlanError naming both."""
    with pytest.raises(errors.PlanError, match="'b' of plan 'p' requires unknown step 'zz'"):
        plan.Plan("p", [s("a"), s("b", "zz")])


def test_duplicate_step_is_refused() -> None:
    """Two steps with one name raise PlanError."""
    with pytest.raises(errors.PlanError, match="twice"):
        plan.Plan("p", [s("a"), s("a")])


def test_ancestors_are_transitive() -> None:
    """ancestors() lists every step that must finish first."""
    p = plan.Plan("p", [s("a"), s("b", "a"), s("c", "b"), s("x")])
    assert {"a", "b"} == p.ancestors("c")
    assert set() == p.ancestors("x")


def test_unimplemented_step_fails_loudly() -> None:
    """The base Step's check raises NotImplementedYet: a missing body is never a success."""
    with pytest.raises(errors.NotImplementedYet, match="not implemented yet"):
        step.Step(name="a").check(None)  # type: ignore[arg-type]
