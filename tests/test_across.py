"""Conclusions across datasets: on synthetic per-dataset scores where the answer is known, the
report's Friedman / Wilcoxon / Holm numbers equal scipy's and statsmodels' on the same numbers,
the significance it states is right, and the critical-difference diagram is written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from sweeper.results import across, collect, plots, report
from tests.test_rigour import schema2_record, write_point

N_DATASETS = 60


def known_scores(seed: int = 0) -> dict[str, np.ndarray]:
    """a beats b on 48 of 60 datasets (80%); c equals b (the same scores, shuffled noise of zero
    mean is not needed: equal means equal); d is b with symmetric noise (no real difference)."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0.6, 0.8, N_DATASETS)
    a = b + np.where(
        np.arange(N_DATASETS) < 48, rng.uniform(0.01, 0.05, N_DATASETS), -rng.uniform(0.0, 0.01, N_DATASETS)
    )
    d = b + rng.normal(0, 0.01, N_DATASETS)
    return {"m/a": a, "m/b": b, "m/c": b.copy(), "m/d": d}


def as_points(scores: dict[str, np.ndarray], task: str = "classification") -> pd.DataFrame:
    """Rows shaped like tables.method_points: one validation-selected score per dataset and method."""
    rows = [
        {"task": task, "dataset": f"fam{i % 3}_ds{i:02d}", "unit": unit, "mean": float(values[i])}
        for unit, values in scores.items()
        for i in range(N_DATASETS)
    ]
    return pd.DataFrame(rows)


def test_friedman_wilcoxon_and_holm_equal_scipy_and_statsmodels():
    scores = known_scores()
    study = across.across_datasets(as_points(scores), "classification")
    assert study.n_datasets == N_DATASETS and study.left_out == []
    chi2, p = study.friedman
    expected = stats.friedmanchisquare(*scores.values())
    assert chi2 == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)

    pairs = study.pairwise.set_index(["a", "b"])
    raw = [stats.wilcoxon(scores[a], scores[b]).pvalue if not np.array_equal(scores[a], scores[b]) else 1.0
           for a, b in pairs.index]  # fmt: skip
    assert pairs["p"].tolist() == pytest.approx(raw)
    assert pairs["p_holm"].tolist() == pytest.approx(list(multipletests(raw, method="holm")[1]))

    # what the numbers must say: a beats b (and c, d); b, c and d do not differ
    assert pairs.loc[("m/a", "m/b"), "p_holm"] < 0.05 and pairs.loc[("m/a", "m/b"), "better"] == "m/a"
    assert pairs.loc[("m/b", "m/c"), "p_holm"] == 1.0 and pairs.loc[("m/b", "m/c"), "better"] == ""
    assert pairs.loc[("m/b", "m/d"), "p_holm"] > 0.05
    ranks = study.ranks
    assert ranks.index[0] == "m/a"
    expected_ranks = pd.DataFrame(scores).rank(axis=1, ascending=False).mean()
    assert ranks.to_dict() == pytest.approx(expected_ranks.to_dict())
    table = study.table.set_index("unit")
    assert np.isnan(table.loc["m/a", "p_vs_best"]) and table.loc["m/b", "p_vs_best"] < 0.05
    assert "N = 60 datasets" in study.verdict() and "the methods differ" in study.verdict()
    assert "3 of 6 pairs differ" in study.verdict()


def test_two_equal_methods_are_no_conclusion_and_lower_is_better_is_respected():
    rng = np.random.default_rng(1)
    base = rng.uniform(20, 40, N_DATASETS)
    equal = {"m/x": base, "m/y": base + rng.normal(0, 0.5, N_DATASETS)}
    study = across.across_datasets(as_points(equal, "lm"), "lm")
    assert study.friedman is None  # two methods: Wilcoxon alone
    assert study.pairwise["p"].iloc[0] == pytest.approx(stats.wilcoxon(equal["m/x"], equal["m/y"]).pvalue)
    assert study.pairwise["p_holm"].iloc[0] > 0.05 and "0 of 1 pairs differ" in study.verdict()

    lower = {"m/x": base, "m/y": base * 1.1}  # perplexity: x is better everywhere
    study = across.across_datasets(as_points(lower, "lm"), "lm")
    assert study.pairwise["better"].iloc[0] == "m/x" and study.ranks.index[0] == "m/x"


