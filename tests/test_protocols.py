"""The evaluation protocols (s2f_tf/protocols.py) against hand computations and against small numpy
ports of the field's own evaluation code, written here in our own words as references:

- SF2F (Bai et al., "Speech Fusion to Face", github.com/BAI-Yeqi/SF2F_PyTorch, file
  utils/s2f_evaluator.py, class S2fEvaluator): cos_query, L1_query, in_top_k, get_metrics;
- Seeking the Shape of Sound (Wen et al., CVPR 2021, github.com/KID-7391/seeking-the-shape-of-sound,
  file eval.py, class NetworkTester): eval_match, eval_verify (sklearn's roc_curve and auc),
  eval_retrival (with compute_ap).

On features without ties the ports and s2f agree to rounding; on ties they differ by design (the
references let the first or the top-k order decide; s2f counts a tie half).
"""

import numpy as np
import pytest

from s2f_tf import metrics, protocols

# --- the references, ported ----------------------------------------------------------------------


def _sf2f_in_top_k(top_k: np.ndarray, truth: np.ndarray) -> float:
    """SF2F in_top_k: the share of rows whose true index is among their top-k indices."""
    return float(np.mean([truth[i] in row for i, row in enumerate(top_k)]))


def _sf2f_recalls(table: np.ndarray, ks) -> list[float]:
    """SF2F cos_query / L1_query after their table: rank each row (higher first, torch.topk), the
    true match of row i is column i."""
    order = np.argsort(-table, axis=1, kind="stable")
    return [_sf2f_in_top_k(order[:, :k], np.arange(len(table))) for k in ks]


def _sf2f_cos_table(x, y, eps=1e-8):
    """torch.nn.CosineSimilarity(dim=-1, eps=1e-8) of every x against every y."""
    norms = np.maximum(np.linalg.norm(x, axis=1)[:, None] * np.linalg.norm(y, axis=1)[None], eps)
    return (x @ y.T) / norms


def _sf2f_l1_table(x, y):
    """L1_query's table: minus the mean absolute difference of every x against every y."""
    return -np.abs(x[:, None, :] - y[None, :, :]).mean(-1)


def _sf2f_get_metrics(pred, data, blocks=None, ks=(1, 2, 5, 10)):
    """get_metrics: mean L2, L1 (torch PairwiseDistance(data, pred), eps 1e-6 added to the
    difference) and cosine between each identity's mean face and its prediction; cosine recall@K
    over the whole set or averaged over the blocks [0:b0], [b0:b1], [b1:b2] (extraction_size)."""
    diff = data - pred + 1e-6
    cos = np.sum(data * pred, 1) / np.maximum(
        np.linalg.norm(data, axis=1) * np.linalg.norm(pred, axis=1), 1e-8
    )
    if blocks is None:
        recall = _sf2f_recalls(_sf2f_cos_table(pred, data), ks)
    else:
        edges = [0, *blocks]
        parts = [
            _sf2f_recalls(_sf2f_cos_table(pred[a:b], data[a:b]), ks)
            for a, b in zip(edges[:-1], edges[1:])
        ]
        recall = list(np.mean(parts, axis=0))
    return np.linalg.norm(diff, axis=1).mean(), np.abs(diff).sum(1).mean(), cos.mean(), recall


def _sss_cosine(x, y):
    """SSS cosine_distance: the cosine of normalised features (higher: more alike)."""
    return np.sum(protocols.unit(x) * protocols.unit(y), axis=-1)


def _sss_eval_match(triples, feats):
    """eval_match: per (voice, face of its identity, face of another) the voice's pick is its
    identity's face when that scores highest (argmax: the first of equals)."""
    hits = [np.argmax(_sss_cosine(feats[v], feats[[a, b]])) == 0 for v, a, b in triples]
    return np.mean(hits)


