"""Checks for exercise T14 (meta-learning): MAML's meta-gradient written by hand for a tiny linear
model, the support/query split of an episode, and one prediction about the jointly trained
sinusoid baseline.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with from the seed alone (closed-form gradients in
float64, labels drawn from the seed). Nothing in the student's namespace is trusted.

- **q1** (2 points) ``maml_meta_gradient(w, x_support, y_support, x_query, y_query, inner_lr,
  first_order=False)`` for the linear model ``f(x) = x @ w`` with the mean squared error.
  *collect*: the student's function on four cases drawn from the seed (three second-order, one
  first-order). *grade*: with ``g_S(w) = (2/K) X_S^T (X_S w - y_S)``, ``H_S = (2/K) X_S^T X_S``
  and ``phi = w - alpha g_S(w)``, the second-order meta-gradient is ``(I - alpha H_S) g_Q(phi)``
  and the first-order one ``g_Q(phi)``. The usual mistakes (first order where second is asked,
  the inner step on the query set, no inner step, the step taken uphill, the outer loss on the
  support set) are recognised and named.
- **q2** (2 points) ``make_episode(labels, ways, shots, queries, seed)``, returning
  ``(support_idx, support_labels, query_idx, query_labels)``. *collect*: the student's function
  on labels drawn from the seed (uneven classes, shuffled), for several episode seeds. *grade*:
  checks the properties of a correct episode, so any correct sampler passes: N classes, K support
  and Q query examples of each, support and query disjoint, labels renamed 0..N-1 consistently,
  and different episodes for different seeds.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown
from tlcourse.grading.choice import choice_question

Q1_CASES = ((0.1, False), (0.05, False), (0.2, False), (0.1, True))   # (inner_lr, first_order)
_D, _K, _Q = 3, 5, 8




def _array(value):
    """A tensor, array or nested list of numbers as a nested list of floats; anything else described."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy().tolist()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.astype(float).tolist()
    if isinstance(value, (list, tuple)):
        try:
            return np.asarray(value, dtype=float).tolist()
        except (TypeError, ValueError):
            pass
    return f"{_NOT_PLAIN}{type(value).__name__}>"


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int):
    """``(w, x_support, y_support, x_query, y_query)`` of every q1 case, float32, drawn from ``seed``.

    Each task is linear with its own weights plus noise, so the query and support gradients differ.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in Q1_CASES:
        w = rng.standard_normal((_D, 1))
        w_task = rng.standard_normal((_D, 1))
        xs, xq = rng.standard_normal((_K, _D)), rng.standard_normal((_Q, _D))
        ys = xs @ w_task + 0.3 * rng.standard_normal((_K, 1))
        yq = xq @ w_task + 0.3 * rng.standard_normal((_Q, 1))
        cases.append(tuple(torch.tensor(a, dtype=torch.float32) for a in (w, xs, ys, xq, yq)))
    return cases


def _collect_gradient(ns, seed):
    fn = ns["maml_meta_gradient"]
    values = []
    for (w, xs, ys, xq, yq), (lr, first) in zip(q1_inputs(seed), Q1_CASES):
        try:
            out = fn(w.clone().requires_grad_(True), xs.clone(), ys.clone(), xq.clone(), yq.clone(), lr,
                     first_order=first)
        except NotImplementedError:
            return {"error": "maml_meta_gradient raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"maml_meta_gradient(..., inner_lr={lr}, first_order={first}) raised "
                             f"{type(exc).__name__}: {str(exc)[:200]}"}
        values.append(_array(out))
    return {"values": values}


def _grad(x, y, w):
    return 2.0 / len(x) * x.T @ (x @ w - y)


def _variants(w, xs, ys, xq, yq, lr, first):
    """The right meta-gradient and the usual wrong ones, in float64, shape (D, 1)."""
    w, xs, ys, xq, yq = (t.double().numpy() for t in (w, xs, ys, xq, yq))
    eye = np.eye(len(w))
    h_s, h_q = 2.0 / len(xs) * xs.T @ xs, 2.0 / len(xq) * xq.T @ xq
    phi = w - lr * _grad(xs, ys, w)
    second, first_order = (eye - lr * h_s) @ _grad(xq, yq, phi), _grad(xq, yq, phi)
    phi_q = w - lr * _grad(xq, yq, w)
    out = {"right": first_order if first else second}
    if not first:
        out["this is the first-order (FOMAML) gradient, but first_order=False asks for the exact one: "
            "keep the graph of the inner gradient (torch.autograd.grad(..., create_graph=True)) and do "
            "not detach it"] = first_order
    else:
        out["this is the exact second-order gradient, but first_order=True asks for FOMAML: treat the "
            "inner gradient as a constant (detach it, or no create_graph)"] = second
    out.update({
        "the inner step uses the query set: adapt on (x_support, y_support), then evaluate the adapted "
        "weights on (x_query, y_query)": (eye - lr * h_q) @ _grad(xq, yq, phi_q) if not first else _grad(xq, yq, phi_q),
        "there is no inner step: this is the plain gradient of the query loss at w; first take "
        "w' = w - inner_lr * grad of the support loss": _grad(xq, yq, w),
        "the inner step goes uphill: w' = w - inner_lr * grad (minus, not plus)":
            ((eye + lr * h_s) @ _grad(xq, yq, w + lr * _grad(xs, ys, w)) if not first
             else _grad(xq, yq, w + lr * _grad(xs, ys, w))),
        "the outer loss is the support loss: the meta-gradient differentiates the QUERY loss of the "
        "adapted weights": (eye - lr * h_s) @ _grad(xs, ys, phi) if not first else _grad(xs, ys, phi),
        "the query loss is summed, not averaged: use the mean squared error (F.mse_loss) in both loops":
            (eye - lr * h_s) @ (len(xq) * _grad(xq, yq, phi)) if not first else len(xq) * _grad(xq, yq, phi),
    })
    return out


def _grade_gradient(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    values = answer["values"]
    cases = [_variants(*inputs, lr, first) for inputs, (lr, first) in zip(q1_inputs(seed), Q1_CASES)]
    got = []
    for v, (lr, first) in zip(values, Q1_CASES):
        assert not isinstance(v, str), (
            f"maml_meta_gradient(..., inner_lr={lr}, first_order={first}) returned {_shown(v)}; return the "
            "gradient as a tensor of the shape of w")
        arr = np.asarray(v, dtype=float)
        assert arr.size == _D, (f"maml_meta_gradient returned {arr.size} numbers, expected the {_D} entries "
                                f"of the gradient with respect to w (shape {(_D, 1)})")
        got.append(arr.reshape(_D, 1))
    close = lambda a, b: np.allclose(a, b, rtol=1e-4, atol=1e-5)  # noqa: E731
    wrong = [i for i, (g, c) in enumerate(zip(got, cases)) if not close(g, c["right"])]
    if not wrong:
        return
    for i in wrong:
        for mistake, value in cases[i].items():
            if mistake != "right" and close(got[i], value):
                lr, first = Q1_CASES[i]
                raise AssertionError(f"maml_meta_gradient(..., inner_lr={lr}, first_order={first}) is off: {mistake}")
    lr, first = Q1_CASES[wrong[0]]
    raise AssertionError(
        f"maml_meta_gradient(..., inner_lr={lr}, first_order={first}) = {np.round(got[wrong[0]].ravel(), 4).tolist()}, "
        f"expected {np.round(cases[wrong[0]]['right'].ravel(), 4).tolist()} (wrong in {len(wrong)} of "
        f"{len(Q1_CASES)} cases). Take w' = w - inner_lr * grad L_support(w), then differentiate "
        "L_query(w') with respect to w, through w' unless first_order=True")


# ---------------------------------------------------------------- q2
Q2_WAYS, Q2_SHOTS, Q2_QUERIES = 5, 2, 3
_EPISODE_SEEDS = 6


def q2_labels(seed: int) -> np.ndarray:
    """The pool of labels of q2: 12 classes (ids 10..21) with 6 to 9 examples each, shuffled."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(6, 10, size=12)
    labels = np.repeat(np.arange(10, 22), counts)
    return rng.permutation(labels)


