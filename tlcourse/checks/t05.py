"""Checks for exercise T05 (negative transfer): the negative-transfer gap with its standard error
against the right baseline, a mitigation for a harmful source chosen on the validation split with
its honest test accuracy, and one question on what L2-SP does to a harmful source.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with from the seed and from data it loads itself:
the q1 tables from :func:`q1_results`, and for q2 the USPS splits of
:func:`tlcourse.negative_transfer_demo.target_splits`, the shuffled-label source of
:func:`tlcourse.negative_transfer_demo.train_source` and the arms trained by :func:`tlcourse.l2sp.fit_with_l2sp`
(all on the CPU, seeded). Nothing in the student's namespace (``x_test``, ``source``) is trusted.

- **q1** (2 points) ``negative_transfer_gap(results)`` returns ``(ntg, se)``. *collect*: the
  student's function on three tables drawn from the seed: per seed, the test accuracy of a
  transferred model (30 epochs) and of scratch baselines trained for 10 and for 30 epochs.
  *grade*: ``ntg`` must be the mean over seeds of ``acc(scratch, 30 epochs) - acc(transfer)``
  (Wang et al., 2019: positive means the source hurt) and ``se`` the standard deviation of those
  paired differences over ``sqrt(n_seeds)``. Named mistakes: the 10-epoch baseline (a different
  budget), both baselines mixed, the sign reversed, one seed only, the standard deviation instead
  of the standard error, an unpaired standard error.
- **q2** (2 points) ``val_acc_by_arm``, ``chosen_arm``, ``chosen_test_acc`` and ``chosen_ntg``.
  The arms are seeded, so the grader trains the same five networks itself (about 2 s, cached for
  the session). ``val_acc_by_arm`` must match its validation accuracies to one image;
  ``chosen_arm`` must be the best mitigation (scratch excluded) *in the student's own*
  ``val_acc_by_arm``; ``chosen_test_acc`` the grader's test accuracy of that arm, and
  ``chosen_ntg`` scratch's test accuracy minus it, each to one image. Test accuracies in place of
  validation ones, or the validation accuracy reported as the test accuracy, are named.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown, scalar as _scalar
from tlcourse.grading.choice import choice_question

# ---------------------------------------------------------------- the exercise's fixed setting
SPLIT_SEED = 7            # target_splits(SPLIT_SEED) and the initialisation of every arm
SOURCE_EPOCHS = 3         # train_source("shuffled", seed=0, epochs=SOURCE_EPOCHS)
EPOCHS, LR, BATCH_SIZE = 15, 1e-3, 20
ARMS = {                  # name: (copied blocks, frozen, L2-SP alpha); None copies nothing
    "scratch": (None, False, 0.0),
    "frozen": (4, True, 0.0),
    "2 blocks frozen": (2, True, 0.0),
    "fine-tuned": (4, False, 0.0),
    "L2-SP 1": (4, False, 1.0),
}
MITIGATIONS = tuple(a for a in ARMS if a != "scratch")


# ---------------------------------------------------------------- q1
def q1_results(seed: int, n_seeds: int = 5):
    """A results table like the chapter's: columns ``arm``, ``seed``, ``epochs``, ``test_acc``.

    Per seed: ``transfer`` at 30 epochs, ``scratch`` at 10 and at 30 epochs. A seed moves every
    arm up or down together (the target sample), so pairing matters; the transfer arm trails the
    30-epoch baseline and beats the 10-epoch one.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.02, n_seeds)
    base = 0.78 + shared + rng.normal(0, 0.004, n_seeds)
    rows = []
    for s in range(n_seeds):
        transfer = base[s] - 0.02 - rng.uniform(0, 0.02) + rng.normal(0, 0.004)
        short = base[s] - 0.06 + rng.normal(0, 0.006)
        rows += [dict(arm="scratch", seed=s, epochs=10, test_acc=round(float(short), 4)),
                 dict(arm="transfer", seed=s, epochs=30, test_acc=round(float(transfer), 4)),
                 dict(arm="scratch", seed=s, epochs=30, test_acc=round(float(base[s]), 4))]
    order = rng.permutation(len(rows))
    return pd.DataFrame([rows[i] for i in order]).reset_index(drop=True)


