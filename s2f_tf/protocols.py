"""Who a voice is matched against: the evaluation protocols and their figures (numpy only).

A protocol says which face counts as a query's match and what stands for each other identity:
  identity_mean  (SF2F; the default)  the mean face feature of the identity's OTHER clips (the
                 query's own clip left out: SF2F's faces never come from the voice's clip); each
                 distractor identity the mean face feature of its clips
  identity_face  (SSS, "Seeking the Shape of Sound")  a face of the identity from another clip, or
                 its canonical face (the decoder's target) where the data has one; each distractor a
                 face of another identity
  same_clip      the query's own clip's face; each distractor the first clip of another identity.
                 It rewards what a clip's voice and face share (session, recording, day): optimistic.
Each protocol gives, for every query and every identity, a verdict: is that identity's face closer
than the query's own reference (better), as close (tied), and its expected 1:2 win (wins).

Ties never win. Scores within TIE_TOLERANCE (relative) are ties, so equal features compare equal
whatever the rounding; in 1:2 matching a tie counts half, and in a ranking the own face takes a
random place among the faces tied with it (R@K is the expected hit: with b faces closer and t tied,
min(1, max(0, (K - b) / (t + 1)))). Collapsed features therefore score chance everywhere.

  similarities(queries, candidates, metric)   [N, M] (higher: closer) by cosine, -L2, -L1
  verdicts(...)                               one protocol's verdicts ([N, U] arrays)
  retrieval_hits / matching_outcomes          per query: R@K (a gallery of G - 1 other identities,
                                              random or SF2F's fixed blocks) and 1:2 matching
  gallery_intervals                           bootstrap over speakers that redraws the galleries and
                                              distractors from the resampled speakers
  verification_auc, average_precisions        SSS's verification AUC and retrieval mAP, tie-aware
"""

from __future__ import annotations

import dataclasses

import numpy as np

NAMES = ("identity_mean", "identity_face", "same_clip")
DEFAULT = "identity_mean"
DESCRIPTIONS = {
    "identity_mean": "SF2F: the voice against the mean face feature of its identity's other clips (its "
    "own clip left out); each distractor the mean face feature of another identity's clips",
    "identity_face": "Seeking the Shape of Sound: the voice against a face of its identity from another "
    "clip (the decoder's canonical target where the data has one); each distractor a face of another "
    "identity",
    "same_clip": "the voice against its own clip's face; each distractor another identity's first "
    "clip (optimistic where a clip's voice and face share the session)",
}
METRICS = ("cosine", "l2", "l1")
TIE_TOLERANCE = 1e-9  # relative: float64 rounding between equal features is ~1e-15
BLOCKS = 3  # SF2F's test.py: blocks of 100 identities over the first 300
GALLERIES = ("random", "blocks")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def similarities(queries: np.ndarray, candidates: np.ndarray, metric: str) -> np.ndarray:
    """[N, D] x [M, D] -> [N, M], higher is closer: the cosine, or minus the L2 / L1 distance of
    unit-normalised features. Each entry by the same arithmetic, whatever its place."""
    from scipy.spatial.distance import cdist

    q, c = unit(np.asarray(queries, np.float64)), unit(np.asarray(candidates, np.float64))
    if metric == "cosine":
        return q @ c.T
    return -cdist(q, c, {"l2": "euclidean", "l1": "cityblock"}[metric])


def paired_similarities(queries: np.ndarray, references: np.ndarray, metric: str) -> np.ndarray:
    """[N, D] x [N, D] -> [N]: row i against reference i, by `similarities` itself (in chunks)."""
    out = []
    for i in range(0, len(queries), 256):
        out.append(np.diagonal(similarities(queries[i : i + 256], references[i : i + 256], metric)))
    return np.concatenate(out) if out else np.zeros(0)


