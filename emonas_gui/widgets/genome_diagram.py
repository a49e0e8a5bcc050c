"""A drawing of a genome: the searched 4-node cell and the U-shaped macro structure.

``GenomeDiagram(parent=None)``; ``set_genome(genome | None)``. Painted with QPainter so it scales
with the widget and needs no extra dependency. The layout follows METHOD.md sections 1-2: node 1
reads the cell input, node i reads the tensor chosen by gene ``in_i``, the cell output is the sum of
the four nodes; the network is a stem, ``n_c`` down steps (max-pool + cell), ``n_c`` up steps
(transposed conv added to the encoder output of the same level + cell) and a 1x1x1 head.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.genome import Genome

# one colour per op family, so the drawing reads at a glance
_OP_COLOURS = {
    "conv3d": QColor(70, 130, 200),
    "conv2d": QColor(80, 170, 110),
    "p3d": QColor(220, 140, 50),
    "identity": QColor(150, 150, 150),
}


def op_colour(op: str) -> QColor:
    """The fill colour of an op's node (by family: conv3d, conv2d, p3d, identity)."""
    return _OP_COLOURS.get(op.split("_")[0], QColor(120, 120, 120))


def op_label(op: str) -> str:
    """Short two-line label for a node, e.g. 'p3d\\n3x3x3'."""
    if op == "identity":
        return "identity"
    fam, _, k = op.partition("_")
    return f"{fam}\n{k}"


