"""The edge sampler, the constrained pruner and the held-back trials, on cheap objectives
whose feasibility edge is known: no training, so each runs in well under a second."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search.engine.drive import awaits_first_result
from search.engine.sampling import EDGE_RESOLUTION, ConstrainedMedianPruner, EdgeSampler
from search.study.record import best_feasible_trial

EDGE = 3e-3  # the cheap objective is feasible from here up
SPACE = FloatDistribution(1e-6, 1e-1, log=True)


def edge_objective(trial: optuna.Trial) -> float:
    """Like the real one: the score falls as weight decay rises, feasible from EDGE up."""
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    trial.set_constraint("train_accuracy", math.log10(EDGE / weight_decay))
    return -math.log10(weight_decay)


def edge_sampler(seed: int = 0, n_startup: int = 10) -> EdgeSampler:
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        startup = optuna.samplers.QMCSampler(scramble=True, seed=seed)
    return EdgeSampler(optuna.samplers.TPESampler(seed=seed), startup, n_startup)


def finished(weight_decay: float, value: float, violation: float, **params: object):
    """A complete trial at ``weight_decay`` with the given value and constraint value."""
    distributions = {"weight_decay": SPACE}
    for name, choice in params.items():
        distributions[name] = CategoricalDistribution(["adam", "sgd"])
        assert choice in ("adam", "sgd")
    return create_trial(
        params={"weight_decay": weight_decay, **params},
        distributions=distributions,
        value=value,
        system_attrs={"constraints": [violation]},
    )


def crossing(low: float, v_low: float, high: float, v_high: float) -> float:
    """Where the constraint crosses 0 between two weight decays, linear in log weight decay."""
    share = v_low / (v_low - v_high)
    return low * (high / low) ** share


def study_with(*trials, sampler=None) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=sampler or edge_sampler())
    for trial in trials:
        study.add_trial(trial)
    return study


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_sampler_lands_on_a_known_edge_where_tpe_does_not(seed: int) -> None:
    edge = study_with(sampler=edge_sampler(seed))
    edge.optimize(edge_objective, n_trials=25)
    tpe = study_with(sampler=optuna.samplers.TPESampler(seed=seed))
    tpe.optimize(edge_objective, n_trials=25)
    found = best_feasible_trial(edge)
    assert found is not None
    # Bisection stops at 0.5% of the log range: 6% of the weight decay.
    assert EDGE <= found.params["weight_decay"] <= EDGE * 1.07
    baseline = best_feasible_trial(tpe)
    assert baseline is not None and baseline.params["weight_decay"] > EDGE * 1.07


def test_edge_sampler_spreads_trials_asked_together_over_the_bracket() -> None:
    study = study_with(
        finished(4e-3, 2.4, -0.1), finished(2e-3, 2.7, 0.2), sampler=edge_sampler(n_startup=0)
    )
    asked = [study.ask().suggest_float("weight_decay", 1e-6, 1e-1, log=True) for _ in range(3)]
    assert all(2e-3 < value < 4e-3 for value in asked)
    assert len(set(asked)) == 3
    assert asked[0] == pytest.approx(crossing(2e-3, 0.2, 4e-3, -0.1))


def test_edge_sampler_leaves_an_interior_optimum_to_its_base() -> None:
    sampler = edge_sampler()
    interior = study_with(
        finished(1e-3, 1.0, -0.1), finished(4e-3, 3.0, -0.1), finished(1e-2, 2.0, -0.1)
    )
    assert sampler.edge_proposal(interior, {"weight_decay": SPACE}) is None
    on_edge = study_with(finished(1e-3, 4.0, 0.1), finished(4e-3, 3.0, -0.1))
    proposal = sampler.edge_proposal(on_edge, {"weight_decay": SPACE})
    assert proposal is not None and 1e-3 < proposal["weight_decay"] < 4e-3


def test_edge_sampler_stops_splitting_below_its_resolution() -> None:
    # Half the resolution apart, in position on the log range (five decades).
    below = 3.0e-3 * 10 ** (-5 * EDGE_RESOLUTION / 2)
    narrow = study_with(finished(3.0e-3, 2.5, -0.1), finished(below, 2.6, 0.1))
    assert edge_sampler().edge_proposal(narrow, {"weight_decay": SPACE}) is None


OPTIMIZER_SPACE = {"weight_decay": SPACE, "optimizer": CategoricalDistribution(["adam", "sgd"])}


def test_edge_sampler_brackets_among_trials_with_the_best_ones_other_parameters() -> None:
    study = study_with(
        finished(4e-3, 3.0, -0.1, optimizer="adam"),
        finished(3e-3, 2.5, 0.1, optimizer="sgd"),  # another optimizer: no bracket with it
        finished(1e-3, 4.0, 0.2, optimizer="adam"),
    )
    proposal = edge_sampler().edge_proposal(study, OPTIMIZER_SPACE)
    assert proposal is not None and proposal["optimizer"] == "adam"
    assert proposal["weight_decay"] == pytest.approx(crossing(1e-3, 0.2, 4e-3, -0.1))


def test_edge_sampler_splits_first_the_edge_of_a_recipe_that_scored_above_the_best() -> None:
    """SGD's infeasible trial scored 3.5, above Adam's best feasible 3.0: SGD's own edge may
    hold more, so it is bracketed first, up from its frontier by halves (no feasible SGD
    trial yet); with a feasible SGD trial, between the two."""
    adam = [
        finished(4e-3, 3.0, -0.1, optimizer="adam"),
        finished(1e-3, 4.0, 0.2, optimizer="adam"),
    ]
    study = study_with(*adam, finished(3e-3, 3.5, 0.1, optimizer="sgd"))
    proposal = edge_sampler().edge_proposal(study, OPTIMIZER_SPACE)
    assert proposal is not None and proposal["optimizer"] == "sgd"
    assert proposal["weight_decay"] == pytest.approx(math.sqrt(3e-3 * SPACE.high))
    study = study_with(
        *adam,
        finished(3e-3, 3.5, 0.1, optimizer="sgd"),
        finished(3e-2, 2.0, -0.2, optimizer="sgd"),
    )
    proposal = edge_sampler().edge_proposal(study, OPTIMIZER_SPACE)
    assert proposal is not None and proposal["optimizer"] == "sgd"
    assert proposal["weight_decay"] == pytest.approx(crossing(3e-3, 0.1, 3e-2, -0.2))


def test_constrained_median_pruner_judges_against_feasible_trials_only() -> None:
    def complete(value: float, violation: float):
        trial = finished(4e-3, value, violation)
        trial.intermediate_values = {5: value}
        return trial

    # Near the edge the infeasible trials score best at every epoch.
    trials = [complete(0.99, 0.05) for _ in range(3)] + [complete(0.90, -0.01) for _ in range(3)]
    ours = ConstrainedMedianPruner(n_startup_trials=3, n_warmup_steps=1)
    optunas = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    verdicts = {}
    for score in (0.93, 0.85):
        study = study_with(*trials)
        trial = study.ask()
        trial.report(score, 5)
        frozen = study._storage.get_trial(trial._trial_id)
        verdicts[score] = (ours.prune(study, frozen), optunas.prune(study, frozen))
    assert verdicts[0.93] == (False, True)  # feasible and above the feasible median: kept
    assert verdicts[0.85] == (True, True)


def test_pool_holds_its_last_trials_back_until_a_first_result() -> None:
    study = optuna.create_study(direction="maximize")
    running = [study.ask() for _ in range(16)]
    # 25 trials, 16 slots: the last min(16 // 2, 25 // 3) = 8 wait for a first complete trial.
    assert not awaits_first_result(study, budget=25, k=16, own_running=16)
    study.ask()
    assert awaits_first_result(study, budget=25, k=16, own_running=17)
    study.tell(running[0], 0.9)
    assert not awaits_first_result(study, budget=25, k=16, own_running=16)


def test_pool_never_holds_back_with_nothing_of_its_own_running() -> None:
    study = optuna.create_study(direction="maximize")
    for _ in range(20):
        study.ask()  # a killed run's trials: running in the storage, trained by no one
    assert not awaits_first_result(study, budget=25, k=16, own_running=0)


def test_edge_sampler_before_any_feasible_trial_searches_beyond_the_least_infeasible() -> None:
    study = study_with(
        finished(1e-4, 4.0, 0.05),
        finished(1e-3, 3.0, 0.01),  # the least infeasible: the edge lies beyond it, if anywhere
        sampler=edge_sampler(n_startup=0),
    )
    asked = study.ask().suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    assert asked == pytest.approx(math.sqrt(1e-3 * 1e-1))  # up to the range's end, in log
    assert 1e-3 < study.ask().suggest_float("weight_decay", 1e-6, 1e-1, log=True) < 1e-1


def test_edge_sampler_ignores_a_trial_pruned_under_the_limit_as_a_neighbour() -> None:
    pruned = finished(2e-3, 2.7, -0.01)  # pruned at an early epoch: might have ended over it
    pruned.state, pruned.value = TrialState.PRUNED, None
    study = study_with(finished(4e-3, 2.4, -0.1), pruned, finished(1e-3, 3.0, 0.2))
    proposal = edge_sampler().edge_proposal(study, {"weight_decay": SPACE})
    assert proposal is not None
    assert proposal["weight_decay"] == pytest.approx(crossing(1e-3, 0.2, 4e-3, -0.1))


def stopped(weight_decay: float, violation: float):
    """A trial stopped over the limit (PRUNED), with its projected constraint value."""
    trial = finished(weight_decay, 0.9, violation)
    trial.state, trial.value = TrialState.PRUNED, None
    trial.user_attrs = {"pruned_reason": "infeasible: running train accuracy over the limit"}
    return trial


# Five trials stopped over the limit, all projected at the old cap (+0.05, tied), as in the
# study that missed: the sampler then anchored on the lowest one and spent trials below it.
TIED = [stopped(w, 0.05) for w in (1.5e-6, 1e-5, 2e-4, 1.87e-3, 4.03e-3)]


def asked_weight_decays(study: optuna.Study, n: int) -> list[float]:
    return [study.ask().suggest_float("weight_decay", 1e-6, 1e-1, log=True) for _ in range(n)]


def test_edge_sampler_never_anchors_below_the_largest_proven_infeasible_trial() -> None:
    study = study_with(*TIED, sampler=edge_sampler(n_startup=0))
    asked = asked_weight_decays(study, 16)  # a pool's worth, asked before any result
    assert min(asked) > 4.03e-3
    assert asked[0] == pytest.approx(math.sqrt(4.03e-3 * 1e-1))  # up to the range's end


def test_edge_sampler_brackets_between_the_frontier_and_the_first_feasible_trial() -> None:
    study = study_with(*TIED, finished(1.1e-2, 0.941, -0.006), sampler=edge_sampler(n_startup=0))
    asked = asked_weight_decays(study, 8)
    assert all(4.03e-3 < w for w in asked)  # never below the frontier
    assert sum(w < 1.1e-2 for w in asked) >= 5  # most where the edge is, below the best
    # Some past it, as far again at most: the best trial may be feasible by its seed's luck.
    assert all(w < 1.1e-2 * (1.1e-2 / 4.03e-3) for w in asked)
    assert len(set(asked)) == 8


def test_edge_sampler_centres_the_bracket_where_the_constraint_crosses() -> None:
    # Interpolated in log weight decay, the constraint crosses 0 a quarter of the way from the
    # infeasible trial (+0.01) to the feasible one (-0.03).
    study = study_with(
        *TIED[:3], stopped(1e-3, 0.01), finished(1e-2, 0.93, -0.03), sampler=edge_sampler(0, 0)
    )
    (first,) = asked_weight_decays(study, 1)
    assert (
        first == pytest.approx(1e-3 * 10**0.25) == pytest.approx(crossing(1e-3, 0.01, 1e-2, -0.03))
    )


def test_edge_sampler_moves_a_base_proposal_below_the_frontier_to_the_feasible_side() -> None:
    study = study_with(*TIED, finished(1.1e-2, 0.941, -0.006), sampler=edge_sampler(n_startup=0))
    sampler = study.sampler
    assert isinstance(sampler, EdgeSampler)
    moved = sampler.alive(study, {"weight_decay": 2e-5}, SPACE)
    # The widest gap beyond the frontier (4.03e-3) is 1.1e-2 to the range's end, 1e-1.
    assert moved == pytest.approx(math.sqrt(1.1e-2 * 1e-1))
    assert sampler.alive(study, {"weight_decay": 5e-3}, SPACE) == 5e-3  # alive: kept


def test_edge_sampler_leaves_a_proposal_for_another_optimizer_where_it_is() -> None:
    adam = [finished(w, 0.9, 0.05, optimizer="adam") for w in (1e-5, 1e-4, 1e-3, 2e-3)]
    for trial in adam:
        trial.state, trial.value = TrialState.PRUNED, None
        trial.user_attrs = {"pruned_reason": "infeasible: running train accuracy over the limit"}
    study = study_with(*adam, sampler=edge_sampler(n_startup=0))
    sampler = study.sampler
    assert isinstance(sampler, EdgeSampler)
    # Proven infeasible below 2e-3 for Adam only: SGD has an edge of its own, and a weight
    # decay sampled before the optimizer is chosen could be either's.
    assert sampler.alive(study, {"weight_decay": 1e-5, "optimizer": "adam"}, SPACE) > 2e-3
    assert sampler.alive(study, {"weight_decay": 1e-5, "optimizer": "sgd"}, SPACE) == 1e-5
    assert sampler.alive(study, {"weight_decay": 1e-5}, SPACE) == 1e-5


def test_edge_sampler_proves_nothing_where_the_constraint_has_no_direction() -> None:
    # Feasible and infeasible trials interleaved: no side of the range is proven infeasible.
    scattered = [
        stopped(1e-5, 0.02),
        finished(1e-4, 0.95, -0.01),
        stopped(1e-3, 0.03),
        finished(1e-2, 0.94, -0.02),
        stopped(3e-2, 0.01),
    ]
    study = study_with(*scattered, sampler=edge_sampler(n_startup=0))
    sampler = study.sampler
    assert isinstance(sampler, EdgeSampler)
    assert sampler.alive(study, {"weight_decay": 2e-6}, SPACE) == 2e-6


@pytest.mark.parametrize("seed", range(5))
def test_edge_sampler_never_proposes_below_proven_infeasible_trials_with_tied_values(
    seed: int,
) -> None:
    """A whole study on the cheap objective, with every infeasible trial tied at +0.05, as the
    capped projection stored them: no proposal goes below what is proven infeasible when it
    is asked, and the study lands on the edge."""
    study = study_with(sampler=edge_sampler(seed, n_startup=10))
    for _ in range(30):
        finished_trials = study.get_trials(states=(TrialState.COMPLETE,))
        decays = [t.params["weight_decay"] for t in finished_trials]
        infeasible = [w for w in decays if w < EDGE]
        lowest_feasible = min((w for w in decays if w >= EDGE), default=1.0)
        proven = max((w for w in infeasible if w < lowest_feasible), default=0.0)
        trial = study.ask()
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
        if len(study.trials) > 10:  # past the start
            assert weight_decay > proven
        feasible = weight_decay >= EDGE
        trial.set_constraint("train_accuracy", -0.01 if feasible else 0.05)
        # Validation falls smoothly with weight decay across the edge, as in a real study.
        study.tell(trial, -math.log10(weight_decay))
    found = best_feasible_trial(study)
    assert found is not None and EDGE <= found.params["weight_decay"] <= EDGE * 1.07
