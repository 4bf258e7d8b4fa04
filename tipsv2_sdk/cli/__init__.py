"""The ``tipsv2`` command line (click). Commands are imported only when invoked."""