def _sss_roc_auc(scores, labels):
    """eval_verify: sklearn's roc_curve (one point per distinct score, highest first) and auc
    (trapezoids)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tps, fps = np.cumsum(y)[last], np.cumsum(1 - y)[last]
    tpr, fpr = np.r_[0, tps] / tps[-1], np.r_[0, fps] / fps[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _sss_compute_ap(label: np.ndarray) -> float:
    """compute_ap: the sum over relevant ranks of (recall step) x (precision at that rank)."""
    hits = np.flatnonzero(label)
    return float(np.sum((1 / len(hits)) * (np.arange(1, len(hits) + 1) / (hits + 1))))


def _sss_eval_retrival(queries, candidates, query_ids, candidate_ids):
    """eval_retrival: each query ranks every candidate (highest cosine first); mean of the APs."""
    aps = []
    for q, qid in zip(queries, query_ids):
        order = np.argsort(-_sss_cosine(q[None], candidates), kind="stable")
        aps.append(_sss_compute_ap(candidate_ids[order] == qid))
    return float(np.mean(aps))


# --- data -----------------------------------------------------------------------------------------


def _corpus(rng, identities=40, clips=3, dim=16, voice_noise=1.5, face_noise=0.8, clip_term=None):
    """Per identity a hidden vector; voices and faces of each clip see it through their own noise,
    and both sides of a clip share `clip_term` [N, D] where given (the same session)."""
    speakers = np.repeat(np.arange(identities), clips)
    hidden = rng.standard_normal((identities, dim))[speakers]
    v_s = hidden + voice_noise * rng.standard_normal(hidden.shape)
    v_f = hidden + face_noise * rng.standard_normal(hidden.shape)
    if clip_term is not None:
        v_s, v_f = v_s + clip_term, v_f + clip_term
    return v_s, v_f, speakers


# --- against the references -----------------------------------------------------------------------


def test_sf2f_cos_query_and_l1_query():
    """One prediction per identity against the identity's face embedding (SF2F's FaceNet features
    are unit-norm, so its raw L1 ranks as s2f's L1 of unit features): the same recall@K."""
    rng = np.random.default_rng(0)
    faces = protocols.unit(rng.standard_normal((30, 12)))
    preds = protocols.unit(faces + 0.9 * rng.standard_normal(faces.shape))
    ids = np.arange(30)
    v = protocols.single_reference_verdicts("identity_mean", preds, faces, faces, ids, ids)
    block, g = protocols.block_of(30, 30, "random")
    for metric, table in (
        ("cosine", _sf2f_cos_table(preds, faces)),
        ("l1", _sf2f_l1_table(preds, faces)),
    ):
        hits = protocols.retrieval_hits(v, metric, (1, 2, 5, 10), block, g, rng)
        np.testing.assert_allclose(hits.mean(0), _sf2f_recalls(table, (1, 2, 5, 10)), atol=1e-12)
        assert 0 < hits[:, 0].mean() < 1


def test_sf2f_get_metrics_distances_and_fixed_blocks():
    """get_metrics's mean L2, L1 (raw) and cosine, and its fixed-block recall (blocks of 100 over the
    first 300 identities; identities beyond are left out) against s2f's similarity figures and the
    `blocks` galleries."""
    rng = np.random.default_rng(1)
    faces = rng.standard_normal((330, 8)) * 3.0
    preds = faces + 2.0 * rng.standard_normal(faces.shape)
    l2, l1, cos, recall = _sf2f_get_metrics(preds[:300], faces[:300], blocks=[100, 200, 300])
    sim = metrics.similarity_figures(preds[:300], faces[:300])
    assert sim["l2_raw"]["mean"] == pytest.approx(l2, rel=1e-12)
    assert sim["l1_raw"]["mean"] == pytest.approx(l1, rel=1e-12)
    assert sim["cosine"]["mean"] == pytest.approx(cos, rel=1e-12)
    ids = np.arange(330)
    v = protocols.single_reference_verdicts("identity_mean", preds, faces, faces, ids, ids)
    block, g = protocols.block_of(330, 100, "blocks")
    assert g == 100 and (block[300:] == -1).all() and set(block[:300]) == {0, 1, 2}
    hits = protocols.retrieval_hits(v, "cosine", (1, 2, 5, 10), block, g, rng)
    assert np.isnan(hits[300:]).all()
    np.testing.assert_allclose(np.nanmean(hits, axis=0), recall, atol=1e-12)


