"""The labelled heat map of softmax(α) and of the experts' load."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.models._heat_map import labelled_heat_map, save_png


def test_a_cell_runs_from_white_at_zero_to_dark_blue_at_one_and_the_image_grows_with_its_table(tmp_path):
    small = labelled_heat_map([[0.0, 1.0]], ["row"], ["a", "b"])
    large = labelled_heat_map([[0.0, 1.0, 0.5]] * 3, ["row 1", "row 2", "row 3"], ["a", "b", "c"], title="title")
    assert small.dtype == np.uint8 and small.shape[2] == 3
    assert large.shape[0] > small.shape[0] and large.shape[1] > small.shape[1]
    colours = {tuple(pixel) for pixel in small.reshape(-1, 3)}
    assert (255, 255, 255) in colours and (13, 38, 115) in colours
    save_png(large, tmp_path / "map.png")
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_that_do_not_match_the_table_are_refused():
    with pytest.raises(ValueError, match=r"values of shape \(1, 2\) need 1 row and 2 column labels, got 1 and 3"):
        labelled_heat_map([[0.1, 0.2]], ["row"], ["a", "b", "c"])
