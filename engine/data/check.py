"""``check_dataset``: read every voxel of every case, report the problems and the plan it would use."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from engine.data.dataset import MIN_CASES, Dataset
from engine.data.layouts import FileProblem, detect_layout
from engine.data.plan import dataset_fingerprint, make_plan
from engine.data.preprocess import resampled_shape
from engine.data.validate import inspect_case
from engine.errors import DataError

log = logging.getLogger(__name__)


def check_dataset(
    path: str | os.PathLike,
    skip_bad: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    memory_budget_bytes: int | None = None,
) -> dict:
    """Check a dataset folder (or ``"demo"`` / ``"demo-hippocampus"``) completely.

    Returns a plain dict: ``layout``, ``n_cases`` (usable cases), ``modalities``, ``labels`` (names as
    declared), ``cases`` (shape, spacing, orientation and voxel counts per label of each usable case),
    ``problems`` (every problem, fatal or warning, each naming its file), ``skipped`` (case ids),
    ``plan`` (the plan's dict plus ``spacing``, or None) and ``ok``: True when every case is usable,
    or, with ``skip_bad``, when at least ``MIN_CASES`` usable cases remain. A folder in no known layout
    or with an unreadable ``dataset.json`` raises ``DataError``.
    """
    if str(path) in ("demo", "demo-hippocampus"):
        from engine.data.demo import demo_dataset_path

        path = demo_dataset_path("brain" if str(path) == "demo" else "hippocampus")
    found = detect_layout(path)
    problems = list(found.problems)
    entries, good = {}, []
    bad = {p.case_id for p in problems if p.fatal and p.case_id}
    for i, case in enumerate(found.cases):
        if case.case_id not in bad:
            report = inspect_case(case, found.modalities, found.labels)
            problems.extend(report.problems)
            if report.fatal:
                bad.add(case.case_id)
            else:
                entries[case.case_id] = report.fingerprint
                good.append(case)
        if progress:
            progress(i + 1, len(found.cases), case.case_id)
    plan = None
    while good:
        dataset = Dataset(Path(path), found.layout, found.name, good, found.modalities, found.labels, problems,
                          sorted(bad), found.description, found.mirror_axes)
        fp = dataset_fingerprint(dataset, entries=entries)
        plan_obj = make_plan(dataset, memory_budget_bytes=memory_budget_bytes, fingerprint=fp)
        too_big = _too_big_when_resampled(good, entries, plan_obj)
        if not too_big:
            plan = plan_obj.to_dict()
            plan["spacing"] = plan["target_spacing"]
            break
        problems.extend(too_big)  # left out, and the plan made again from the others
        bad.update(p.case_id for p in too_big)
        good = [c for c in good if c.case_id not in bad]
        for cid in bad:
            entries.pop(cid, None)
    fatal = [p for p in problems if p.fatal]
    ok = (not fatal) or (skip_bad and len(good) >= MIN_CASES)
    return {
        "root": str(path),
        "layout": found.layout,
        "name": found.name,
        "n_cases": len(good),
        "n_listed": len(found.cases),
        "modalities": list(found.modalities),
        "labels": dict(found.labels),
        "cases": [
            {k: e[k] for k in ("case_id", "shape", "spacing", "orientation", "voxel_counts")}
            for e in entries.values()
        ],
        "problems": [p.to_dict() for p in problems],
        "n_fatal": len(fatal),
        "n_warnings": len(problems) - len(fatal),
        "skipped": sorted(bad),
        "plan": plan,
        "ok": bool(ok),
    }


def _too_big_when_resampled(cases, entries: dict, plan) -> list[FileProblem]:
    """Cases whose array at the plan's spacing would exceed the voxel limit of its memory budget."""
    out = []
    for case in cases:
        e = entries[case.case_id]
        shape = e["crop_shape"] if plan.crop_to_nonzero else e["ras_shape"]
        try:
            resampled_shape(shape, e["ras_spacing"], plan.target_spacing, case.image_paths[0],
                            len(plan.modalities), plan.memory_budget_bytes)
        except DataError as exc:
            out.append(FileProblem(exc.path or str(case.image_paths[0]), exc.problem, True, case.case_id))
    return out


def _range(rows: list, fmt: str) -> str:
    lo = [min(r[a] for r in rows) for a in range(3)]
    hi = [max(r[a] for r in rows) for a in range(3)]
    text = "x".join(fmt.format(v) for v in lo)
    return text if lo == hi else f"{text} .. {'x'.join(fmt.format(v) for v in hi)}"


def format_report(report: dict) -> str:
    """The human-readable summary table of :func:`check_dataset`'s report."""
    lines = [
        f"dataset     {report['root']}",
        f"layout      {report['layout']} ({report['name']})",
        f"cases       {report['n_cases']} usable of {report['n_listed']} listed",
        f"modalities  {', '.join(report['modalities'])}",
        f"labels      {', '.join(f'{v} {k}' for k, v in report['labels'].items())}",
    ]
    cases = report["cases"]
    if cases:
        shapes = [c["shape"] for c in cases]
        spac = [c["spacing"] for c in cases]
        lines.append("shapes      " + _range(shapes, "{}"))
        lines.append("spacings    " + _range(spac, "{:.3g}") + " mm")
        orients = sorted({c["orientation"] for c in cases})
        lines.append(f"orientation {', '.join(orients)}")
        totals = {name: sum(c["voxel_counts"].get(name, 0) for c in cases) for name in report["labels"]}
        lines.append("voxels      " + ", ".join(f"{k} {v:,}" for k, v in totals.items()))
        lines.append("")
        name_w = max(8, max(len(c["case_id"]) for c in cases))
        lines.append(f"{'case':<{name_w}}  {'shape':<14} {'spacing (mm)':<20} {'orient':<6} " +
                     " ".join(f"{k[:12]:>12}" for k in report["labels"]))
        for c in cases:
            lines.append(
                f"{c['case_id']:<{name_w}}  {'x'.join(str(v) for v in c['shape']):<14} "
                f"{'x'.join(f'{v:.3g}' for v in c['spacing']):<20} {c['orientation']:<6} "
                + " ".join(f"{c['voxel_counts'].get(k, 0):>12}" for k in report["labels"])
            )
    plan = report["plan"]
    if plan:
        lines += [
            "",
            f"plan        spacing {'x'.join(f'{v:.3g}' for v in plan['target_spacing'])} mm, "
            f"patch {'x'.join(str(v) for v in plan['patch_size'])}, batch {plan['batch_size']}, "
            f"median case {'x'.join(str(v) for v in plan['median_shape'])}",
            "            normalization " + ", ".join(f"{n['modality']}: {n['scheme']}" for n in plan["normalization"]),
            # 2,000: engine.train.augmentation.LIGHT_STEPS (not imported: it would load torch)
            "            mirroring allowed (trainings of over 2,000 steps, and --mirror after them): "
            + (", ".join("xyz"[a] for a in plan["mirror_axes"]) or "no axis"),
        ] + [f"              {note}" for note in plan.get("mirror_notes", [])]
    n_f, n_w = report["n_fatal"], report["n_warnings"]
    lines.append("")
    lines.append(f"problems    {n_f} fatal, {n_w} warning(s)" + (f"; {len(report['skipped'])} case(s) unusable" if report["skipped"] else ""))
    return "\n".join(lines)
