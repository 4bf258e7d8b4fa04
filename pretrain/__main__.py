"""``python -m tipsv2_sdk.pretrain ...`` runs the ``tipsv2 pretrain`` command group (also under torchrun)."""
from .cli import pretrain

if __name__ == "__main__":
    pretrain(prog_name="python -m tipsv2_sdk.pretrain")
