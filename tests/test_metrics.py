"""The evaluation protocols of s2f_tf/metrics.py against hand computations on small arrays."""

import numpy as np
import pytest

from s2f_tf import metrics


def _matching(protocol, voices, faces, speakers, groups=None):
    figures, per_query, _ = metrics.protocol_figures(
        protocol, voices, faces, speakers, 2, sex=groups
    )
    return figures, per_query


def test_matching_by_hand():
    # 3 speakers, one clip each; query 0 is nearer its own face than speaker 1's, farther than speaker 2's
    faces = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    voices = np.array([[1.0, 0.5], [0.0, 1.0], [0.0, 1.0]])
    speakers = np.array([0, 1, 2])
    figures, per_query = _matching("same_clip", voices, faces, speakers)
    # q0 = (1, .5)/|.|: own cos .894, vs face 1 .447 (win), vs face 2 (.9,.1) .936 (loss) -> 0.5
    # q1 = (0, 1): own 1.0 beats both -> 1.0;
    # q2 = (0, 1): own (.9, .1) .110 loses to face 1, beats face 0 -> 0.5
    np.testing.assert_allclose(per_query["matching_1:2"], [0.5, 1.0, 0.5])
    assert figures["matching"]["unconstrained"] == {
        "accuracy": pytest.approx(2 / 3),
        "queries": 3,
        "chance": 0.5,
    }
    # identity-level: no speaker has another clip, so no query has an own reference
    figures, per_query = _matching("identity_mean", voices, faces, speakers)
    assert figures["matching"]["unconstrained"]["queries"] == 0


def test_matching_ties_count_half_and_groups_restrict_distractors():
    faces = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    speakers = np.array([0, 1, 2, 3])
    # a feature that only says "which group": the own face ties with the other face of its group and
    # beats the two faces of the other group
    _, per_query = _matching("same_clip", faces, faces, speakers)
    np.testing.assert_allclose(per_query["matching_1:2"], [(0.5 + 1 + 1) / 3] * 4)
    sex = np.array([0.0, 0.0, 1.0, np.nan])
    figures, per_query = _matching("same_clip", faces, faces, speakers, sex)
    same = per_query["matching_1:2_same_sex"]
    np.testing.assert_allclose(same[:2], [0.5, 0.5])  # only the same-group distractor: a tie
    assert np.isnan(same[2]) and np.isnan(same[3])  # no same-group distractor / unknown group
    assert figures["matching"]["same_sex"]["queries"] == 2


def test_matching_of_random_features_is_chance_within_its_interval():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(60), 4)
    v_s, v_f = rng.standard_normal((240, 32)), rng.standard_normal((240, 32))
    for protocol in ("identity_mean", "same_clip"):
        _, per_query = _matching(protocol, v_s, v_f, speakers)
        ci = metrics.mean_intervals({"m": per_query["matching_1:2"]}, speakers)["m"]
        assert ci["low"] < 0.5 < ci["high"] and ci["high"] - ci["low"] < 0.15
    perfect, _ = _matching("same_clip", v_f, v_f, speakers)
    assert perfect["matching"]["unconstrained"]["accuracy"] == 1.0


def test_retrieval_hits_match_the_figures():
    rng = np.random.default_rng(1)
    speakers = np.repeat(np.arange(10), 2)
    v_f = rng.standard_normal((20, 8))
    v_s = v_f + rng.normal(0, 1.0, v_f.shape)
    figures, per_query, _ = metrics.protocol_figures("identity_mean", v_s, v_f, speakers, 5)
    r = figures["retrieval"]
    assert r["gallery_size"] == 5 and r["protocol"] == "identity_mean" and r["queries"] == 20
    for k in (1, 5, 10):
        assert r["cosine"][f"R@{k}"] == pytest.approx(np.mean(per_query[f"retrieval_R@{k}"]))
    assert r["cosine"]["R@5"] == 1.0 and r["chance"]["R@1"] == pytest.approx(0.2)
    assert metrics.retrieval_figures(v_f, v_f, speakers, 5)["l2"]["R@1"] == 1.0  # same_clip


