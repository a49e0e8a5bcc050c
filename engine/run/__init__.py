"""Running a search: the run database, candidate evaluation, executors and the session that ties them.

Names load on first use, so that reading a run (``engine.run.store``) does not import the search
algorithms and their libraries.
"""

__all__ = ["SearchProblem", "RunStore", "SearchEvent", "SearchSession"]


def __getattr__(name: str):
    if name in ("SearchProblem", "SearchEvent", "SearchSession"):
        from engine.run import session

        return getattr(session, name)
    if name == "RunStore":
        from engine.run.store import RunStore

        return RunStore
    raise AttributeError(f"module 'engine.run' has no attribute {name!r}")
