"""bench/replay.py finds the first check the drop bound as it is decides otherwise."""

from .replay import first_change


def _drop(step, now, rise, accepted, units=("layer1.0",)):
    return {"step": step, "kind": "drop", "units": list(units), "loss": now, "loss_with": now + rise,
            "accepted": accepted, "labelled": True}


# the held loss falls 1.3 -> 1.0 from boundary 1 to boundary 4 (interval 16); at boundary 4 a rise of 0.2
# passed: within the gain over 3 boundaries (0.3), above a third of it
LOG = [_drop(16, 1.3, 0.1, True), _drop(64, 1.0, 0.2, True, ("layer1.1",))]


def test_a_run_of_unknown_length_is_decided_otherwise_at_the_first_late_drop():
    assert first_change({"loop": "plain", "checks": LOG}).startswith("step 64: 1 units, a rise of 0.200")
    assert first_change({"loop": "attach", "checks": LOG}) is None  # the length known: the same bound


def test_a_probation_judged_on_another_bound_is_found():
    # at step 16 the gain since ln 10 allows a third of 1.0 (0.33): the probation passed at a rise of 0.3
    log = [_drop(16, 1.3, 0.1, True), {**_drop(64, 1.3, 0.3, True), "kind": "probation"}]
    assert first_change({"loop": "plain", "checks": log}) is None
    log[1]["loss_with"] = 1.3 + 0.4  # above the bound the drop passed, yet accepted: the replay says so
    assert "probation at step 64" in first_change({"loop": "plain", "checks": log})
