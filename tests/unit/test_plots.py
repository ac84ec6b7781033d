"""The pictures a job stores are readable: titles do not sit on top of each other."""

from training.plots import curves_figure, curves_png, plt

ROWS = [
    {
        "epoch": e,
        "phase": 1 if e < 3 else 2,
        "loss": 1 / (e + 1),
        "val_loss": 1.2 / (e + 1),
        "accuracy": e / 6,
        "val_accuracy": e / 7,
        "lr": 1e-3 if e < 3 else 1e-5,
    }
    for e in range(6)
]


def test_the_curves_title_sits_above_every_plot_title():
    fig = curves_figure(ROWS, "job 7: digits, mobilenet_v2")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = fig._suptitle.get_window_extent(renderer)  # the Text of fig.suptitle
    for ax in fig.axes:
        below = ax.title.get_window_extent(renderer)
        assert not top.overlaps(below) and top.y0 >= below.y1
    plt.close(fig)
    assert curves_png(ROWS, "t")[:4] == b"\x89PNG"
