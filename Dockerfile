# modelfleet images, three targets:
#   docker build --target operator -t modelfleet .            `modelfleet`: the operator and the router
#   docker build --target model-server -t iris-server .       the reference iris model server, model baked in
#   docker build --target mlserver -t modelfleet-mlserver .   the MLServer runtime: serves a model artifact
# Without --target the operator image is built. The base image is a build argument so that a machine
# with no registry can build on a local image (images/build.sh does); any Debian-based image whose
# `python` is Python >= 3.11 with venv works.
ARG BASE=python:3.11-slim-bookworm

# ---- build stages: dependencies first, in layers that survive source changes, then the package.
FROM ${BASE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_WARN_SCRIPT_LOCATION=1
WORKDIR /src
# /opt/modelfleet: the venv with the dependencies, filled by the build-tools venv's pip (no pip in it).
# /opt/app: the package alone, on the venv's path through a .pth file, so that a source change
# makes a new layer of a few hundred kilobytes instead of a new copy of the whole venv.
RUN python -m venv --without-pip /opt/modelfleet \
 && python -m venv /opt/build-tools \
 && /opt/build-tools/bin/pip install --quiet "setuptools>=68" wheel \
 && /opt/modelfleet/bin/python -c "import pathlib, sysconfig; \
pathlib.Path(sysconfig.get_path('purelib'), 'modelfleet-app.pth').write_text('/opt/app\n')"

FROM venv AS deps
COPY images/requirements.py pyproject.toml ./
RUN python requirements.py pyproject.toml > requirements.txt \
 && /opt/build-tools/bin/pip --python /opt/modelfleet/bin/python install --quiet -r requirements.txt

FROM deps AS deps-model-server
RUN python requirements.py pyproject.toml modelserver > requirements-modelserver.txt \
 && /opt/build-tools/bin/pip --python /opt/modelfleet/bin/python install --quiet -r requirements-modelserver.txt

# The MLServer runtime's venv holds MLServer and its runtimes only (the launcher needs nothing of the
# operator's dependencies). Its requirement list is made in a stage of its own, so that a change
# elsewhere in pyproject.toml leaves the (large) installed layer cached.
FROM venv AS mlserver-requirements
COPY images/requirements.py pyproject.toml ./
RUN python requirements.py pyproject.toml mlserver > requirements-mlserver.txt

FROM venv AS deps-mlserver
COPY --from=mlserver-requirements /src/requirements-mlserver.txt ./
# xgboost's NCCL (about 470 MB) serves multi-GPU training only; CPU inference never loads it.
RUN /opt/build-tools/bin/pip --python /opt/modelfleet/bin/python install --quiet -r requirements-mlserver.txt \
 && /opt/build-tools/bin/pip --python /opt/modelfleet/bin/python uninstall --quiet --yes nvidia-nccl-cu12

# The package itself (its dependencies are in the venvs above, hence --no-deps).
FROM venv AS app
COPY pyproject.toml ./
COPY operator/ operator/
RUN /opt/build-tools/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
 && /opt/build-tools/bin/pip --python /opt/modelfleet/bin/python install --quiet --no-deps \
      --target /opt/app /tmp/wheels/*.whl

# ---- runtime: the base image, an unprivileged user, the venv and the package. The numeric USER
# lets the kubelet check `runAsNonRoot` (Pod Security "restricted") without reading /etc/passwd.
FROM ${BASE} AS runtime
RUN groupadd --system --gid 65532 modelfleet \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin modelfleet
ENV PATH=/opt/app/bin:/opt/modelfleet/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
LABEL org.opencontainers.image.title="modelfleet" \
      org.opencontainers.image.licenses="Apache-2.0"

FROM runtime AS model-server
COPY --from=deps-model-server /opt/modelfleet /opt/modelfleet
COPY --from=app /opt/app /opt/app
RUN mkdir -p /models && modelfleet model-server --train /models/iris.joblib && chmod -R a+rX /models
LABEL org.opencontainers.image.description="modelfleet reference iris model server"
# Configured through the environment, so a pod's `args` (fault injection flags, say) add to it.
ENV MODELFLEET_MODEL_FILE=/models/iris.joblib PORT=8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["modelfleet", "model-server"]

# The artifact is at /mnt/models before the server starts (an init container puts it there); the
# launcher writes MLServer's settings for MODELFLEET_MODEL_FORMAT into /tmp and starts MLServer.
FROM runtime AS mlserver
# LightGBM loads the system's OpenMP runtime (scikit-learn and XGBoost bring their own).
RUN apt-get update -qq \
 && apt-get install -qq -y --no-install-recommends libgomp1 >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
COPY --from=deps-mlserver /opt/modelfleet /opt/modelfleet
COPY --from=app /opt/app /opt/app
LABEL org.opencontainers.image.description="modelfleet MLServer runtime: sklearn, xgboost, lightgbm and mlflow artifacts over Open Inference Protocol v2"
ENV MODELFLEET_MODEL_DIR=/mnt/models HOME=/tmp
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["modelfleet", "runtime", "mlserver"]

FROM runtime AS operator
COPY --from=deps /opt/modelfleet /opt/modelfleet
COPY --from=app /opt/app /opt/app
LABEL org.opencontainers.image.description="modelfleet operator and inference router"
USER 65532:65532
ENTRYPOINT ["modelfleet"]
CMD ["operator"]