def _q1_tables(seed):
    return [q1_results(seed * 3 + k) for k in range(3)]


def _collect_gap(ns, seed):
    fn = ns["negative_transfer_gap"]
    out = []
    for table in _q1_tables(seed):
        try:
            got = fn(table.copy())
        except NotImplementedError:
            return {"error": "negative_transfer_gap raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"negative_transfer_gap(results) raised {type(exc).__name__}: {str(exc)[:200]}"}
        if isinstance(got, dict):
            got = (got.get("ntg"), got.get("se"))
        try:
            ntg, se = got
        except (TypeError, ValueError):
            return {"error": f"negative_transfer_gap should return a pair (ntg, se), got {_shown(got)}"}
        out.append([_scalar(ntg), _scalar(se)])
    return {"values": out}


def _gap_variants(table) -> dict:
    """The right (ntg, se) and the usual wrong ones."""
    t = table.sort_values("seed")
    tr = t[t.arm == "transfer"].set_index("seed").test_acc
    s30 = t[(t.arm == "scratch") & (t.epochs == 30)].set_index("seed").test_acc
    s10 = t[(t.arm == "scratch") & (t.epochs == 10)].set_index("seed").test_acc
    mixed = t[t.arm == "scratch"].groupby("seed").test_acc.mean()
    n = len(tr)

    def paired(base):
        d = base.loc[tr.index] - tr
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))

    right = paired(s30)
    d = s30.loc[tr.index] - tr
    return {
        "right": right,
        "the baseline is the scratch model trained for 10 epochs, a different budget from the transferred "
        "model's 30: compare with the scratch rows that have the transfer arm's epochs": paired(s10),
        "the scratch rows of both budgets (10 and 30 epochs) are averaged together: keep only the baseline "
        "with the transfer arm's budget (30 epochs)": paired(mixed),
        "the sign is reversed: NTG is the baseline's accuracy minus the transferred model's (positive "
        "means the source hurt)": (-right[0], right[1]),
        "the standard deviation of the differences is reported, not the standard error: divide it by "
        "sqrt(number of seeds)": (right[0], float(d.std(ddof=1))),
        "the standard error is unpaired (sqrt(var_a / n + var_b / n)): the seeds are shared, so take "
        "the standard deviation of the per-seed differences over sqrt(n)":
            (right[0], float(math.sqrt(s30.var(ddof=1) / n + tr.var(ddof=1) / n))),
    }


def _close(a, b, tol=1e-6) -> bool:
    return not isinstance(a, str) and a is not None and math.isfinite(a) and abs(a - b) <= tol


