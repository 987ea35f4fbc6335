"""Checks of a drawn matplotlib figure's text: titles, axis labels (a colorbar's label is its
Axes' label) and their offset texts, legends."""

from __future__ import annotations


def _texts(fig):
    """(owner Axes or None, what, artist) of every title, axis label and legend with content."""
    items = [(None, "suptitle", t) for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t is not None]
    items += [(None, "legend", legend) for legend in fig.legends]
    for ax in fig.axes:
        items += [(ax, "title", t) for t in (ax.title, ax._left_title, ax._right_title)]
        for axis in (ax.xaxis, ax.yaxis):  # offset text: "1e-5" or "+1" above or beside the ticks
            items += [(ax, "label", axis.label), (ax, "label", axis.get_offset_text())]
        if ax.get_legend() is not None:
            items.append((ax, "legend", ax.get_legend()))
    return [(ax, what, t) for ax, what, t in items
            if t.get_visible() and (what == "legend" or t.get_text())]


def _name(artist) -> str:
    return repr(artist.get_text()) if hasattr(artist, "get_text") else "a legend"


def assert_titles_clear(fig):
    """Every title, axis label (colorbar labels included) and legend lies inside the figure,
    no two of them overlap, and none lies over an Axes other than its own (the suptitle,
    a legend beside the panels, a label reaching into the next panel)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    items = [(ax, what, t, t.get_window_extent(renderer)) for ax, what, t in _texts(fig)]
    whole = fig.bbox
    for i, (_, _, artist, box) in enumerate(items):
        assert (whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1 and whole.y0 - 1 <= box.y0
                and box.y1 <= whole.y1 + 1), f"outside the figure: {_name(artist)}"
        for _, _, other, second in items[i + 1:]:
            assert not box.overlaps(second), f"overlap: {_name(artist)} / {_name(other)}"
    frames = [(ax, ax.get_window_extent(renderer)) for ax in fig.axes if ax.get_visible()]
    for owner, _, artist, box in items:
        for ax, frame in frames:  # its own Axes: a legend may sit inside it
            if ax is not owner:
                assert not box.overlaps(frame), f"{_name(artist)} over an Axes"
