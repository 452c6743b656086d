"""The inference router: weighted stable/canary split, mirroring, fallback chain, metrics, prediction samples.

`modelfleet router` runs it (see `modelfleet.router.main`); `docs/router.md` describes it.
"""
