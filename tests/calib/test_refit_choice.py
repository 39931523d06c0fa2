"""How the board refit replaces the calibration's choice (calib/last_steps.py, ``refit_choice``)."""

from napari_fpminr.calib.last_steps import REFIT_TIE, refit_choice


def test_lower_brightness_free_misfit_wins_even_if_its_brightness_fits_worse():
    # the capture-range corners: the choice's brightness was fitted to its own NA errors
    free = {"refit": 0.0087, "refit + edge": 0.0095}
    plain = {"refit": 0.042, "refit + edge": 0.050}
    assert refit_choice({"refit": 1, "refit + edge": 2}, free, plain, 0.0124, 0.019) == "refit"


def test_a_tie_is_broken_by_the_misfit_with_its_own_brightness():
    # the UConn blue smear: tied brightness-free (+0.4 %), 28 % lower with brightness
    refits = {"refit": 1, "refit + edge": 2}
    free = {"refit": 0.0932, "refit + edge": 0.0838}
    plain = {"refit": 0.138, "refit + edge": 0.119}
    assert refit_choice(refits, free, plain, 0.0835, 0.165) == "refit + edge"
    # outside the tie the brightness misfit does not count
    far = {k: v * (1.0 + 3 * REFIT_TIE) for k, v in free.items()}
    far["refit + edge"] = 0.0835 * (1.0 + 2 * REFIT_TIE)
    assert refit_choice(refits, far, plain, 0.0835, 0.165) is None
    # a tie that fits worse with its brightness keeps the choice
    assert refit_choice(refits, free, {"refit": 0.2, "refit + edge": 0.17}, 0.0835, 0.165) is None
