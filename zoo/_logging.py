"""When Lightning hands a training step's logged values to the logger."""

from __future__ import annotations

import lightning as L


def logger_writes_this_step(trainer: L.Trainer) -> bool:
    """Whether the values logged in the current training step reach the logger.

    Lightning writes them every ``log_every_n_steps`` optimizer steps. A
    ``self.log`` call costs about 0.3 ms whether or not its value is written, a
    tenth of a step of a small model on a CPU, so per-step values are logged only
    on these steps; TensorBoard receives exactly the same points.
    """
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.global_step + 1) % every == 0
