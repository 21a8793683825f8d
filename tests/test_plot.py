import io

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from mmlab import plot  # noqa: E402
from mmlab.train import History  # noqa: E402


def _png_bytes(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    matplotlib.pyplot.close(fig)
    return len(buf.getvalue())


def test_figures_are_small():
    plot.small_figures()
    imgs = torch.rand(16, 3, 32, 32)
    assert _png_bytes(plot.image_grid(imgs, [f"img {i}" for i in range(16)])) < 150_000
    assert _png_bytes(plot.bar({"a": 0.5, "b": 0.9}, reference=0.1)) < 60_000
    h = History(steps=list(range(50)), losses=[1 / (i + 1) for i in range(50)], evals=[(25, {"acc": 0.5}), (50, {"acc": 0.9})])
    assert _png_bytes(plot.training_curves(h, ["acc"])) < 80_000
    assert _png_bytes(plot.image_grid(torch.rand(2, 1, 8, 8))) < 60_000  # grey images


def test_bad_input():
    with pytest.raises(ValueError, match="one string per image"):
        plot.image_grid(torch.rand(2, 3, 8, 8), ["only one"])
    with pytest.raises(ValueError, match="at least one image"):
        plot.image_grid(torch.rand(0, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        plot.image_grid(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="at least one entry"):
        plot.bar({})


def test_diagram_draws_boxes_and_refuses_unknown_arrows():
    fig = plot.diagram({"a": (0.2, 0.5, "A"), "b": (0.8, 0.5, "B")}, [("a", "b", "to b"), ("b", "a", "back")], title="t",
                        frozen=("b",))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert {"A", "B", "to b", "back"} <= set(texts)
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="do not exist"):
        plot.diagram({"a": (0.5, 0.5, "A")}, [("a", "c", "")])
