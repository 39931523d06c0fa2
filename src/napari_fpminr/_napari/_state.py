"""The training state machine that drives the widget's buttons (no Qt here).

States: ``idle`` (nothing trained on the selected data yet), ``training`` (worker running), ``stopping`` (Stop
pressed, waiting for the trainer to hand back the model trained so far), ``done`` (finished
all epochs), ``stopped`` (ended early by the user, model kept), ``failed`` (the trainer raised).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable


class TrainState(str, Enum):
    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"


_FINISHED = {TrainState.IDLE, TrainState.DONE, TrainState.STOPPED, TrainState.FAILED}

#: allowed transitions; anything else is a programming error in the widget.
TRANSITIONS: dict[TrainState, set[TrainState]] = {
    TrainState.IDLE: {TrainState.TRAINING},
    TrainState.TRAINING: {TrainState.STOPPING, TrainState.DONE, TrainState.STOPPED, TrainState.FAILED},
    TrainState.STOPPING: {TrainState.STOPPED, TrainState.DONE, TrainState.FAILED},
    # back to idle: other raw data were selected (the last model stays available to save)
    TrainState.DONE: {TrainState.TRAINING, TrainState.IDLE},
    TrainState.STOPPED: {TrainState.TRAINING, TrainState.IDLE},
    TrainState.FAILED: {TrainState.TRAINING, TrainState.IDLE},
}


@dataclass(frozen=True)
class Buttons:
    """Which controls are enabled in a given state."""

    start: bool
    stop: bool
    save: bool
    edit_parameters: bool


def buttons_for(state: TrainState, *, has_raw: bool, has_model: bool, backend_ready: bool = True) -> Buttons:
    """Button enablement: Start needs raw data, a loaded compute backend and no run in
    progress; Save needs a model."""
    finished = state in _FINISHED
    return Buttons(
        start=finished and has_raw and backend_ready,
        stop=state is TrainState.TRAINING,
        save=finished and has_model,
        edit_parameters=finished,
    )


class StateMachine:
    """Holds the current state, validates transitions and notifies listeners."""

    def __init__(self) -> None:
        self.state = TrainState.IDLE
        self._listeners: list[Callable[[TrainState], None]] = []

    def connect(self, callback: Callable[[TrainState], None]) -> None:
        self._listeners.append(callback)

    def can(self, new: TrainState) -> bool:
        return new in TRANSITIONS[self.state]

    def to(self, new: TrainState) -> None:
        if not self.can(new):
            raise RuntimeError(f"invalid training state change {self.state.value} -> {new.value}")
        self.state = new
        for callback in list(self._listeners):
            callback(new)