def test_sss_eval_match_unconstrained_and_same_sex():
    """Every (voice, face of another clip of its identity, face of another identity) triple, as
    SSS's match lists draw them: s2f's identity_face 1:2 matching is their exact mean."""
    rng = np.random.default_rng(2)
    v_s, v_f, speakers = _corpus(rng, identities=12, clips=3)
    sex = (speakers % 2).astype(np.float64)
    feats = np.concatenate([v_s, v_f])  # voices 0..N-1, faces N..2N-1
    n = len(speakers)
    triples = {"unconstrained": [], "same_sex": []}
    for i in range(n):
        for j in np.flatnonzero((speakers == speakers[i]) & (np.arange(n) != i)):
            for k in np.flatnonzero(speakers != speakers[i]):
                triples["unconstrained"].append((i, n + j, n + k))
                if sex[k] == sex[i]:
                    triples["same_sex"].append((i, n + j, n + k))
    v = protocols.verdicts("identity_face", v_s, v_f, speakers)
    ours = {
        "unconstrained": protocols.matching_outcomes(v),
        "same_sex": protocols.matching_outcomes(v, sex),
    }
    for name, listed in triples.items():
        assert ours[name].mean() == pytest.approx(_sss_eval_match(listed, feats), abs=1e-12)
    assert 0.5 < ours["unconstrained"].mean() < 1.0


def test_sss_eval_verify_auc():
    """Every (voice, face of another clip) pair, labelled same identity or not: ROC AUC."""
    rng = np.random.default_rng(3)
    v_s, v_f, speakers = _corpus(rng, identities=15, clips=3)
    sex = (speakers % 2).astype(np.float64)
    pairs = [(i, j) for i in range(len(v_s)) for j in range(len(v_f)) if i != j]
    scores = np.array([_sss_cosine(v_s[i], v_f[j]) for i, j in pairs])
    same = np.array([speakers[i] == speakers[j] for i, j in pairs], np.int64)
    ours = protocols.identity_face_figures(v_s, v_f, speakers, sex=sex)["verification_auc"]
    assert ours["unconstrained"] == pytest.approx(_sss_roc_auc(scores, same), abs=1e-12)
    same_sex = np.array([sex[i] == sex[j] for i, j in pairs])
    keep = same.astype(bool) | same_sex
    assert ours["same_sex"] == pytest.approx(_sss_roc_auc(scores[keep], same[keep]), abs=1e-12)


def test_sss_eval_retrival_map():
    """Queries: each identity's first voice; candidates: the faces of its other clips."""
    rng = np.random.default_rng(4)
    v_s, v_f, speakers = _corpus(rng, identities=20, clips=4)
    first = np.arange(len(speakers)) % 4 == 0
    queries, candidates = v_s[first], v_f[~first]
    qid, cid = speakers[first], speakers[~first]
    scores = protocols.similarities(queries, candidates, "cosine")
    ours = protocols.average_precisions(
        scores, qid[:, None] == cid[None], np.ones_like(scores, bool)
    )
    assert ours.mean() == pytest.approx(
        _sss_eval_retrival(queries, candidates, qid, cid), abs=1e-12
    )


# --- ties, by hand --------------------------------------------------------------------------------


def _verdicts(better, tied, own_identity=None):
    better, tied = np.asarray(better, bool), np.asarray(tied, bool)
    n, u = better.shape
    column = np.zeros(n, np.int64) if own_identity is None else np.asarray(own_identity)
    wins = 1.0 - better - 0.5 * tied
    return protocols.Verdicts(
        "same_clip",
        np.arange(u),
        column,
        {"cosine": better},
        {"cosine": tied},
        wins,
        np.ones(n, bool),
    )


