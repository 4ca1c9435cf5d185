"""Every training method's objective meets the Objective protocol the loop is typed against."""

from __future__ import annotations

import pytest

from ayar.recipe import METHOD_NAMES, REFERENCE_METHODS, validate_recipe
from ayar.train.objectives import Objective, Reference, ReferenceObjective, make_objective


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_each_method_has_an_objective_of_the_protocol(method):
    extra = {"distill": {"teacher": "teacher"}} if method == "distill" else {}  # its teacher is required
    recipe = validate_recipe({"model": {"path": "m"}, "data": {"train": "t.jsonl"}, "method": method, **extra})
    objective = make_objective(recipe, Reference("adapter_disabled"))
    assert isinstance(objective, Objective)
    assert objective.needs_reference == (method in REFERENCE_METHODS)
    # pair and KTO objectives can score a reference (DPO and KTO do; ORPO, CPO, SimPO never ask)
    assert isinstance(objective, ReferenceObjective) == (method in REFERENCE_METHODS + ("orpo", "cpo", "simpo"))
