# The irec image: every container of charts/irec runs it (Ray head and workers, the RayJob
# submitter, the Feast feature server, the feature Jobs). Ray's own image brings the `ray` CLI
# and the bash/wget KubeRay expects; it runs as the non-root user `ray` (uid 1000, gid 100).
#
#   docker build -t <registry>/irec:0.1.0 .
#   GPU nodes: docker build --build-arg BASE=rayproject/ray:2.60.0-py311-gpu \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t <registry>/irec:0.1.0-gpu .
ARG BASE=rayproject/ray:2.60.0-py311-cpu
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

WORKDIR /home/ray/irec
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 data ./data
COPY --chown=1000:100 irec ./irec
COPY --chown=1000:100 training ./training
COPY --chown=1000:100 features ./features
COPY --chown=1000:100 feature_repo ./feature_repo
COPY --chown=1000:100 serving ./serving
COPY --chown=1000:100 ray_apps ./ray_apps

# torch from its own index (CPU or CUDA wheels), then the package; s3fs/gcsfs let BentoML
# export and import models to object storage (modelStore.mode: objectStore).
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
 && pip install --no-cache-dir . s3fs gcsfs \
 && rm -rf /home/ray/irec/build

USER 1000:100
