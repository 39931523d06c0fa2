import pytest

from napari_fpminr._napari._state import StateMachine, TrainState, buttons_for


def test_full_run_enables_buttons_in_order():
    m = StateMachine()
    seen = []
    m.connect(seen.append)
    assert buttons_for(m.state, has_raw=False, has_model=False).start is False
    b = buttons_for(m.state, has_raw=True, has_model=False)
    assert (b.start, b.stop, b.save) == (True, False, False)
    m.to(TrainState.TRAINING)
    b = buttons_for(m.state, has_raw=True, has_model=False)
    assert (b.start, b.stop, b.save, b.edit_parameters) == (False, True, False, False)
    m.to(TrainState.STOPPING)
    b = buttons_for(m.state, has_raw=True, has_model=True)
    assert (b.start, b.stop, b.save) == (False, False, False)   # wait for the model
    m.to(TrainState.STOPPED)
    b = buttons_for(m.state, has_raw=True, has_model=True)
    assert (b.start, b.stop, b.save, b.edit_parameters) == (True, False, True, True)
    m.to(TrainState.TRAINING)
    m.to(TrainState.FAILED)
    assert seen == [TrainState.TRAINING, TrainState.STOPPING, TrainState.STOPPED,
                    TrainState.TRAINING, TrainState.FAILED]


@pytest.mark.parametrize("start,bad", [(TrainState.IDLE, TrainState.DONE),
                                       (TrainState.IDLE, TrainState.STOPPING),
                                       (TrainState.TRAINING, TrainState.TRAINING)])
def test_invalid_transitions_raise(start, bad):
    m = StateMachine()
    if start is not TrainState.IDLE:
        m.to(start)
    assert not m.can(bad)
    with pytest.raises(RuntimeError, match="invalid training state"):
        m.to(bad)
