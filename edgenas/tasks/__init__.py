"""Tasks: one module per kind of data, each registered in ``TASKS`` (see :mod:`edgenas.tasks.base`)."""

from edgenas.tasks.base import TASKS, Classification, Metric, Split, Task, get_task
from edgenas.tasks import kws  # noqa: F401  (registers kws)

__all__ = ["TASKS", "Classification", "Metric", "Split", "Task", "get_task"]
