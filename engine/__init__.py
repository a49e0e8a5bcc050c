"""EMONAS Studio engine: headless search, training, inference and export.

The engine never imports Qt, pyqtgraph or VTK; the desktop app (``emonas_gui``) and the
``emonas`` command line both sit on top of its public API.
"""

__version__ = "0.1.0"
