"""Figures: valid, non-blank PNGs written atomically; what they draw; degenerate inputs."""

import os

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread
from scipy.special import ndtri

from dmha_modules.io import plots
from dmha_modules.io.plots import (
    plot_confusion_matrix,
    plot_embeddings_pca,
    plot_verification_scores,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
AGE_GROUPS = ["teens", "twenties", "thirties", "forties", "fifties", "sixties"]


def assert_readable_png(path):
    """A PNG a person can look at: sensible size, not blank, alone in its folder."""
    with open(path, "rb") as file:
        assert file.read(8) == PNG_SIGNATURE
    image = imread(path)
    height, width = image.shape[:2]
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert 300 <= height <= 2500 and 300 <= width <= 2500, image.shape
    rgb = image[..., :3]
    ink = (rgb < 0.9).any(axis=2).mean()
    assert 0.01 < ink < 0.9, f"{ink:.1%} of the pixels are not white"
    channels = np.round(rgb * 255).astype(np.uint32)
    colours = np.unique(channels[..., 0] << 16 | channels[..., 1] << 8 | channels[..., 2])
    assert len(colours) > 50  # colours, anti-aliased text and lines
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temp files


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, as they are just before saving."""
    figures = []
    save_png = plots.save_png

    def recording_save_png(figure, path):
        figures.append(figure)
        return save_png(figure, path)

    monkeypatch.setattr(plots, "save_png", recording_save_png)
    return figures


def texts(figure):
    return [text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text"))]


# ---------------------------------------------------------------- confusion matrix


def test_confusion_matrix_annotates_counts_and_row_percentages(tmp_path, drawn):
    confusion = [[8, 2, 0], [1, 6, 3], [0, 0, 0]]
    path = plot_confusion_matrix(
        confusion, ["teens", "adults", "seniors"], tmp_path / "confusion.png", title="Test"
    )
    assert path == str(tmp_path / "confusion.png")
    assert_readable_png(path)
    axes, colour_bar = drawn[0].axes
    assert axes.get_xlabel() == "predicted" and axes.get_ylabel() == "true"
    assert [label.get_text() for label in axes.get_yticklabels()] == ["teens", "adults", "seniors"]
    cells = [text.get_text() for text in axes.texts]
    # Row by row; the empty "seniors" row has counts but no percentages.
    rows = [cells[0:3], cells[3:6], cells[6:9]]
    assert rows == [
        ["8\n80.0%", "2\n20.0%", "0\n0.0%"],
        ["1\n10.0%", "6\n60.0%", "3\n30.0%"],
        ["0", "0", "0"],
    ]
    assert len(cells) == 9
    assert colour_bar.get_ylabel() == "fraction of the true class"


def test_confusion_matrix_of_counts_and_of_many_classes(tmp_path, drawn):
    rng = np.random.default_rng(0)
    names = [f"spk{i:03d}" for i in range(40)]
    confusion = rng.integers(0, 20, size=(40, 40)) + np.diag(rng.integers(50, 100, size=40))
    assert_readable_png(
        plot_confusion_matrix(confusion, names, tmp_path / "many.png", normalize=False)
    )
    axes, colour_bar = drawn[0].axes
    assert len(axes.texts) == 0  # 40 x 40 cells would not be legible
    assert colour_bar.get_ylabel() == "count"


def test_confusion_matrix_of_one_class(tmp_path):
    assert_readable_png(plot_confusion_matrix([[4]], ["adults"], tmp_path / "one.png"))


@pytest.mark.parametrize(
    "confusion, names, message",
    [
        ([[1, 2], [3, 4]], ["a", "b", "c"], "must be \\(3, 3\\)"),
        ([[1, 2, 3]], ["a"], "must be \\(1, 1\\)"),
        ([], [], "must be \\(0, 0\\)"),
        ([[1, -2], [3, 4]], ["a", "b"], "non-negative integer"),
        ([[0.5, 0.5], [0.0, 1.0]], ["a", "b"], "non-negative integer"),
    ],
)
def test_confusion_matrix_rejects_bad_input(tmp_path, confusion, names, message):
    with pytest.raises(ValueError, match=message):
        plot_confusion_matrix(confusion, names, tmp_path / "bad.png")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- verification scores


def separated_trials(n_target=300, n_nontarget=3000, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(0.6, 0.15, n_target), rng.normal(0.1, 0.15, n_nontarget)])
    labels = np.arange(n_target + n_nontarget) < n_target
    return scores, labels


def test_verification_scores_draw_det_and_histograms(tmp_path, drawn):
    scores, labels = separated_trials()
    path = plot_verification_scores(
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels),
        tmp_path / "scores.png",
        title="Test trials",
    )
    assert_readable_png(path)
    det, histogram = drawn[0].axes
    assert det.get_xlabel() == "false-alarm probability (%)"
    assert det.get_ylabel() == "miss probability (%)"
    # Probit axes labelled in percent: tick k sits at the normal deviate of k%.
    for axis in (det.xaxis, det.yaxis):
        tick_texts = [label.get_text() for label in axis.get_ticklabels()]
        assert "1" in tick_texts
        percents = np.array([float(text) for text in tick_texts])
        assert axis.get_ticklocs() == pytest.approx(ndtri(percents / 100))
    # The EER point lies on the diagonal at the EER.
    eer = float(det.get_legend().get_texts()[0].get_text().split()[1].rstrip("%")) / 100
    marker = [line for line in det.get_lines() if line.get_marker() == "o"][0]
    assert marker.get_xdata()[0] == marker.get_ydata()[0] == pytest.approx(ndtri(eer), abs=1e-3)
    names = [text.get_text() for text in histogram.get_legend().get_texts()]
    assert names[:2] == ["non-target (n=3000)", "target (n=300)"]
    assert not [line for line in det.get_lines() if line.get_marker() == "s"]  # no point
    assert histogram.get_xlabel() == "score"


def test_verification_scores_mark_the_operating_point(tmp_path, drawn):
    scores, labels = separated_trials()
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    threshold = float(np.quantile(scores[~labels], 0.97))
    path = plot_verification_scores(scores, labels, tmp_path / "scores.png",
                                    operating_point=(threshold, "target FAR 3%"))
    assert_readable_png(path)
    det, histogram = drawn[0].axes
    # Counted here: the share of non-targets above the threshold, of targets at or below.
    p_fa = (scores[~labels] > threshold).mean()
    p_miss = (scores[labels] <= threshold).mean()
    square = [line for line in det.get_lines() if line.get_marker() == "s"][0]
    assert square.get_xdata()[0] == pytest.approx(ndtri(p_fa))
    assert square.get_ydata()[0] == pytest.approx(ndtri(p_miss))
    legend = [text.get_text() for text in det.get_legend().get_texts()]
    assert f"target FAR 3%: FA {100 * p_fa:.2f}%, miss {100 * p_miss:.2f}%" in legend
    lines = [line for line in histogram.get_lines() if line.get_color() == "tab:purple"]
    assert len(lines) == 1 and lines[0].get_xdata()[0] == pytest.approx(threshold)
    names = [text.get_text() for text in histogram.get_legend().get_texts()]
    assert f"threshold {threshold:.3f} (target FAR 3%)" in names


def test_verification_scores_all_equal_are_drawn(tmp_path, drawn):
    assert_readable_png(
        plot_verification_scores([0.5] * 5, [1, 1, 0, 0, 0], tmp_path / "equal.png")
    )
    assert "EER 50.00%" in texts(drawn[0])


def test_verification_scores_need_both_kinds_of_trial(tmp_path):
    with pytest.raises(ValueError, match="need target and non-target"):
        plot_verification_scores([0.1, 0.9], [1, 1], tmp_path / "one_kind.png")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- embeddings PCA


def clustered_embeddings(n_clusters, n_per_cluster, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(n_clusters, dim))
    labels = np.repeat(np.arange(n_clusters), n_per_cluster)
    return centres[labels] + rng.normal(0, 1, size=(len(labels), dim)), labels


def test_embeddings_pca_projects_on_the_principal_plane(tmp_path, drawn):
    # Variance 9 and 4 along two axes, nothing elsewhere: PC1 69.2%, PC2 30.8%.
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(400, 2)) * [3, 2]
    plane = (plane - plane.mean(0)) / plane.std(0) * [3, 2]
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    embeddings = np.pad(plane, ((0, 0), (0, 6))) @ rotation
    groups = [AGE_GROUPS[i % 3] for i in range(400)]
    path = plot_embeddings_pca(
        torch.tensor(embeddings).unsqueeze(1),
        groups,
        tmp_path / "pca.png",
        title="Test embeddings",
        label_order=AGE_GROUPS,
    )
    assert_readable_png(path)
    axes = drawn[0].axes[0]
    assert axes.get_xlabel() == "PC1 (69.2% of variance)"
    assert axes.get_ylabel() == "PC2 (30.8% of variance)"
    # Only the groups present, in label_order, keeping their colour slots.
    legend = drawn[0].legends[0]
    assert [text.get_text() for text in legend.get_texts()] == [
        "teens (134)",
        "twenties (133)",
        "thirties (133)",
    ]
    # Projected points are the plane's points up to rotation and sign.
    points = np.concatenate([collection.get_offsets() for collection in axes.collections])
    assert np.sort(np.linalg.norm(points, axis=1)) == pytest.approx(
        np.sort(np.linalg.norm(plane, axis=1))
    )


def test_embeddings_pca_caps_the_legend_for_many_speakers(tmp_path, drawn):
    embeddings, labels = clustered_embeddings(n_clusters=60, n_per_cluster=10)
    speakers = [f"id{10000 + label}" for label in labels]
    assert_readable_png(plot_embeddings_pca(embeddings, speakers, tmp_path / "speakers.png"))
    legend = [text.get_text() for text in drawn[0].legends[0].get_texts()]
    assert len(legend) == 20
    assert legend[0] == "id10000 (10)" and legend[18] == "id10018 (10)"
    assert legend[19] == "... and 41 more"
    colours = {tuple(c.get_facecolor()[0]) for c in drawn[0].axes[0].collections}
    assert len(colours) == 60


def test_embeddings_pca_of_identical_embeddings(tmp_path, drawn):
    # No variance: every point at the origin, 0% explained, still a figure.
    path = plot_embeddings_pca(np.ones((5, 4)), ["a", "a", "b", "b", "b"], tmp_path / "same.png")
    assert os.path.exists(path)
    assert drawn[0].axes[0].get_xlabel() == "PC1 (0.0% of variance)"


@pytest.mark.parametrize(
    "embeddings, labels, kwargs, message",
    [
        (np.zeros((1, 8)), ["a"], {}, "at least 2 embeddings"),
        (np.zeros((0, 8)), [], {}, "at least 2 embeddings"),
        (np.zeros((5, 1)), ["a"] * 5, {}, "at least 2 dimensions"),
        (np.zeros(8), ["a"] * 8, {}, "at least 2 embeddings"),
        (np.full((3, 2), np.nan), ["a"] * 3, {}, "finite"),
        (np.zeros((3, 2)), ["a"] * 2, {}, "2 labels for 3 embeddings"),
        (np.zeros((3, 2)), ["a", "b", "c"], {"label_order": ["a", "b"]}, "missing.*'c'"),
    ],
)
def test_embeddings_pca_rejects_bad_input(tmp_path, embeddings, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_embeddings_pca(embeddings, labels, tmp_path / "bad.png", **kwargs)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- atomic writes


def test_overwrites_and_creates_folders(tmp_path):
    path = tmp_path / "new" / "folder" / "confusion.png"
    plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], path)
    first = path.read_bytes()
    plot_confusion_matrix([[1, 5], [0, 1]], ["a", "b"], path)
    assert path.read_bytes() != first
    assert_readable_png(str(path))


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "confusion.png"
    path.write_bytes(b"previous image")

    def failing_savefig(self, file, **kwargs):
        file.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], path)
    assert os.listdir(tmp_path) == ["confusion.png"]
    assert path.read_bytes() == b"previous image"