def test_a_tie_takes_a_random_place_and_counts_half():
    # one query (identity 0); of the 4 others, one is closer, two tie, one is farther
    v = _verdicts([[0, 1, 0, 0, 0]], [[0, 0, 1, 1, 0]])
    block, g = protocols.block_of(5, 5, "random")
    hits = protocols.retrieval_hits(v, "cosine", (1, 2, 3, 4), block, g, np.random.default_rng(0))
    np.testing.assert_allclose(hits[0], [0, 1 / 3, 2 / 3, 1])  # places 2, 3 or 4, each 1/3
    # 1:2 matching against each of the 4 in turn: 0 + 0.5 + 0.5 + 1
    assert protocols.matching_outcomes(v)[0] == pytest.approx(0.5)
    # distractors counted as often as their speaker was drawn: identity 1 twice, 4 not at all
    weights = np.array([1.0, 2.0, 1.0, 1.0, 0.0])
    assert protocols.matching_outcomes(v, weights=weights)[0] == pytest.approx((0 + 0.5 + 0.5) / 4)


def test_equal_features_compare_equal_whatever_the_arithmetic():
    face = np.array([[0.1, 0.2, 0.3] * 5])
    own, other = (
        protocols.paired_similarities(face, face, "cosine"),
        np.sum(face * face) / np.sum(face * face),
    )
    better, tied = protocols.compare(own, np.array([[other, other + 1e-15]]))
    assert not better.any() and tied.all()
    assert protocols.verification_auc(np.array([0.3]), np.array([0.3 + 1e-16, 0.1])) == 0.75


