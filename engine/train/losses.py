"""Losses: the paper's soft multi-class Dice, and Dice + cross-entropy (nnU-Net's default).

Dice here follows METHOD.md section 3: ``C - MCDice`` is the sum over the C foreground classes of
the per-class soft Dice loss ``1 - (2 |P.G| + s) / (|P| + |G| + s)``, computed over the whole batch
(batch Dice, as the paper's Keras code and nnU-Net's 3D default do), with smoothing ``s = 1``.
The paper profile uses the authors' form: ``1 - (2 |P.G| + 0.5) / (sum P^2 + sum G^2 + 0.5)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1.0
#: The authors' soft Dice: smoothing 0.5, squared sums in the denominator.
PAPER_DICE = {"smooth": 0.5, "squared": True}


def per_class_soft_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH,
                        squared: bool = False) -> torch.Tensor:
    """Soft Dice of each foreground class over the whole batch; shape (K - 1,).

    ``probs``: softmax output (N, K, X, Y, Z); ``target``: class indices (N, X, Y, Z); ``squared``:
    sums of squares in the denominator (the same for the one-hot target).
    Voxels of index K or more (nnU-Net's ``ignore`` label) count for no class, as nnU-Net masks them.
    """
    k = probs.shape[1]
    target = target.long()
    valid = (target < k)[:, None].to(probs.dtype)  # masked always: no host sync to ask whether to
    probs = probs * valid
    onehot = F.one_hot(target.clamp(max=k - 1), k).movedim(-1, 1).to(probs.dtype) * valid
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = (probs * probs if squared else probs).sum(dims) + onehot.sum(dims)
    return ((2 * inter + smooth) / (denom + smooth))[1:]


def dice_loss_terms(logits: torch.Tensor, target: torch.Tensor, **options) -> torch.Tensor:
    """The summed per-class soft Dice loss ``C - MCDice`` (a scalar, between 0 and C); ``options``
    are those of :func:`per_class_soft_dice`."""
    probs = torch.softmax(logits.float(), dim=1)
    d = per_class_soft_dice(probs, target, **options)
    return (1 - d).sum()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the voxels of a class index below K (the ``ignore`` label's are left out)."""
    target = target.long()
    valid = target < logits.shape[1]
    total = F.cross_entropy(logits.float(), target.masked_fill(~valid, -100), ignore_index=-100, reduction="sum")
    return total / valid.sum().clamp(min=1)  # only ignored voxels: 0, not NaN


class SoftDiceLoss(torch.nn.Module):
    """The paper's loss: ``C - MCDice`` with the authors' smoothing and squared sums.
    ``forward`` returns (loss, dice_loss) for the logger."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = dice_loss_terms(logits, target, **PAPER_DICE)
        return d, d.detach()


class DiceCELoss(torch.nn.Module):
    """Dice + cross-entropy: ``(C - MCDice) / C + CE``, so both terms weigh about the same.

    ``forward`` returns (loss to minimize, the unscaled ``C - MCDice`` term for f1).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = logits.shape[1] - 1
        d = dice_loss_terms(logits, target)
        ce = cross_entropy(logits, target)
        return d / c + ce, d.detach()


def make_loss(profile: str) -> torch.nn.Module:
    """The loss of a training profile: ``paper`` soft Dice, ``default`` Dice + cross-entropy."""
    return SoftDiceLoss() if profile == "paper" else DiceCELoss()