def test_similarity_to_the_identity_mean_by_hand():
    v_f = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, -1.0]])
    v_s = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    speakers = np.array([0, 0, 1, 1])
    figures, _, _ = metrics.protocol_figures("identity_mean", v_s, v_f, speakers, 2)
    # own references: clip 0 -> (0, 2), clip 1 -> (1, 0), clip 2 -> (0, -1), clip 3 -> (3, 3)
    s = figures["similarity"]
    assert s["cosine_angle_degrees"]["mean"] == pytest.approx((0 + 0 + 135 + 45) / 4)
    assert s["cosine"]["mean"] == pytest.approx((1 + 1 - 0.5**0.5 + 0.5**0.5) / 4)
    raw = np.linalg.norm(
        [[0, 1 + 1e-6], [1e-6, 1e-6], [-1 + 1e-6, -2 + 1e-6], [3 + 1e-6, 2 + 1e-6]], axis=1
    )
    assert s["l2_raw"]["mean"] == pytest.approx(raw.mean())


def test_confusion_matrix_and_age_bands_by_hand():
    true = np.array([0, 0, 0, 1, 1, np.nan, 2])
    pred = np.array([0, 1, 1, 1, 1, 0, 2])
    c = metrics.confusion(true, pred, ["a", "b", "c", "d"])
    assert c["counts"] == [[1, 2, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(c["row_normalised"][0], [1 / 3, 2 / 3, 0, 0])
    assert c["row_normalised"][3] is None
    assert metrics.age_band_names() == ["<18", "18-29", "30-44", "45-59", "60+"]
    np.testing.assert_array_equal(
        metrics.age_bands(np.array([10, 18, 29.9, 30, 59, 60, 77])), [0, 1, 1, 2, 3, 4, 4]
    )
    assert np.isnan(metrics.age_bands(np.array([np.nan]))[0])


def test_groupings_and_judge_agreements_by_hand():
    classes = {"sex": ["male", "female"], "age": None, "size": None}
    values = np.array([[0, 25.0, 1.1], [1, 61.0, 0.9], [1, np.nan, 1.0]])
    groups = metrics.groupings(classes, list(classes), values)
    assert sorted(groups) == ["age_band", "sex"]  # a continuous attribute other than age: none
    np.testing.assert_array_equal(groups["sex"][0], [0, 1, 1])
    np.testing.assert_array_equal(groups["age_band"][0], [1, 4, np.nan])
    assert groups["age_band"][1] == metrics.age_band_names()
    true = {"sex": np.array([0.0, 1, 1]), "age": np.array([25.0, 61, 40]), "size": np.zeros(3)}
    decoded = {"sex": np.array([0.0, 0, 1]), "age": np.array([29.0, 44, 44]), "size": np.ones(3)}
    agree = metrics.agreements(classes, true, decoded)
    assert sorted(agree) == ["age_band_agreement", "sex_agreement"]
    np.testing.assert_array_equal(agree["sex_agreement"], [1, 0, 1])
    np.testing.assert_array_equal(agree["age_band_agreement"], [1, 0, 1])  # 18-29, 60+/45-59, 30-44


def test_attribute_figures_by_hand():
    classes = {"sex": ["male", "female"], "age": None}
    true = {"sex": np.array([0, 0, 1, 1.0]), "age": np.array([20, 35, 50, 70.0])}
    decoded = {"sex": np.array([0, 1, 1, 1.0]), "age": np.array([22, 33, 55, 65.0])}
    labels = {"sex": np.array([0, 0, 1, np.nan]), "age": np.array([21, 34, 52, 71.0])}
    out = metrics.attribute_figures(classes, true, decoded, labels)
    assert (
        out["sex"]["agreement"] == 0.75 and out["sex"]["classifier_accuracy_on_true_faces"] == 1.0
    )
    assert out["sex"]["confusion"]["counts"] == [[1, 1], [0, 2]]
    assert out["age"]["pearson_r"] == pytest.approx(np.corrcoef(true["age"], decoded["age"])[0, 1])
    assert out["age"]["band_agreement"] == 1.0  # 18-29, 30-44, 45-59, 60+ on both sides
    assert out["age"]["band_confusion"]["counts"][1][1] == 1


def test_bootstrap_resamples_speakers():
    speakers = np.array([0] * 8 + [1, 2, 3, 4])
    values = np.array([1.0] * 8 + [0.0] * 4)
    ci = metrics.mean_intervals({"v": values}, speakers, resamples=400)["v"]
    assert ci["value"] == pytest.approx(8 / 12)
    # resampling speakers, not clips: speaker 0 (8 clips of 1.0) is absent from ~1/3 of the resamples
    assert ci["low"] == 0.0 and ci["high"] > 0.8
    constant = metrics.mean_intervals({"v": np.full(12, 0.3)}, speakers)["v"]
    assert constant == {
        "value": pytest.approx(0.3),
        "low": pytest.approx(0.3),
        "high": pytest.approx(0.3),
    }
    assert metrics.mean_intervals({"v": values}, speakers, seed=3) == metrics.mean_intervals(
        {"v": values}, speakers, seed=3
    )


def test_group_breakdown_by_hand():
    speakers = np.array([0, 0, 1, 1, 2, 2])
    hits = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    sex = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    out = metrics.group_breakdown(
        {"hit": hits}, speakers, {"sex": (sex, ["male", "female", "other"])}, resamples=50
    )
    assert set(out["sex"]) == {"male", "female"}  # no clip of "other": left out
    assert out["sex"]["male"]["clips"] == 2 and out["sex"]["female"]["speakers"] == 2
    assert (
        out["sex"]["male"]["hit"]["value"] == 1.0 and out["sex"]["female"]["hit"]["value"] == 0.25
    )


def _face_layout(rng, n):
    """Random but face-like iBUG-68 layouts: a base layout with per-face scale of each region."""
    base = rng.uniform(0.2, 0.8, (68, 2))
    return base[None] * rng.uniform(0.8, 1.2, (n, 1, 2)) + rng.normal(0, 0.02, (n, 68, 2))


def test_craniofacial_measurements_by_hand():
    p = np.zeros((1, 68, 2))
    p[0, 31], p[0, 35] = (0.4, 0.6), (0.6, 0.6)  # alae 0.2 apart
    p[0, 27], p[0, 33] = (0.5, 0.3), (0.5, 0.7)  # nasion - subnasale 0.4
    p[0, 62], p[0, 66] = (0.5, 0.78), (0.5, 0.82)  # stomion (0.5, 0.8)
    p[0, 51], p[0, 57] = (0.5, 0.75), (0.5, 0.9)
    p[0, 1], p[0, 15], p[0, 48], p[0, 54] = (0.1, 0.5), (0.9, 0.5), (0.4, 0.8), (0.6, 0.8)
    m = metrics.craniofacial_measurements(p)
    assert m["nose_width"][0] == pytest.approx(0.2) and m["nose_height"][0] == pytest.approx(0.4)
    assert m["nasal_index"][0] == pytest.approx(0.5) and m["upper_lip_height"][0] == pytest.approx(
        0.1
    )
    assert m["vermilion_height_index"][0] == pytest.approx(0.05 / 0.1)
    assert m["mouth_face_width_index"][0] == pytest.approx(0.2 / 0.8)
    with pytest.raises(ValueError, match="iBUG-68"):
        metrics.craniofacial_measurements(np.zeros((2, 5, 2)))


def test_craniofacial_correlation_against_random_pairing():
    rng = np.random.default_rng(2)
    reference = _face_layout(rng, 120)
    speakers = np.arange(120) // 2
    close = metrics.craniofacial_figures(
        reference,
        reference + rng.normal(0, 0.002, reference.shape),
        speakers,
        resamples=100,
        pairings=50,
    )
    unrelated = metrics.craniofacial_figures(
        reference, _face_layout(rng, 120), speakers, resamples=100, pairings=50
    )
    for name in metrics.CRANIOFACIAL:
        assert close[name]["pearson_r"]["value"] > 0.8, name
        assert close[name]["pearson_r"]["low"] > close[name]["random_pairing_r"]["high"], name
        assert abs(close[name]["random_pairing_r"]["mean"]) < 0.1, name
        assert unrelated[name]["pearson_r"]["low"] < 0.3, name


def test_histogram():
    h = metrics.histogram(np.array([0.0, 5.0, 90.0, 179.9, np.nan]), bins=4)
    assert h["counts"] == [2, 0, 1, 1] and h["edges"][0] == 0.0 and h["edges"][-1] == 180.0
