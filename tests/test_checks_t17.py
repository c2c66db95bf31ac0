"""Tests of tlcourse.checks.t17: for every question the solution passes, other correct methods pass,
and the obvious wrong approaches fail with a message that names the mistake."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.check_helpers import question_helpers
from tlcourse import export, zoo
from tlcourse.checks import t17
from tlcourse.mobile_demo import exercise_photos, fit_on_device_classifier

SEED = 0
grade, passes, fails = question_helpers(t17, SEED)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The exercise's setup and its quantised variants, computed here the way the notebook does."""
    folder = tmp_path_factory.mktemp("t17")
    photos = exercise_photos()
    (x_train, y_train), (x_test, y_test) = photos["train"], photos["test"]
    model = fit_on_device_classifier(zoo.efficientnet_lite0(), x_train, y_train, block=t17.BLOCK)
    float_file = export.export_onnx(model, x_test[:1], folder / "float32.onnx")
    float_logits = export.onnx_logits(export.onnx_session(float_file), x_test)
    calib = x_train[:50].numpy()
    prepared = export.prepare_for_quantisation(float_file, folder / "prepared.onnx")
    files = {
        "static": export.quantise_static(prepared, folder / "static.onnx", calib, preprocess=False),
        "per_tensor": export.quantise_static(prepared, folder / "per_tensor.onnx", calib, per_channel=False,
                                             preprocess=False),
        "raw_calib": export.quantise_static(prepared, folder / "raw.onnx", 255 * calib, preprocess=False),
        "test_calib": export.quantise_static(prepared, folder / "test.onnx", x_test[:50].numpy(), preprocess=False),
        "dynamic": export.quantise_dynamic(float_file, folder / "dynamic.onnx"),
        "float16": export.to_float16(float_file, folder / "float16.onnx"),
        "float32": float_file,
    }
    logits = {k: export.onnx_logits(export.onnx_session(p), x_test) for k, p in files.items()}
    return dict(folder=folder, x_train=x_train, x_test=x_test, y_test=y_test, float_file=float_file,
                float_logits=float_logits, calib=calib, files=files, logits=logits)


@pytest.fixture(scope="module")
def namespace(built):
    logits = built["logits"]["static"]
    return dict(float_file=built["float_file"], float_size_mb=export.model_size_bytes(built["float_file"]) / 1e6,
                calibration_images=built["calib"], static_file=str(built["files"]["static"]),
                static_agreement=export.top1_agreement(logits, built["float_logits"]),
                static_test_acc=float((logits.argmax(1) == built["y_test"]).mean()), answer_q3="b")


def acc(built, name):
    return float((built["logits"][name].argmax(1) == built["y_test"]).mean())


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t17.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
def test_q1_accepts_the_solution_and_other_methods(namespace, built):
    passes(namespace, "q1")
    by_hand = sum(p.stat().st_size for p in built["folder"].glob("float32.onnx*")) / 1e6
    passes(namespace, "q1", float_size_mb=np.float32(by_hand))
    passes(namespace, "q1", float_size_mb=torch.tensor(by_hand))


def test_q1_names_the_graph_file_alone(namespace, built):
    fails(namespace, "q1", "graph file alone", float_size_mb=built["float_file"].stat().st_size / 1e6)


@pytest.mark.parametrize("factor, words", [(1 / 1.048576, "mebibytes"), (8, "megabits"), (1e6, "not in megabytes"),
                                           (1.3, "the files of the exported model take")])
def test_q1_names_unit_mistakes(namespace, factor, words):
    fails(namespace, "q1", words, float_size_mb=namespace["float_size_mb"] * factor)


def test_q1_names_the_whole_network(namespace):
    whole = 4 * sum(p.numel() for p in zoo.efficientnet_lite0(pretrained=False).parameters()) / 1e6
    fails(namespace, "q1", "whole EfficientNet-Lite0", float_size_mb=whole)


def test_q1_rejects_placeholders_and_missing_files(namespace, built, tmp_path):
    fails(namespace, "q1", "should be a number", float_size_mb=...)
    fails(namespace, "q1", "could not be measured", float_file=tmp_path / "gone.onnx")
    fails(namespace, "q1", "not the exercise's float32 model", float_file=built["files"]["static"])


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace, built):
    passes(namespace, "q2")
    passes(namespace, "q2", calibration_images=torch.from_numpy(built["x_train"][-20:].numpy()),
           static_file=built["files"]["static"], static_agreement=np.float64(namespace["static_agreement"]),
           static_test_acc=torch.tensor(namespace["static_test_acc"]))


def test_q2_rejects_calibration_on_test_photos(namespace, built):
    logits = built["logits"]["test_calib"]
    fails(namespace, "q2", "include 50 test photo(s)", calibration_images=built["x_test"][:50].numpy(),
          static_file=str(built["files"]["test_calib"]),
          static_agreement=export.top1_agreement(logits, built["float_logits"]),
          static_test_acc=acc(built, "test_calib"))


def test_q2_rejects_calibration_in_the_camera_scale(namespace, built):
    fails(namespace, "q2", "0-255 scale", calibration_images=255 * built["calib"],
          static_file=str(built["files"]["raw_calib"]))
    # the same broken model with the calibration array "fixed" afterwards: the agreement gives it away
    fails(namespace, "q2", "agrees with the float model on only", static_file=str(built["files"]["raw_calib"]))


def test_q2_rejects_unrepresentative_calibration(namespace, built):
    noise = np.random.default_rng(0).random(built["calib"].shape, dtype=np.float32)
    fails(namespace, "q2", "not training photos", calibration_images=noise)


@pytest.mark.parametrize("variant, words", [("dynamic", "dynamic-range"), ("float16", "float16 model"),
                                            ("float32", "not quantised"), ("per_tensor", "one scale per tensor")])
def test_q2_names_the_wrong_kind_of_model(namespace, built, variant, words):
    fails(namespace, "q2", words, static_file=str(built["files"][variant]),
          static_agreement=export.top1_agreement(built["logits"][variant], built["float_logits"]),
          static_test_acc=acc(built, variant))


def test_q2_names_swapped_or_wrong_numbers(namespace, built):
    static_acc, float_acc = acc(built, "static"), acc(built, "float32")
    assert abs(static_acc - namespace["static_agreement"]) > 0.01 and abs(static_acc - float_acc) > 0.01
    fails(namespace, "q2", "not with the labels", static_agreement=static_acc)
    fails(namespace, "q2", "float model's accuracy", static_test_acc=float_acc)
    fails(namespace, "q2", "percentage", static_agreement=100 * namespace["static_agreement"])
    fails(namespace, "q2", "percentage", static_test_acc=100 * static_acc)
    fails(namespace, "q2", "the grader measures", static_test_acc=static_acc + 0.05)
    fails(namespace, "q2", "should be a float", static_agreement=...)


def test_q2_rejects_missing_or_malformed_inputs(namespace, built, tmp_path):
    fails(namespace, "q2", "file was not found", static_file=str(tmp_path / "none.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    fails(namespace, "q2", "not an ONNX model", static_file=str(bad))
    fails(namespace, "q2", "shape (N, 3, 64, 64)", calibration_images=built["calib"][:, 0])
    fails(namespace, "q2", "array of photos", calibration_images=...)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "(b)"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t17.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "one letter", answer_q3=2)
