"""The TIPSv2 training and distillation recipe (installed as ``tipsv2_sdk.pretrain``)."""
