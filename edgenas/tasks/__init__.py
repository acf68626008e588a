"""Tasks: one module per kind of data, each registered in ``TASKS`` (see :mod:`edgenas.tasks.base`)."""

from edgenas.tasks.base import (TASKS, Classification, FrontEnd, Metric, Split, Task, calls_per_input, get_task,
                                task_of)
from edgenas.tasks import image, kws, sr, timeseries  # noqa: F401  (registers them)

__all__ = ["TASKS", "Classification", "FrontEnd", "Metric", "Split", "Task", "calls_per_input", "get_task", "task_of"]
