"""Desktop app timings on a 256^3 scan with a label overlay (offscreen, no assertions).

Measures: the GUI thread's largest delay while the first engine job of a session loads PyTorch and
MONAI in a worker thread, reading the scan and label map from NIfTI and preparing them for display
(the worker's part), showing them in the slice viewer (the GUI thread's part), the time per slice
change, and building the 3D label surfaces. Run: ``python benchmarks/app_bench.py [--size 256]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def make_case(folder: Path, n: int) -> tuple[Path, Path]:
    """A synthetic n^3 head-like scan (float32, 1 mm) and a 3-label map, written as NIfTI."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32)] * 3, indexing="ij")
    r = np.sqrt(x * x + (y / 1.15) ** 2 + (z / 0.95) ** 2)
    label = np.zeros((n, n, n), np.uint8)
    label[r < 0.85] = 1
    label[r < 0.65] = 2
    label[(r < 0.25) & (x > 0)] = 3
    image = (300 * (label > 0) + 150 * (label == 2) + 80 * (label == 3)).astype(np.float32)
    image += rng.normal(0, 20, image.shape).astype(np.float32)
    img_path, lab_path = folder / "scan.nii", folder / "scan_label.nii"
    nib.save(nib.Nifti1Image(image, np.eye(4)), img_path)
    nib.save(nib.Nifti1Image(label, np.eye(4)), lab_path)
    return img_path, lab_path


def first_engine_job_stall(app) -> tuple[float, float]:
    """(seconds the import took, largest gap in s of a 20 ms GUI timer) while an EngineJob imports the
    inference engine (PyTorch, MONAI) for the first time in this process, as the app's first Results
    or Export job does."""
    from PySide6.QtCore import QEventLoop, QTimer

    from emonas_gui.workers import EngineJob

    gaps, last = [], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    def load(cb, ctl):
        t0 = time.perf_counter()
        import engine.infer.metrics  # noqa: F401
        import engine.infer.predictor  # noqa: F401

        return time.perf_counter() - t0

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)
    loop = QEventLoop()
    job = EngineJob(load, "first-import")
    took = {}
    job.finished.connect(lambda s: took.setdefault("s", s))
    job.done.connect(lambda: QTimer.singleShot(100, loop.quit))  # a few ticks after the end
    timer.start()
    QTimer.singleShot(200, job.start)
    loop.exec()
    timer.stop()
    job.wait()
    return took.get("s", float("nan")), max(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic scan in voxels")
    parser.add_argument("--slices", type=int, default=40, help="slice changes to time")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    if "torch" not in sys.modules:
        took, gap = first_engine_job_stall(app)
        print(f"first engine job loading PyTorch + MONAI in a worker ({took:.2f} s): "
              f"largest GUI-thread delay {1000 * gap:.0f} ms")
    from emonas_gui.panels.data import load_case
    from emonas_gui.widgets.slice_views import SliceViewer
    from emonas_gui.widgets.surface_view import SurfaceView, build_surfaces

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        img_path, lab_path = make_case(Path(tmp), args.size)
        print(f"wrote a {args.size}^3 float32 scan and uint8 label map in {time.perf_counter() - t:.2f} s")

        t = time.perf_counter()
        case = load_case("bench", [img_path], lab_path)
        t_read = time.perf_counter() - t

        surface = SurfaceView()
        viewer = SliceViewer(extra=surface)
        viewer.resize(1100, 850)
        viewer.show()
        app.processEvents()
        names = {1: ("skin", (230, 80, 70)), 2: ("brain", (80, 180, 90)), 3: ("lesion", (70, 130, 230))}
        t = time.perf_counter()
        viewer.set_volume(case.image, case.spacing)
        viewer.set_labels(case.labels, names)
        app.processEvents()
        viewer.render_image("axial")  # forces a paint of the first view
        t_show = time.perf_counter() - t

        times = []
        for i in range(args.slices):
            t = time.perf_counter()
            viewer.scroll(("axial", "coronal", "sagittal")[i % 3], 1)
            app.processEvents()
            times.append(time.perf_counter() - t)

        t = time.perf_counter()
        polys = build_surfaces(case.labels, case.spacing, [1, 2, 3])
        t_surf = time.perf_counter() - t
        triangles = sum(p.GetNumberOfPolys() for p in polys.values())
        t = time.perf_counter()
        surface.set_labels(case.labels, case.spacing, names)
        surface.wait_until_ready()
        surface.render_image()
        t_surf_shown = time.perf_counter() - t

        print(f"read + reorient scan and labels (worker thread): {t_read:.2f} s")
        print(f"show scan + overlay in three views (GUI thread): {t_show:.3f} s")
        print(f"slice change incl. repaint: median {1000 * statistics.median(times):.1f} ms, "
              f"max {1000 * max(times):.1f} ms over {len(times)} changes")
        print(f"3D surfaces (flying edges + smoothing, worker): {t_surf:.2f} s, {triangles:,} triangles")
        print(f"3D surfaces built and first rendered through the view: {t_surf_shown:.2f} s")
        print(f"load-to-first-image total: {t_read + t_show:.2f} s; "
              f"slice changes per second: {1 / statistics.median(times):.0f}")
        surface.shutdown()
        viewer.close()
        surface.close()


if __name__ == "__main__":
    main()
