# syntax=docker/dockerfile:1
# StreamRec worker image (also runs `streamrec produce`, `consume`, ... and ops/create_topics.py).
#
#   docker build -t streamrec:0.1.0-cpu .                                   # CPU (default)
#   docker build -t streamrec:0.1.0-gpu --build-arg FAISS=gpu \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .    # CUDA PyTorch + faiss-gpu
#
# The GPU image needs no CUDA base image: the CUDA PyTorch wheels and faiss-gpu bring their CUDA
# libraries; the host needs the NVIDIA driver and the NVIDIA Container Toolkit.
FROM python:3.11.11-slim-bookworm

# Exactly one FAISS build: cpu or gpu (the extras of pyproject.toml).
ARG FAISS=cpu
# PyTorch, pinned as in the Makefile; the index picks the CPU or a CUDA build.
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN case "$FAISS" in cpu|gpu) ;; *) echo "FAISS must be cpu or gpu, got '$FAISS'" >&2; exit 1 ;; esac \
 && pip install "$TORCH" --index-url "$TORCH_INDEX"

WORKDIR /opt/streamrec
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY model ./model
COPY index ./index
RUN pip install ".[$FAISS]"
COPY ops/create_topics.py ./ops/create_topics.py

# A non-root user owning the data directory. The compose file mounts the shared model store at
# /var/lib/streamrec/models; a new named volume takes this directory's owner.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/streamrec --shell /usr/sbin/nologin streamrec \
 && mkdir -p /var/lib/streamrec/models \
 && chown -R streamrec:streamrec /var/lib/streamrec
ENV STREAMREC_DATA_DIR=/var/lib/streamrec
USER streamrec
WORKDIR /var/lib/streamrec

# HTTP: /recommend/{user_id}/, /health/, /metrics/ (binds 127.0.0.1 unless STREAMREC_HTTP_HOST is set).
EXPOSE 6066
ENTRYPOINT ["streamrec"]
CMD ["worker"]
