"""The reference model server: an iris classifier (scikit-learn) over Open Inference Protocol v2 and v1.

`modelfleet model-server` runs it (see `modelfleet.modelserver.main`). Faults can be switched on by
configuration, so tests and demos can make a bad version on purpose.
"""
