"""The TIPSv2 training losses, one per file (formula in each class docstring)."""
from .contrastive import ContrastiveLoss
from .dino import DINOLoss
from .ibot import IBOTPatchLoss
from .koleo import KoLeoLoss
from .sinkhorn import sinkhorn_knopp

__all__ = ["ContrastiveLoss", "DINOLoss", "IBOTPatchLoss", "KoLeoLoss", "sinkhorn_knopp"]