def test_tied_average_precision_is_its_expectation_over_orders():
    # 1 relevant among 4 all tied: E[1 / rank] = (1 + 1/2 + 1/3 + 1/4) / 4
    ap = protocols.average_precisions(
        np.zeros((1, 4)), np.array([[0, 0, 1, 0]], bool), np.ones((1, 4), bool)
    )
    assert ap[0] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    # 2 relevant among 3 tied: orders RRN, RNR, NRR equally likely -> APs 1, (1 + 2/3)/2, (1/2 + 2/3)/2
    ap = protocols.average_precisions(
        np.zeros((1, 3)), np.array([[1, 0, 1]], bool), np.ones((1, 3), bool)
    )
    assert ap[0] == pytest.approx((1 + (1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 3)


# --- collapsed features and a shared clip term ----------------------------------------------------


@pytest.mark.parametrize("protocol", protocols.NAMES)
def test_collapsed_features_score_chance_everywhere(protocol):
    speakers = np.repeat(np.arange(12), 3)
    same = np.ones((36, 8))
    sex = (speakers % 2).astype(np.float64)
    figures, per_query, v = metrics.protocol_figures(protocol, same, same, speakers, 6, sex=sex)
    r = figures["retrieval"]
    for metric in protocols.METRICS:
        for k in metrics.KS:
            assert r[metric][f"R@{k}"] == pytest.approx(r["chance"][f"R@{k}"], abs=1e-12)
    assert figures["matching"]["unconstrained"]["accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert figures["matching"]["same_sex"]["accuracy"] == pytest.approx(0.5, abs=1e-12)
    block, g = protocols.block_of(12, 6, "random")
    ci = protocols.gallery_intervals(v, (1,), block, g, resamples=50)
    assert ci["retrieval_R@1"]["low"] == pytest.approx(1 / 6) == ci["retrieval_R@1"]["high"]
    sss = protocols.identity_face_figures(same, same, speakers, sex=sex)
    assert sss["verification_auc"] == {"unconstrained": 0.5, "same_sex": 0.5}
    assert sss["retrieval_map"]["value"] == pytest.approx(sss["retrieval_map"]["chance"])


def test_a_shared_clip_term_inflates_only_the_same_clip_figures():
    """Voices and faces of one clip share a session term: identity-level figures stay where they are
    with an independent term of the same size, same-clip figures climb. Both are reported."""
    rng = np.random.default_rng(5)
    n, dim = 80 * 4, 16
    term = 1.2 * rng.standard_normal((n, dim))
    base = np.random.default_rng(6)
    v_s, v_f, speakers = _corpus(base, identities=80, clips=4, dim=dim)
    shared = (v_s + term, v_f + term)
    independent = (v_s + term, v_f + 1.2 * rng.standard_normal((n, dim)))
    figures = {}
    for label, (a, b) in (("shared", shared), ("independent", independent)):
        for protocol in protocols.NAMES:
            out, _, _ = metrics.protocol_figures(protocol, a, b, speakers, 20)
            figures[label, protocol] = (
                out["retrieval"]["cosine"]["R@1"],
                out["matching"]["unconstrained"]["accuracy"],
            )
    for protocol in ("identity_mean", "identity_face"):
        r1 = figures["shared", protocol][0] - figures["independent", protocol][0]
        match = figures["shared", protocol][1] - figures["independent", protocol][1]
        assert abs(r1) < 0.08 and abs(match) < 0.03, (protocol, r1, match)  # seeds: |r1| <= 0.05
    assert figures["shared", "same_clip"][0] - figures["independent", "same_clip"][0] > 0.25
    assert figures["shared", "same_clip"][1] - figures["independent", "same_clip"][1] > 0.1


# --- the bootstrap --------------------------------------------------------------------------------


def test_gallery_bootstrap_redraws_galleries_and_distractors():
    rng = np.random.default_rng(7)
    v_s, v_f, speakers = _corpus(rng, identities=40, clips=3, voice_noise=1.0)
    figures, per_query, v = metrics.protocol_figures("identity_mean", v_s, v_f, speakers, 10)
    for size in (10, 100):  # a drawn gallery of 10, and every other resampled speaker
        block, g = protocols.block_of(40, size, "random")
        ci = protocols.gallery_intervals(v, (1, 5), block, g, resamples=200)
        for name in ("retrieval_R@1", "retrieval_R@5", "matching_1:2"):
            assert ci[name]["low"] <= ci[name]["value"] <= ci[name]["high"], (size, name)
            assert ci[name]["high"] - ci[name]["low"] > 0.01
    assert ci["matching_1:2"]["value"] == pytest.approx(
        figures["matching"]["unconstrained"]["accuracy"]
    )
    noise = metrics.protocol_figures(
        "identity_mean", rng.standard_normal(v_s.shape), v_f, speakers, 10
    )[2]
    block, g = protocols.block_of(40, 10, "random")
    ci = protocols.gallery_intervals(noise, (1,), block, g, resamples=200)
    assert ci["retrieval_R@1"]["low"] < 0.1 < ci["retrieval_R@1"]["high"]
    assert ci["matching_1:2"]["low"] < 0.5 < ci["matching_1:2"]["high"]
    # a hard case: twins in the resampled galleries lift R@1's resampled mean well above the value
    # (uncorrected: [0.093, 0.20] around 0.091 on the demo model); the interval is bias-corrected
    v_s, v_f, speakers = _corpus(rng, identities=70, clips=4, voice_noise=3.0)
    hard = metrics.protocol_figures("identity_mean", v_s, v_f, speakers, 100)[2]
    block, g = protocols.block_of(70, 100, "random")
    ci = protocols.gallery_intervals(hard, (1,), block, g, resamples=300)["retrieval_R@1"]
    assert ci["low"] < ci["value"] < ci["high"] and ci["value"] < 0.5


def test_identity_mean_leaves_the_query_clip_out():
    v_f = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
    speakers = np.array([0, 0, 0, 1])
    means, loo, has_own = metrics.protocols.identity_means(v_f, speakers)
    np.testing.assert_allclose(means, [[1.0, 1.0], [5.0, 5.0]])
    np.testing.assert_allclose(loo[:3], [[1.0, 1.5], [1.5, 1.0], [0.5, 0.5]])
    assert has_own.tolist() == [True, True, True, False]
    figures, per_query, _ = metrics.protocol_figures("identity_mean", v_f, v_f, speakers, 2)
    assert (
        np.isnan(per_query["matching_1:2"][3])
        and figures["matching"]["unconstrained"]["queries"] == 3
    )
