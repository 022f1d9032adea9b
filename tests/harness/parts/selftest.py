"""Scenarios for the harness's own tests (tests/meta/test_probes.py), not for any exercise."""


def twice(learner, x):
    """Calls the learner's ``data.double`` twice on what it returned."""
    double = learner("data.double")
    once = double(x)
    return {"once": once, "twice": double(once), "tree": learner.path.name}


def hand_back(learner):
    """Returns a learner object as it is: the probe must refuse to send it."""
    return learner("data.double")


def catch(learner, x):
    """Calls the learner's function and reports what it raised, as data."""
    try:
        learner("data.double")(x)
    except ValueError as e:
        return {"raised": type(e).__name__, "message": str(e)}
    return {"raised": None}
