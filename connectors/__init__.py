"""TIPSv2 as the vision tower of LLaVA-style multimodal LLMs (installed as ``tipsv2_sdk.connectors``)."""
