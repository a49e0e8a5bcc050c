"""EMONAS Studio desktop app (PySide6). Research use only.

Entry point: :func:`emonas_gui.app.main` (``emonas-studio`` / ``python main.py``).
The app only calls the engine's public API; ``engine`` never imports this package.
"""
