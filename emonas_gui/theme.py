"""Colour themes of the app: Fusion style with a dark or light palette."""

from __future__ import annotations

THEMES = ("dark", "light")


def apply_theme(app, theme: str) -> None:
    """Fusion style with a dark or light palette (image views stay dark in both)."""
    from PySide6.QtGui import QColor, QPalette

    app.setStyle("Fusion")
    if theme == "light":
        app.setPalette(app.style().standardPalette())
        return
    pal = QPalette()
    role, group = QPalette.ColorRole, QPalette.ColorGroup
    base, window, text = QColor(30, 31, 34), QColor(43, 45, 48), QColor(223, 225, 229)
    pal.setColor(role.Window, window)
    pal.setColor(role.WindowText, text)
    pal.setColor(role.Base, base)
    pal.setColor(role.AlternateBase, QColor(38, 40, 43))
    pal.setColor(role.ToolTipBase, QColor(60, 63, 65))
    pal.setColor(role.ToolTipText, text)
    pal.setColor(role.Text, text)
    pal.setColor(role.Button, QColor(55, 58, 62))
    pal.setColor(role.ButtonText, text)
    pal.setColor(role.BrightText, QColor(255, 90, 90))
    pal.setColor(role.Link, QColor(90, 160, 255))
    pal.setColor(role.Highlight, QColor(52, 116, 203))
    pal.setColor(role.HighlightedText, QColor(255, 255, 255))
    pal.setColor(role.PlaceholderText, QColor(130, 133, 138))
    for r in (role.Text, role.WindowText, role.ButtonText):
        pal.setColor(group.Disabled, r, QColor(120, 122, 126))
    app.setPalette(pal)
