"""Running a search: the run database, candidate evaluation, executors and the session that ties them.

Names load on first use, so that reading a run (``engine.run.store``) does not import the search
algorithms and their libraries.
"""

__all__ = ["CandidateResult", "CandidateRow", "CandidateTask", "Progress", "RunStore", "SearchEvent", "SearchProblem",
           "SearchSession", "watch"]


def __getattr__(name: str):
    if name in ("SearchProblem", "SearchEvent", "SearchSession"):
        from engine.run import session

        return getattr(session, name)
    if name == "RunStore":
        from engine.run.store import RunStore

        return RunStore
    if name in ("CandidateResult", "CandidateRow", "CandidateTask"):
        from engine.run import records

        return getattr(records, name)
    if name in ("Progress", "watch"):
        from engine.run import progress

        return getattr(progress, name)
    raise AttributeError(f"module 'engine.run' has no attribute {name!r}")
