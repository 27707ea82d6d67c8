"""What the book's figures show, as a reader sees them (issue 19): axes in the range of what they plot, a key for
every colour, and legends that do not sit on the lines they describe."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from saelib.plots import asymmetry, geometry, pooling, stability, synthetic


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _grid_table(value: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": [3, 3],
            "variant": ["topk", "topk"],
            "d_sae": [128, 256],
            "mean_stability": [value, value],
            "unstable_share": [value, value],
            "null_stability": [0.0, 0.0],
        }
    )


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_grid_stability_shows_the_whole_unit_interval(value):
    # A flat share of 1.0 used to autoscale to 0.96-1.04, reading like a spread around 1.
    for y in ("mean_stability", "unstable_share"):
        lo, hi = stability.plot_grid_stability(_grid_table(value), y).get_ylim()
        assert lo <= 0.0 and hi >= 1.0


def test_stability_vs_frequency_has_a_key_for_the_label_colours():
    latents = pd.DataFrame(
        {
            "frequency": [0.001, 0.01, 0.1, 0.2, 0.0, 0.05],
            "stability": [0.0, 0.5, 1.0, 1.0, 0.0, 0.0],
            "label": ["unstable", "intermediate", "stable", "stable", "unstable", "unstable"],
        }
    )
    ax = stability.plot_stability_vs_frequency(latents)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["mean per frequency bin", "unstable", "intermediate", "stable"]
    # Only the labels present get a key.
    ax = stability.plot_stability_vs_frequency(latents[latents.label == "unstable"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean per frequency bin", "unstable"]


def test_sweep_ticks_are_the_swept_values_and_the_legend_is_off_the_lines():
    df = pd.DataFrame(
        {
            "group_rank": [1, 4],
            "stability_isolated": [1.0, 1.0],
            "stability_group": [1.0, 0.8],
            "overlap_cross_seed": [1.0, 1.0],
            "overlap_random": [0.03, 0.13],  # the null, low: where the old lower-left legend covered it
        }
    )
    ax = synthetic.plot_sweep(df, "group_rank")
    assert list(ax.get_xticks()) == [1, 4]
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1, "the legend overlaps the plotting area"


def test_match_survival_legend_leaves_the_low_cosines_free():
    rng = np.random.default_rng(0)
    samples = {"standard seeds": rng.uniform(0.1, 0.25, 200), "pooled SAEs": rng.uniform(0.1, 0.3, 200)}
    ax = pooling.plot_match_survival(samples, tau=0.7)
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    x_at_legend = ax.transData.inverted().transform((legend.x0, legend.y0))[0]
    assert x_at_legend > 0.3, "the legend covers the curves"


def test_grid_geometry_overlap_and_share_panels_show_the_unit_interval():
    points = pd.DataFrame(
        {
            "d_sae": [128, 256],
            "variant": ["topk", "topk"],
            "layer": [3, 3],
            "overlap_fixed_unstable": [0.1, 0.12],
            "overlap_fixed_covariance": [0.6, 0.7],
            "overlap_fixed_subset": [0.1, 0.13],
            "overlap_fixed_random": [0.05, 0.05],
            "rank_over_d_unstable": [0.15, 0.27],
            "rank_over_d_subset": [0.15, 0.27],
            "grouped_share": [0.0, 0.0],
        }
    )
    axes = geometry.plot_grid_geometry(points, "top-32")
    for ax in (axes[0], axes[2]):
        lo, hi = ax.get_ylim()
        assert lo <= 0.0 and hi >= 1.0


def test_subspace_transfer_draws_every_curve_with_its_spread_in_the_unit_interval():
    rows = [
        {
            "source": 0,
            "target": t,
            "r": r,
            "transfer": 0.1 * t + r / 64,
            "random_latents": r / 80,
            "random_source": r / 90,
            "random_subspace": r / 128,
            "ceiling": min(1.0, 0.3 + r / 64),
        }
        for t in (1, 2)
        for r in (1, 2, 4, 8, 16, 32, 64)
    ]
    ax = geometry.plot_subspace_transfer(pd.DataFrame(rows))
    labels = ax.get_legend_handles_labels()[1]
    assert labels == [name for name, _, _ in geometry.TRANSFER_CURVES.values()]
    assert len(ax.collections) == 5  # one band per curve: the spread over seed pairs
    unstable = ax.get_lines()[0]
    np.testing.assert_allclose(unstable.get_ydata(), 0.15 + np.array([1, 2, 4, 8, 16, 32, 64]) / 64)
    lo, hi = ax.get_ylim()
    assert lo <= 0.0 and hi >= 1.0
    empty = geometry.plot_subspace_transfer(pd.DataFrame(rows).iloc[:0])
    assert "no unstable latents" in empty.texts[0].get_text()


def _cuts() -> pd.DataFrame:
    rows = [{"cut": "full SAE", "group": "all", "op": "keep", "control": "group", "ev": 0.9}]
    rows += [{"cut": "no latent", "group": "none", "op": "keep", "control": "group", "ev": 0.0}]
    for op in ("keep", "remove"):
        for group in ("stable", "unstable"):
            for control in ("group", "size", "mass"):
                rows.append({"cut": f"{op} {group}", "group": group, "op": op, "control": control, "ev": 0.45})
    return pd.DataFrame(rows)


def test_cut_bars_legend_is_below_the_bars():
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))  # as chapter 2's Figure 3 lays them out
    ax = asymmetry.plot_cut_bars(_cuts(), "ev", ax=axes[0])
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 <= ax.get_window_extent().y0, "the legend sits on the bars"
    assert all(legend.y1 <= t.get_window_extent().y0 for t in ax.get_xticklabels()), "the legend hides tick labels"


@pytest.mark.parametrize(
    ("values", "scale"), [([2e-3], "linear"), ([1e-3, 2e-3, 0.0], "linear"), ([1e-5, 1e-2], "symlog")]
)
def test_marginal_axis_has_ticks_whatever_the_spread(values, scale):
    df = pd.DataFrame(
        {"stability": np.zeros(len(values)), "label": "unstable", "delta_loss_per_token": np.asarray(values)}
    )
    ax = asymmetry.plot_marginal_vs_stability(df)
    ax.figure.canvas.draw()
    assert ax.get_yscale() == scale
    lo, hi = ax.get_ylim()
    assert any(lo <= t <= hi for t in ax.get_yticks()), "no y tick in view"


def test_cut_bars_tick_labels_do_not_overlap_in_a_two_panel_figure():
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))  # as chapter 2's Figure 3 lays them out
    ax = asymmetry.plot_cut_bars(_cuts(), "ev", ax=axes[0])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
    assert len(boxes) == 4
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), "tick labels overlap"


def test_stability_vs_ev_legend_is_off_the_points():
    table = pd.DataFrame(
        {
            "sae": ["standard", "standard", "pooled", "pooled", "pooled large", "standard large"],
            "explained_variance": [0.237, 0.259, 0.263, 0.277, 0.282, 0.299],
            "stability": [0.0] * 6,  # where briefly trained SAEs sit: the old lower-right legend covered them
        }
    )
    ax = pooling.plot_stability_vs_ev(table)
    ax.figure.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1, "the legend overlaps the points"


def test_match_survival_curves_differ_by_line_style_not_only_colour():
    rng = np.random.default_rng(0)
    samples = {k: rng.uniform(0.1, 0.3, 50) for k in ("standard", "pooled", "pooled large", "standard large")}
    ax = pooling.plot_match_survival(samples, tau=0.7)
    styles = [line.get_linestyle() for line in ax.get_lines() if line.get_label() in samples]
    assert len(set(styles)) == len(styles) == 4


def test_stripplot_jitter_is_reproducible_and_leaves_the_global_random_state_alone():
    from saelib.plots.theme import stripplot

    df = pd.DataFrame({"x": ["a"] * 20 + ["b"] * 20, "y": np.arange(40.0)})
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    offsets = []
    for _ in range(2):
        _, ax = plt.subplots()
        stripplot(df, x="x", y="y", ax=ax, jitter=0.3)
        offsets.append(np.concatenate([c.get_offsets() for c in ax.collections]))
        plt.close(ax.figure)
    np.testing.assert_array_equal(offsets[0], offsets[1])  # the same jitter in both figures
    assert np.ptp(offsets[0][:20, 0]) > 0  # ... and there is jitter
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the caller's random state untouched