def test_few_datasets_or_a_sparse_method_are_said():
    scores = {k: v[:3] for k, v in known_scores().items()}
    points = as_points({k: np.resize(v, N_DATASETS) for k, v in scores.items()})
    few = across.across_datasets(points[points["dataset"].isin(points["dataset"].unique()[:3])], "classification")
    assert few.friedman is None and few.pairwise.empty and "no conclusion across datasets" in few.verdict()
    sparse = as_points(known_scores())
    sparse = sparse[~((sparse["unit"] == "m/d") & (sparse["dataset"] > "fam0_ds05"))]  # d on a few datasets only
    study = across.across_datasets(sparse, "classification")
    assert study.left_out == ["m/d"] and study.n_datasets == N_DATASETS
    assert "m/d" not in study.ranks.index  # no rank, so no place on the CD diagram


def test_a_verdict_says_when_no_pair_can_reach_significance():
    five = as_points(known_scores())
    five = five[five["dataset"].isin(sorted(five["dataset"].unique())[:5])]
    study = across.across_datasets(five, "classification")
    # exact Wilcoxon on 5 differences: p >= 2/32; Holm over 6 pairs: >= 0.375
    assert across.smallest_pair_p(5, 6) == pytest.approx(0.375)
    assert "with 5 datasets no pair can" in study.verdict() and (study.pairwise["p_holm"] >= 0.05).all()
    assert "no pair can" not in across.across_datasets(as_points(known_scores()), "classification").verdict()


def test_constant_seed_scores_are_no_welch_test(tmp_path):
    from sweeper.results import significance

    # np.std of three 0.7s is 1.4e-16, not 0: Welch's t would call 0.71 vs 0.70 a certain difference
    runs = (str(tmp_path / "s0"), str(tmp_path / "s1"), str(tmp_path / "s2"))  # no predictions: tolerance rule
    a = significance.Side(0.71, (0.71,) * 3, (0, 1, 2), runs)
    b = significance.Side(0.70, (0.70,) * 3, (0, 1, 2), runs)
    assert significance.compare_points(a, b, True, 0.005).test == significance.TOLERANCE


def test_cd_diagram_and_families(tmp_path):
    points = as_points(known_scores())
    families = pd.Series({dataset: dataset.split("_")[0] for dataset in points["dataset"].unique()})
    studies = across.studies(points, families)
    assert [s.scope for s in studies] == ["all datasets", "family fam0", "family fam1", "family fam2"]
    assert all(s.n_datasets == 20 for s in studies[1:])
    path = plots.cd_diagram(studies[0], tmp_path / "cd.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    placeholder = across.across_datasets(points[points["dataset"] < "fam0_ds03"], "classification")
    assert plots.cd_diagram(placeholder, tmp_path / "none.png").stat().st_size > 0


def write_known_sweep(root) -> None:
    """Records of 12 datasets (two families) x three methods; lora beats full on 10 of them."""
    rng = np.random.default_rng(2)
    for i in range(12):
        dataset = f"{'fa' if i < 6 else 'fb'}_d{i:02d}"
        full = float(rng.uniform(0.6, 0.7))
        lift = 0.05 if i < 10 else -0.01
        for method, score in [("full", full), ("lora", full + lift), ("ia3", full + float(rng.normal(0, 0.005)))]:
            record = schema2_record(dataset, "m", method, 0, score, score, r=8 if method == "lora" else None)
            record["family"] = dataset.split("_")[0]
            write_point(root, record)


def test_report_opens_with_the_conclusion_across_datasets(tmp_path):
    write_known_sweep(tmp_path / "runs")
    written = report.write_report(collect.load_records(tmp_path), tmp_path / "report")
    text = written["summary.md"].read_text()
    first_table = text.index("| method |")
    assert text.index("## classification: methods across datasets") < first_table < text.index("Scores per dataset")
    assert "N = 12 datasets, k = 3 methods; Friedman" in text and "(Wilcoxon signed-rank, Holm)" in text
    assert "![cd_classification.png](cd_classification.png)" in text
    assert written["cd_classification.png"].stat().st_size > 5000
    pairs = pd.read_csv(written["pairwise.csv"])
    assert set(pairs["scope"]) == {"all datasets", "family fa", "family fb"}
    pairs = pairs[pairs["scope"] == "all datasets"].set_index(["a", "b"])
    assert pairs.loc[("m/full", "m/lora"), "better"] == "m/lora" and pairs.loc[("m/full", "m/lora"), "p_holm"] < 0.05
    assert text.index("### family fa") < text.index("### family fb")  # per-dataset rows grouped by family
    page = written["summary.html"].read_text()
    assert "data:image/png;base64," in page and "http" not in page.split("<script>")[1]  # self-contained