def _grade_gap(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    tables = _q1_tables(seed)
    cases = [_gap_variants(t) for t in tables]
    values = answer["values"]
    for (ntg, se) in values:
        for what, v in (("ntg", ntg), ("se", se)):
            assert not isinstance(v, str), f"negative_transfer_gap returned {_shown(v)} as {what}; return two floats"
    if all(_close(v[0], c["right"][0]) and _close(v[1], c["right"][1]) for v, c in zip(values, cases)):
        return
    for mistake in cases[0]:
        if mistake != "right" and all(_close(v[0], c[mistake][0]) and _close(v[1], c[mistake][1])
                                      for v, c in zip(values, cases)):
            raise AssertionError(f"negative_transfer_gap is off: {mistake}")
    # one seed only: the gap of a single seed, or no usable standard error
    for v, t in zip(values, tables):
        tr = t[t.arm == "transfer"].set_index("seed").test_acc
        s30 = t[(t.arm == "scratch") & (t.epochs == 30)].set_index("seed").test_acc
        single = set(np.round((s30.loc[tr.index] - tr).values, 6))
        if (not isinstance(v[1], str) and (not math.isfinite(v[1]) or v[1] == 0)) or \
                (not isinstance(v[0], str) and round(v[0], 6) in single):
            raise AssertionError(
                "negative_transfer_gap uses a single seed (one seed's gap, or no standard error): average the "
                "paired differences over every seed and report their standard error; one seed cannot tell "
                "a two-point gap from luck")
    want = cases[0]["right"]
    raise AssertionError(
        f"negative_transfer_gap returned ntg = {values[0][0]:.5f}, se = {values[0][1]:.5f} on a table whose "
        f"answer is ntg = {want[0]:.5f}, se = {want[1]:.5f}: NTG is the mean over seeds of "
        "acc(scratch, same epochs) - acc(transfer), se the sd of those differences over sqrt(n)")


# ---------------------------------------------------------------- q2
def train_arm(name: str, source, splits) -> torch.nn.Module:
    """One arm of q2, exactly as the exercise trains it."""
    from tlcourse.l2sp import fit_with_l2sp
    from tlcourse.negative_transfer_demo import target_model

    n_copied, frozen, alpha = ARMS[name]
    model = target_model(source if n_copied else None, n_copied=n_copied or 4, frozen=frozen, seed=SPLIT_SEED)
    model, _, _ = fit_with_l2sp(model, *splits["train"], *splits["val"], epochs=EPOCHS, lr=LR,
                                batch_size=BATCH_SIZE, seed=SPLIT_SEED, alpha=alpha)
    return model


@functools.lru_cache(maxsize=1)
def reference_arms() -> dict:
    """The exercise's five arms, trained here: ``{"val": {arm: acc}, "test": {arm: acc}, "n_val", "n_test"}``."""
    from tlcourse.negative_transfer_demo import accuracy, target_splits, train_source

    splits = target_splits(SPLIT_SEED)
    source, _ = train_source("shuffled", seed=0, epochs=SOURCE_EPOCHS)
    out = {"val": {}, "test": {}, "n_val": len(splits["val"][1]), "n_test": len(splits["test"][1])}
    for name in ARMS:
        model = train_arm(name, source, splits)
        out["val"][name] = accuracy(model, *splits["val"])
        out["test"][name] = accuracy(model, *splits["test"])
    return out


def _collect_choice(ns, seed):
    raw = ns["val_acc_by_arm"]
    by_arm = ([[str(k), _scalar(v)] for k, v in raw.items()] if isinstance(raw, dict) else _scalar(raw))
    chosen = ns["chosen_arm"]
    return {"val_acc_by_arm": by_arm, "chosen_arm": chosen if isinstance(chosen, str) else _scalar(chosen),
            "chosen_test_acc": _scalar(ns["chosen_test_acc"]), "chosen_ntg": _scalar(ns["chosen_ntg"])}


def _accuracy(value, what: str) -> float:
    assert not isinstance(value, str), f"{what} should be a float accuracy, got {_shown(value)}"
    assert 0 <= value <= 1, f"{what} = {value!r}; an accuracy is a fraction in [0, 1]"
    return float(value)


def _grade_choice(answer, seed):
    by_arm = answer["val_acc_by_arm"]
    if isinstance(by_arm, list):
        by_arm = {k: v for k, v in by_arm}
    assert isinstance(by_arm, dict), f"val_acc_by_arm should be a dict {{arm: validation accuracy}}, got {_shown(by_arm)}"
    assert sorted(by_arm) == sorted(ARMS), (
        f"val_acc_by_arm should have one entry per arm {list(ARMS)}, has {sorted(by_arm)}")
    ref = reference_arms()
    one_val, one_test = 1.01 / ref["n_val"], 1.01 / ref["n_test"]
    for arm in ARMS:
        got = _accuracy(by_arm[arm], f"val_acc_by_arm[{arm!r}]")
        if abs(got - ref["val"][arm]) <= one_val:
            continue
        if abs(got - ref["test"][arm]) <= one_test:
            raise AssertionError(
                f"val_acc_by_arm[{arm!r}] = {got:.4f} is the arm's accuracy on the TEST split; score every arm "
                "on (x_val, y_val): the test split must take no part in choosing the mitigation")
        raise AssertionError(
            f"val_acc_by_arm[{arm!r}] = {got:.4f}, but that arm (train_arm({arm!r}, source, splits)) scores "
            f"{ref['val'][arm]:.4f} on the validation split")
    chosen = answer["chosen_arm"]
    assert isinstance(chosen, str) and chosen in MITIGATIONS, (
        f"chosen_arm = {_shown(chosen)} should be one of the mitigations {list(MITIGATIONS)} (scratch is the "
        "baseline, not a mitigation)")
    top = max(by_arm[a] for a in MITIGATIONS)
    assert by_arm[chosen] >= top - 1e-12, (
        f"chosen_arm = {chosen!r} has validation accuracy {by_arm[chosen]:.4f}, but the best mitigation in "
        f"val_acc_by_arm has {top:.4f}: choose on the validation split, not on the test split")
    reported = _accuracy(answer["chosen_test_acc"], "chosen_test_acc")
    want = ref["test"][chosen]
    if abs(reported - want) > one_test:
        if abs(reported - by_arm[chosen]) < 1e-9:
            raise AssertionError(
                f"chosen_test_acc = {reported:.4f} is the validation accuracy of {chosen!r}; the validation split "
                f"chose the arm, now report its accuracy on the test split ({want:.4f} expected)")
        raise AssertionError(f"chosen_test_acc = {reported:.4f}, but {chosen!r} scores {want:.4f} on the "
                             f"{ref['n_test']} test images")
    ntg = answer["chosen_ntg"]
    assert not isinstance(ntg, str), f"chosen_ntg should be a float, got {_shown(ntg)}"
    want_ntg = ref["test"]["scratch"] - want
    if abs(ntg - want_ntg) <= 2 * one_test:
        return
    if abs(ntg + want_ntg) <= 2 * one_test:
        raise AssertionError(f"chosen_ntg = {ntg:.4f} has the wrong sign: NTG is scratch's test accuracy minus "
                             "the chosen arm's (positive: the source still hurts)")
    raise AssertionError(f"chosen_ntg = {ntg:.4f}, expected scratch's test accuracy minus {chosen!r}'s, "
                         f"{want_ntg:.4f}")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "It removes the harm: any regularisation reduces overfitting on 100 images, so L2-SP beats plain "
         "fine-tuning.",
    "b": "It makes things worse than plain fine-tuning: the penalty pulls the weights back towards the "
         "harmful source weights, so a large alpha behaves more like freezing them.",
    "c": "It turns the model into the scratch baseline, because the penalty cancels what the source brought.",
    "d": "Nothing changes, because L2-SP regularises only the new head.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "L2-SP is not weight decay towards zero: towards which weights does it pull, and are they good ones here?",
    "c": "scratch starts from a random initialisation; what is the centre of L2-SP's penalty?",
    "d": "the head gets the beta term; which weights does the alpha term act on?",
}


QUESTIONS = [
    Question("q1", points=2, names=("negative_transfer_gap",), collect=_collect_gap, grade=_grade_gap,
             hint="keep the scratch rows with the transfer arm's epochs; d = scratch - transfer per seed "
                  "(align on seed); return d.mean(), d.std(ddof=1) / sqrt(len(d))"),
    Question("q2", points=2, names=("val_acc_by_arm", "chosen_arm", "chosen_test_acc", "chosen_ntg"),
             collect=_collect_choice, grade=_grade_choice,
             hint="score every arm on (x_val, y_val); chosen_arm = the mitigation with the best validation "
                  "accuracy; then the test accuracy of that arm only, and scratch's test accuracy minus it."),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="Write down the L2-SP penalty and ask where its minimum is."),
]
