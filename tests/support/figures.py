"""Checks of a drawn matplotlib figure's titles."""

from __future__ import annotations


def title_boxes(fig):
    """(text, window bbox) of the suptitle and every axes title of a drawn figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [t for t in (ax.title, ax._left_title, ax._right_title)]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]


def assert_titles_clear(fig):
    """No two titles overlap, the suptitle overlaps no axes, and every title lies inside the figure."""
    boxes = title_boxes(fig)
    whole = fig.bbox
    for i, (text, box) in enumerate(boxes):
        assert whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1 and box.y1 <= whole.y1 + 1, f"outside: {text!r}"
        for other, second in boxes[i + 1:]:
            assert not box.overlaps(second), f"titles overlap: {text!r} / {other!r}"
    if fig._suptitle is not None:
        top = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
        for ax in fig.axes:
            assert not top.overlaps(ax.get_window_extent()), f"suptitle over an axes: {fig._suptitle.get_text()!r}"