def _collect_episode(ns, seed):
    fn = ns["make_episode"]
    labels = q2_labels(seed)
    episodes = []
    for k in range(_EPISODE_SEEDS):
        try:
            out = fn(labels.copy(), Q2_WAYS, Q2_SHOTS, Q2_QUERIES, seed=1000 * seed + k)
        except NotImplementedError:
            return {"error": "make_episode raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"make_episode(labels, ways={Q2_WAYS}, shots={Q2_SHOTS}, queries={Q2_QUERIES}, "
                             f"seed=...) raised {type(exc).__name__}: {str(exc)[:200]}"}
        if not isinstance(out, (tuple, list)) or len(out) != 4:
            return {"error": "make_episode must return four things: (support_idx, support_labels, query_idx, "
                             f"query_labels), got {_shown(out if not isinstance(out, (tuple, list)) else len(out))}"}
        episodes.append([_array(part) for part in out])
    return {"episodes": episodes}


def _integers(values, name: str, length: int) -> np.ndarray:
    assert not isinstance(values, str), f"{name} should be a sequence of integers, got {_shown(values)}"
    arr = np.asarray(values, dtype=float).ravel()
    assert len(arr) == length, f"{name} has {len(arr)} entries, expected {length}"
    assert np.all(arr == np.round(arr)), f"{name} should hold integers, got {arr[:5].tolist()}..."
    return arr.astype(int)


def _grade_episode(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    labels = q2_labels(seed)
    n, k, q = Q2_WAYS, Q2_SHOTS, Q2_QUERIES
    chosen = []
    for support, support_labels, query, query_labels in answer["episodes"]:
        s = _integers(support, "support_idx", n * k)
        q_idx = _integers(query, "query_idx", n * q)
        ys = _integers(support_labels, "support_labels", n * k)
        yq = _integers(query_labels, "query_labels", n * q)
        for name, idx in (("support_idx", s), ("query_idx", q_idx)):
            assert idx.min() >= 0 and idx.max() < len(labels), (
                f"{name} must index labels (0..{len(labels) - 1}), got values from {idx.min()} to {idx.max()}")
            assert len(set(idx.tolist())) == len(idx), (
                f"{name} repeats an example: draw examples without replacement")
        overlap = set(s.tolist()) & set(q_idx.tolist())
        assert not overlap, (
            f"the query set overlaps the support set ({len(overlap)} examples in both): query examples must "
            "be other examples of the same classes, or the outer loss rewards memorising the support set")
        classes = set(labels[s].tolist())
        assert len(classes) == n, f"the support set holds {len(classes)} classes, expected ways = {n}"
        assert set(labels[q_idx].tolist()) == classes, "the query set must hold the same classes as the support set"
        for c in classes:
            assert (labels[s] == c).sum() == k and (labels[q_idx] == c).sum() == q, (
                f"every class needs exactly shots = {k} support and queries = {q} query examples; class {c} has "
                f"{(labels[s] == c).sum()} and {(labels[q_idx] == c).sum()}")
        assert set(ys.tolist()) == set(range(n)), (
            f"support_labels should be the episode's labels 0..{n - 1}, got {sorted(set(ys.tolist()))[:6]}: rename "
            "the classes of each episode 0..N-1 (the original class ids mean nothing to the learner)")
        mapping = {}
        for original, new in zip(np.concatenate([labels[s], labels[q_idx]]), np.concatenate([ys, yq])):
            assert mapping.setdefault(int(original), int(new)) == int(new), (
                f"class {original} gets two different episode labels: rename each class once and use the same "
                "new label in support and query")
        assert len(set(mapping.values())) == n, "two classes share an episode label: the renaming must be one-to-one"
        chosen.append(frozenset(classes))
    assert len(set(chosen)) > 1, (
        f"make_episode chose the same {n} classes for {len(chosen)} different seeds: draw the classes at random "
        "with the seed, so that meta-training sees many different tasks")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "Zero everywhere: the sinusoids have random phases, so they cancel out on average.",
    "b": "About 1.6 cos(x): the average of all training functions, which is no task's function.",
    "c": "The sine wave of one training task, the one it saw last.",
    "d": "A curve that already matches each test task, since it saw so many tasks.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "the MSE loss pulls the prediction at each x to the mean of the targets there. Average "
         "A * sin(x + b) over b in [0, pi] (not [0, 2 pi]) and over A: do the phases cancel?",
    "c": "Adam's steps average over 25 tasks per batch and thousands of batches: what single function "
         "minimises the mean squared error over all of them?",
    "d": "one set of weights gives one function of x, and different tasks give different y at the same x: "
         "which single function has the lowest average error?",
}


QUESTIONS = [
    Question("q1", points=2, names=("maml_meta_gradient",), collect=_collect_gradient, grade=_grade_gradient,
             hint="g = torch.autograd.grad(F.mse_loss(xs @ w, ys), w, create_graph=not first_order)[0]; "
                  "w2 = w - inner_lr * g; return torch.autograd.grad(F.mse_loss(xq @ w2, yq), w)[0]"),
    Question("q2", points=2, names=("make_episode",), collect=_collect_episode, grade=_grade_episode,
             hint="rng = np.random.default_rng(seed); pick `ways` classes; for each, permute its indices and "
                  "take the first `shots` for the support set and the next `queries` for the query set."),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER,
                    feedback=_Q3_FEEDBACK, points=1,
                    hint="Look at the chapter's right-hand panel: the pretrained network's prediction before any step."),
]
