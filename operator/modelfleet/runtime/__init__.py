"""Launchers of the shared runtime images, which serve a model artifact instead of a baked-in model.

The contract every runtime image keeps (API.md, "Models as artifacts"): the artifact is at
/mnt/models (env MODELFLEET_MODEL_DIR) before the server starts; the server answers Open Inference
Protocol v2 on port 8080 with readiness at /v2/health/ready.

- `modelfleet.runtime.mlserver`: `modelfleet runtime mlserver`, which writes MLServer's settings for
  the artifact's format and starts MLServer;
- `modelfleet.runtime.binary`: the OIP binary data extension (tensors as raw bytes after a JSON header),
  as an ASGI middleware in front of MLServer's REST app, which answers JSON only;
- `modelfleet.runtime.serve`: `mlserver start` with that middleware installed.

Part of the data plane: nothing here imports the operator.
"""
