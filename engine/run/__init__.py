"""Running a search: the run database, candidate evaluation, executors and the session that ties them."""

from engine.run.session import Problem, SearchEvent, SearchSession
from engine.run.store import RunStore

__all__ = ["Problem", "RunStore", "SearchEvent", "SearchSession"]