class GenomeDiagram(QWidget):
    """Draws the cell graph (left) and the U-shaped macro structure (right) of one genome."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._genome: Genome | None = None
        self._in_channels = 1
        self._num_classes = 2
        self.setMinimumSize(420, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: D401 - Qt override
        return QSize(640, 280)

    @property
    def genome(self) -> Genome | None:
        return self._genome

    def set_genome(self, genome: Genome | None, in_channels: int = 1, num_classes: int = 2) -> None:
        """Show ``genome`` (or an empty drawing for None)."""
        self._genome = genome
        self._in_channels = max(1, int(in_channels))
        self._num_classes = max(2, int(num_classes))
        self.setToolTip("" if genome is None else genome.to_json())
        self.update()

    # ---- painting ----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        p.fillRect(self.rect(), pal.base())
        fg = pal.text().color()
        if self._genome is None:
            p.setPen(fg)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No candidate selected")
            p.end()
            return
        w, h = self.width(), self.height()
        if w >= 1.8 * h or w >= 760:  # wide: side by side
            split = int(w * 0.48)
            self._paint_cell(p, QRectF(6, 6, split - 12, h - 12), fg)
            self._paint_macro(p, QRectF(split + 6, 6, w - split - 12, h - 12), fg)
        else:  # narrow: cell above, network below
            split = int(h * 0.45)
            self._paint_cell(p, QRectF(6, 6, w - 12, split - 12), fg)
            self._paint_macro(p, QRectF(6, split + 6, w - 12, h - split - 12), fg)
        p.end()

    def _paint_cell(self, p: QPainter, r: QRectF, fg: QColor) -> None:
        g = self._genome
        assert g is not None
        font = QFont(self.font())
        font.setPointSizeF(max(6.0, min(9.0, r.height() / 24)))
        p.setFont(font)
        p.setPen(fg)
        p.drawText(QRectF(r.left(), r.top(), r.width(), 16), Qt.AlignmentFlag.AlignLeft, "Cell (searched)")
        top = r.top() + 20
        avail = r.height() - 20
        # six columns on one row: input, node 1..4, output. Edges between neighbours are straight;
        # longer ones arc above the row (inputs) or below it (the sum into the output).
        cols = 6
        nw = min(r.width() / cols * 0.82, 74.0)
        nh = min(avail * 0.32, 52.0)
        y = top + avail * 0.5
        centres = [QPointF(r.left() + (i + 0.5) * r.width() / cols, y) for i in range(cols)]

        def box(i: int) -> QRectF:
            c = centres[i]
            return QRectF(c.x() - nw / 2, c.y() - nh / 2, nw, nh)

        for node, src in enumerate(g.inputs, start=1):
            self._arrow(p, box(src), box(node), fg, arc=-(node - src - 1))
        for node in range(1, 5):
            self._arrow(p, box(node), box(5), fg, arc=(5 - node - 1), dashed=True)

        for i in range(cols):
            rect = box(i)
            if i == 0:
                fill, text = QColor(200, 200, 200), "input"
            elif i == 5:
                fill, text = QColor(235, 235, 180), "sum\noutput"
            else:
                op = g.ops[i - 1]
                fill, text = op_colour(op), f"node {i}\n{op_label(op)}"
            p.setPen(QPen(QColor(30, 30, 30), 1))
            p.setBrush(fill)
            p.drawRoundedRect(rect, 6, 6)
            p.setPen(QColor(0, 0, 0))
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(fg)
        wiring = f"in2={g.in2}  in3={g.in3}  in4={g.in4}   (0 = cell input)"
        p.drawText(QRectF(r.left(), r.bottom() - 16, r.width(), 16), Qt.AlignmentFlag.AlignLeft, wiring)

    def _arrow(self, p: QPainter, source: QRectF, target: QRectF, fg: QColor, arc: int = 0,
               dashed: bool = False) -> None:
        """An arrow between two boxes; ``arc`` < 0 bends above the row, > 0 below, 0 is straight."""
        pen = QPen(fg, 1.3, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        p.setPen(pen)
        if arc == 0:
            a = QPointF(source.right(), source.center().y())
            b = QPointF(target.left(), target.center().y())
            path = QPainterPath(a)
            path.lineTo(b)
            tip_dir = QPointF(1, 0)
        else:
            up = arc < 0
            a = QPointF(source.center().x(), source.top() if up else source.bottom())
            b = QPointF(target.center().x() - target.width() * 0.15, target.top() if up else target.bottom())
            lift = (target.height() * 0.55) * abs(arc) + 10
            dy = -lift if up else lift
            path = QPainterPath(a)
            path.cubicTo(QPointF(a.x(), a.y() + dy), QPointF(b.x(), b.y() + dy), b)
            tip_dir = QPointF(0, 1 if up else -1)
        p.drawPath(path)
        # arrow head pointing along tip_dir
        nx, ny = tip_dir.x(), tip_dir.y()
        head = QPolygonF([b, QPointF(b.x() - 7 * nx - 4 * ny, b.y() - 7 * ny - 4 * nx),
                          QPointF(b.x() - 7 * nx + 4 * ny, b.y() - 7 * ny + 4 * nx)])
        p.setPen(QPen(fg, 1))
        p.setBrush(fg)
        p.drawPolygon(head)
        p.setBrush(Qt.BrushStyle.NoBrush)

    def _paint_macro(self, p: QPainter, r: QRectF, fg: QColor) -> None:
        g = self._genome
        assert g is not None
        n = g.n_levels
        p.setPen(fg)
        p.drawText(QRectF(r.left(), r.top(), r.width(), 16), Qt.AlignmentFlag.AlignLeft,
                   f"Network: {g.n_cells} cells, {n} levels, nf1 = {g.nf1}, lr = {g.lr:g}")
        top = r.top() + 22
        avail = r.height() - 40
        cols = 2 * n + 1
        bw = min(r.width() / (cols + 1) * 0.8, 60.0)
        bh = min(avail / (n + 1) * 0.6, 30.0)
        step_y = (avail - bh) / max(n, 1)
        x0 = r.left() + r.width() / (cols + 1) * 0.5

        def cell_rect(col: int, level: int) -> QRectF:
            cx = x0 + (col + 0.5) * (r.width() - bw) / cols
            return QRectF(cx, top + level * step_y, bw, bh)

        enc = [cell_rect(l, l) for l in range(n + 1)]
        dec = {l: cell_rect(2 * n - l, l) for l in range(n)}
        p.setPen(QPen(fg, 1.2))
        for l in range(n):  # down (max-pool) and up (transposed conv) steps
            p.drawLine(enc[l].center(), enc[l + 1].center())
            nxt = dec[l + 1] if l + 1 < n else enc[n]
            p.drawLine(nxt.center(), dec[l].center())
        skip_pen = QPen(QColor(200, 80, 80), 1.2, Qt.PenStyle.DashLine)
        for l in range(n):  # additive skips
            p.setPen(skip_pen)
            p.drawLine(QPointF(enc[l].right(), enc[l].center().y()), QPointF(dec[l].left(), dec[l].center().y()))
            p.setPen(fg)
            mid = QPointF((enc[l].right() + dec[l].left()) / 2, enc[l].center().y() - 3)
            p.drawText(mid, "+")
        for l, rect in enumerate(enc):
            self._cell_box(p, rect, g.nf1 * 2**l, QColor(120, 160, 220) if l < n else QColor(150, 110, 200))
        for l, rect in dec.items():
            self._cell_box(p, rect, g.nf1 * 2**l, QColor(120, 200, 160))
        p.setPen(fg)
        legend = f"stem {self._in_channels}\u2192{g.nf1}, head 1x1x1 \u2192 {self._num_classes} classes;" \
                 " red dashes: additive skips"
        p.drawText(QRectF(r.left(), r.bottom() - 16, r.width(), 16), Qt.AlignmentFlag.AlignLeft, legend)

    def _cell_box(self, p: QPainter, rect: QRectF, width: int, colour: QColor) -> None:
        p.setPen(QPen(QColor(40, 40, 40), 1))
        p.setBrush(colour)
        p.drawRoundedRect(rect, 4, 4)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QColor(0, 0, 0))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, str(width))