def compare(own: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Own scores [N] against others [N, M] (higher: closer) -> (strictly closer, tied) bool [N, M]."""
    tol = TIE_TOLERANCE * np.maximum(1.0, np.abs(own))[:, None]
    diff = others - own[:, None]
    return diff > tol, np.abs(diff) <= tol


def win_fraction(own: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Own scores [N] against others [N, M] -> [N, M]: 1 own closer, 0.5 tied, 0 other closer."""
    better, tied = compare(own, others)
    return 1.0 - better - 0.5 * tied


@dataclasses.dataclass
class Verdicts:
    """One protocol's verdicts on every query against every identity (columns: sorted identities)."""

    protocol: str
    identities: np.ndarray  # [U]
    column: np.ndarray  # [N] each query's identity column
    better: dict  # metric -> bool [N, U]: identity u's face strictly closer than the own reference
    tied: dict  # metric -> bool [N, U]
    wins: np.ndarray  # [N, U] expected 1:2 win (cosine) of the own reference over identity u
    has_own: np.ndarray  # [N] bool: the query has an own reference
    references: np.ndarray | None = None  # [N, D] the own reference, where it is one feature

    def other(self) -> np.ndarray:
        """[N, U] bool: identity u is not the query's own."""
        return self.column[:, None] != np.arange(len(self.identities))[None, :]


def _identity_columns(speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    identities, column = np.unique(speakers, return_inverse=True)
    return identities, column.reshape(-1)


def single_reference_verdicts(
    protocol: str,
    queries: np.ndarray,
    own: np.ndarray,
    representatives: np.ndarray,
    column: np.ndarray,
    identities: np.ndarray,
    has_own: np.ndarray | None = None,
) -> Verdicts:
    """Queries [N, D] each against its own reference own [N, D] and every identity's one
    representative [U, D] (the query's own identity's column is never a distractor)."""
    has_own = np.ones(len(queries), bool) if has_own is None else has_own
    better, tied, wins = {}, {}, None
    for metric in METRICS:
        own_score = paired_similarities(queries, own, metric)  # [N]
        better[metric], tied[metric] = compare(
            own_score, similarities(queries, representatives, metric)
        )
        if metric == "cosine":
            wins = 1.0 - better[metric] - 0.5 * tied[metric]
    return Verdicts(protocol, identities, column, better, tied, wins, has_own, own)


def identity_means(
    v_f: np.ndarray, speakers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per identity the mean face feature [U, D]; per clip the mean of its identity's OTHER clips
    [N, D] (NaN rows where the identity has no other clip) and whether it has one [N]."""
    identities, column = _identity_columns(speakers)
    v_f = np.asarray(v_f, np.float64)
    sums = np.zeros((len(identities), v_f.shape[1]))
    np.add.at(sums, column, v_f)
    counts = np.bincount(column, minlength=len(identities)).astype(np.float64)
    means = sums / counts[:, None]
    others = counts[column] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        leave_one_out = (sums[column] - v_f) / others[:, None]
    return means, leave_one_out, others > 0


def verdicts(
    protocol: str,
    v_s: np.ndarray,
    v_f: np.ndarray,
    speakers: np.ndarray,
    canonical: np.ndarray | None = None,
    seed: int = 0,
) -> Verdicts:
    """One protocol's verdicts for queries v_s [N, D] against the clips' faces v_f [N, D].
    canonical [N, D]: each clip's identity's canonical face feature (identity_face uses it)."""
    identities, column = _identity_columns(speakers)
    if protocol == "identity_mean":
        means, loo, has_own = identity_means(v_f, speakers)
        own = np.where(has_own[:, None], loo, means[column])  # no other clip: never counted
        return single_reference_verdicts(protocol, v_s, own, means, column, identities, has_own)
    if protocol == "same_clip":
        first = np.array([np.flatnonzero(column == u)[0] for u in range(len(identities))])
        return single_reference_verdicts(protocol, v_s, v_f, v_f[first], column, identities)
    if protocol == "identity_face":
        if canonical is not None:
            first = np.array([np.flatnonzero(column == u)[0] for u in range(len(identities))])
            return single_reference_verdicts(
                protocol, v_s, canonical, canonical[first], column, identities
            )
        return _other_clip_verdicts(v_s, v_f, column, identities, seed)
    raise ValueError(f"unknown protocol {protocol!r}: one of {', '.join(NAMES)}")


def _other_clip_verdicts(
    v_s: np.ndarray, v_f: np.ndarray, column: np.ndarray, identities: np.ndarray, seed: int
) -> Verdicts:
    """identity_face without canonical faces: the own face is another clip of the identity. For
    ranking, one seeded pick of the own face and of each identity's face per query; for 1:2
    matching, the exact mean over every own face and every face of the other identity."""
    rng = np.random.default_rng(seed)
    n, u = len(v_s), len(identities)
    members = [np.flatnonzero(column == k) for k in range(u)]
    own_pick = np.array([_pick_other(rng, members[column[i]], i) for i in range(n)])
    has_own = own_pick >= 0
    rep_pick = np.stack([rng.choice(m, n) for m in members], axis=1)  # [N, U] one clip of each
    rows = np.arange(n)[:, None]
    onehot = np.zeros((n, u))
    onehot[np.arange(n), column] = 1.0
    better, tied = {}, {}
    for metric in METRICS:
        scores = similarities(v_s, v_f, metric)  # [N, N] query x clip face
        own = scores[np.arange(n), np.maximum(own_pick, 0)]
        better[metric], tied[metric] = compare(own, scores[rows, rep_pick])
        if metric == "cosine":
            wins = np.full((n, u), np.nan)
            for i in np.flatnonzero(has_own):
                mine = np.setdiff1d(members[column[i]], [i])
                per_face = win_fraction(scores[i, mine], np.broadcast_to(scores[i], (len(mine), n)))
                wins[i] = per_face.mean(axis=0) @ onehot / onehot.sum(axis=0)
    return Verdicts("identity_face", identities, column, better, tied, wins, has_own)


def _pick_other(rng, members: np.ndarray, i: int) -> int:
    others = members[members != i]
    return int(rng.choice(others)) if len(others) else -1


# --- galleries and per-query figures ------------------------------------------------------------


def block_of(n_identities: int, size: int, galleries: str) -> tuple[np.ndarray, int]:
    """Per identity column its gallery block (-1: in no block) and the gallery size G. random: one
    block of every identity, G = min(size, U); blocks (SF2F's test.py): consecutive blocks of
    G = min(size, U) identities over the first BLOCKS * G."""
    g = min(size, n_identities)
    if galleries == "random":
        return np.zeros(n_identities, np.int64), g
    if galleries != "blocks":
        raise ValueError(f"galleries must be one of {', '.join(GALLERIES)}, got {galleries!r}")
    blocks = min(BLOCKS, n_identities // g)
    block = np.arange(n_identities) // g
    return np.where(block < blocks, block, -1), g


def retrieval_hits(
    v: Verdicts,
    metric: str,
    ks,
    block: np.ndarray,
    gallery_size: int,
    rng: np.random.Generator,
    picks: np.ndarray | None = None,
) -> np.ndarray:
    """Per query [N, len(ks)] the expected R@K hit in a gallery of the own reference and G - 1
    identities drawn from `picks` (identity columns, repeats allowed; default every identity once)
    among the other identities of the query's block (NaN: no own reference or no block)."""
    picks = np.arange(len(v.identities)) if picks is None else picks
    eligible = (picks[None, :] != v.column[:, None]) & (
        block[picks][None, :] == block[v.column][:, None]
    )  # [N, P]
    rows = np.arange(len(v.column))[:, None]
    better, tied = v.better[metric][rows, picks[None, :]], v.tied[metric][rows, picks[None, :]]
    if eligible.sum(axis=1).max(initial=0) > gallery_size - 1:  # draw G - 1 of the eligible
        keys = np.where(eligible, rng.random(eligible.shape), 2.0)
        cut = np.partition(keys, gallery_size - 2, axis=1)[:, gallery_size - 2 : gallery_size - 1]
        eligible &= keys <= cut
    b = np.sum(better & eligible, axis=1)[:, None]  # [N, 1] closer than the own reference
    t = np.sum(tied & eligible, axis=1)[:, None]
    hits = np.clip((np.asarray(ks)[None, :] - b) / (t + 1.0), 0.0, 1.0)
    ok = v.has_own & (block[v.column] >= 0)
    return np.where(ok[:, None], hits, np.nan)


def matching_outcomes(v: Verdicts, groups: np.ndarray | None = None, weights=None) -> np.ndarray:
    """1:2 matching per query [N]: the own reference against every other identity in turn (with
    `groups` [N], only identities of the query's group, e.g. the same sex), the exact expectation of
    the random-pair protocol; a tie counts half; NaN where there is no distractor or own reference.
    weights [U] or [R, U]: how often each identity counts as a distractor (-> [N] or [N, R])."""
    eligible = _distractors(v, groups)
    w = np.ones(len(v.identities)) if weights is None else np.asarray(weights, np.float64)
    count = eligible.astype(np.float64) @ w.T
    total = np.where(eligible, v.wins, 0.0) @ w.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _distractors(v: Verdicts, groups: np.ndarray | None) -> np.ndarray:
    """[N, U] bool: identity u is a 1:2 distractor for query i (another identity, of its group)."""
    eligible = v.other() & v.has_own[:, None] & np.isfinite(v.wins)
    if groups is not None:
        g = np.asarray(groups, np.float64)
        first = np.unique(v.column, return_index=True)[1]
        eligible &= (g[first][None, :] == g[:, None]) & np.isfinite(g)[:, None]
    return eligible


def chance(ks, gallery_size: int) -> dict:
    return {f"R@{k}": min(k, gallery_size) / gallery_size for k in ks}


# --- the bootstrap that redraws galleries and distractors ----------------------------------------


def gallery_intervals(
    v: Verdicts,
    ks,
    block: np.ndarray,
    gallery_size: int,
    groups: dict | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap over speakers of the cosine R@K and 1:2 matching: each resample draws
    the speakers with replacement, and each query's gallery and distractors come from the resampled
    speakers (a speaker drawn twice is two distractors). groups: {name: [N] labels} for matching
    within a group ("same_sex"). Returns {"retrieval_R@k" | "matching_1:2[_name]": {value, low, high}}
    with the value on all speakers (seed's galleries), the interval bias-corrected (below)."""
    rng = np.random.default_rng(seed)
    u = len(v.identities)
    point = retrieval_hits(v, "cosine", ks, block, gallery_size, np.random.default_rng(seed))
    matching = {"matching_1:2": (None, matching_outcomes(v))}
    for name, labels in (groups or {}).items():
        matching[f"matching_1:2_{name}"] = (labels, matching_outcomes(v, labels))
    draws = {f"retrieval_R@{k}": [] for k in ks}
    picks = np.sort(rng.integers(0, u, (resamples, u)), axis=1)  # [R, U] each resample's speakers
    m = np.stack([np.bincount(p, minlength=u) for p in picks]).astype(np.float64)  # [R, U]
    if gallery_size >= u and (block == 0).all():  # the gallery: every other resampled speaker
        other = v.other()
        b = (v.better["cosine"] & other).astype(np.float64) @ m.T  # [N, R]
        t = (v.tied["cosine"] & other).astype(np.float64) @ m.T
        for k in ks:
            hits = np.where(v.has_own[:, None], np.clip((k - b) / (t + 1.0), 0.0, 1.0), np.nan)
            draws[f"retrieval_R@{k}"] = list(_weighted_means(hits, m[:, v.column].T))
    for r in range(resamples if gallery_size < u or (block != 0).any() else 0):
        hits = retrieval_hits(v, "cosine", ks, block, gallery_size, rng, picks[r])
        for j, k in enumerate(ks):  # each query counts as often as its speaker was drawn
            draws[f"retrieval_R@{k}"].append(_weighted_mean(hits[:, j], m[r, v.column]))
    for name, (labels, _) in matching.items():
        outcomes = matching_outcomes(v, labels, m)  # [N, R]
        draws[name] = list(_weighted_means(outcomes, m[:, v.column].T))
    values = {f"retrieval_R@{k}": _weighted_mean(point[:, j], None) for j, k in enumerate(ks)}
    values |= {name: _weighted_mean(out, None) for name, (_, out) in matching.items()}
    tail = 100 * (1 - level) / 2
    out = {}
    for name, samples in draws.items():
        s = np.asarray(samples)
        s = s[np.isfinite(s)]
        # bias-corrected: a resample's galleries hold its speakers' twins, which lifts the mean of a
        # rank figure above the value (a convex function of the count of closer faces); the
        # resamples are shifted by their mean minus the value, their spread kept
        s = np.clip(s - (s.mean() - values[name]), 0.0, 1.0) if len(s) else s
        low, high = np.percentile(s, [tail, 100 - tail]) if len(s) else (np.nan, np.nan)
        out[name] = {"value": values[name], "low": float(low), "high": float(high)}
    return out


def _weighted_means(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Columns of x [N, R] weighted by w [N, R] (non-finite x left out) -> [R]."""
    w = np.where(np.isfinite(x), w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(np.nan_to_num(x) * w, axis=0) / np.sum(w, axis=0)


def _weighted_mean(x: np.ndarray, w: np.ndarray | None) -> float:
    if w is None:  # as metrics' figures average their per-query arrays
        return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")
    ok = np.isfinite(x) & (w > 0)
    return float(np.sum(x[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else float("nan")


# --- SSS's verification AUC and retrieval mAP ---------------------------------------------------


def verification_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve of same-identity (positive) against different-identity (negative)
    pair scores (higher: more alike): the chance a positive outscores a negative, ties half."""
    positives, negatives = np.ravel(positives), np.sort(np.ravel(negatives))
    if not len(positives) or not len(negatives):
        return float("nan")
    tol = TIE_TOLERANCE * np.maximum(1.0, np.abs(positives))
    below = np.searchsorted(negatives, positives - tol, side="left")
    at_most = np.searchsorted(negatives, positives + tol, side="right")
    return float(np.sum(below + 0.5 * (at_most - below)) / (len(positives) * len(negatives)))


def average_precisions(scores: np.ndarray, relevant: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per query [N] the average precision of ranking the valid candidates (scores [N, M], higher
    first) for the relevant ones, in expectation over the order of tied candidates; NaN: none
    relevant. A relevant candidate in a group of t tied ones holding r relevant, after T candidates
    holding R relevant, at place p of the group (each equally likely) has
    R + 1 + (p - 1)(r - 1)/(t - 1) relevant ones at or above it, at rank T + p."""
    out = np.full(len(scores), np.nan)
    for i in range(len(scores)):
        s, rel = scores[i][valid[i]], relevant[i][valid[i]]
        if rel.any():
            order = np.argsort(-s, kind="stable")
            out[i] = _tied_average_precision(s[order], rel[order].astype(np.float64))
    return out


def _tied_average_precision(s: np.ndarray, rel: np.ndarray) -> float:
    """Scores sorted high to low [M] and their relevance [M] -> the expected average precision."""
    new_group = np.r_[True, -np.diff(s) > TIE_TOLERANCE * np.maximum(1.0, np.abs(s[1:]))]
    starts = np.flatnonzero(new_group)
    t = np.diff(np.r_[starts, len(s)])  # [G] group sizes
    r = np.add.reduceat(rel, starts)  # [G] relevant in each group
    before = starts.astype(np.float64)  # T
    seen = np.cumsum(r) - r  # R
    total = np.sum(np.where((t == 1) & (r > 0), (seen + 1) / (before + 1), 0.0))
    for g in np.flatnonzero((t > 1) & (r > 0)):
        p = np.arange(1, t[g] + 1)
        total += r[g] * np.mean((seen[g] + 1 + (p - 1) * (r[g] - 1) / (t[g] - 1)) / (before[g] + p))
    return float(total / rel.sum())


def identity_face_figures(
    v_s: np.ndarray,
    v_f: np.ndarray,
    speakers: np.ndarray,
    canonical: np.ndarray | None = None,
    sex: np.ndarray | None = None,
) -> dict:
    """SSS's verification and retrieval on every voice against every face that stands for an
    identity (each identity's canonical face where the data has them, else every other clip's
    face): verification AUC over all pairs (same_sex: different-identity pairs of the same sex
    only), and retrieval mAP with its chance (every score tied)."""
    speakers = np.asarray(speakers)
    if canonical is not None:
        first = np.unique(speakers, return_index=True)[1]
        faces, face_speakers = canonical[first], speakers[first]
        valid = np.ones((len(v_s), len(first)), bool)
    else:
        faces, face_speakers = v_f, speakers
        valid = ~np.eye(len(v_s), dtype=bool)  # never the query's own clip
    scores = similarities(v_s, faces, "cosine")  # [N, M]
    same = speakers[:, None] == face_speakers[None, :]
    auc = {"unconstrained": verification_auc(scores[valid & same], scores[valid & ~same])}
    if sex is not None:
        face_sex = np.asarray(sex, np.float64)[first] if canonical is not None else sex
        same_sex = (np.asarray(sex)[:, None] == np.asarray(face_sex)[None, :]) & valid & ~same
        auc["same_sex"] = verification_auc(scores[valid & same], scores[same_sex])
    ap = average_precisions(scores, same, valid)
    known = np.isfinite(ap)
    return {
        "verification_auc": auc,
        "retrieval_map": {
            "value": float(ap[known].mean()) if known.any() else float("nan"),
            "chance": float(np.nanmean(average_precisions(np.zeros_like(scores), same, valid))),
            "queries": int(known.sum()),
            "candidates": int(valid[0].sum()) if len(valid) else 0,
        },
    }
