"""The click commands of ``tipsv2 embed|index|search|demo``, one module per command family.

``tipsv2_sdk.index.cli`` assembles them; import commands from there.
"""
