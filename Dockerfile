# i2s_server (with i2s_client for health checks and i2s_tool) in a slim Debian 12 runtime
# image, in two variants chosen by the VARIANT build argument:
#
#   VARIANT=cuda (default)  NVIDIA GPUs: PyPI's CUDA LibTorch (torch 2.11.0, CUDA 13.0) and
#                           the CUDA 13.0 runtime, cuDNN 9, cuBLAS, NCCL, ... from PyPI's
#                           nvidia-* wheels, all pinned with their SHA-256 in
#                           scripts/torch-cuda-wheels.txt, under /opt/torch-cuda
#   VARIANT=cpu             Debian's LibTorch 1.13 (CPU only)
#
# Every input comes from Debian's archive and PyPI: no CUDA base image, no other registry.
#
#   docker build -t i2s-server .                                  # NVIDIA image
#   docker build --build-arg VARIANT=cpu -t i2s-server:cpu .      # CPU image (or podman build)
#
# BINARIES chooses where the three binaries come from:
#   source (default)  compiled in the build stage (for cuda, scripts/fetch-torch downloads the
#                     wheels there, about 2.5 GB, and the build uses the CUDA toolkit it
#                     assembles from them)
#   prebuilt          taken from a second build context named `prebuilt`, holding bin/ (the
#                     three binaries), torch-cuda/ (`scripts/fetch-torch --runtime
#                     DIR/torch-cuda` for cuda; empty for cpu) and mtcnn/ (what
#                     scripts/fetch-models puts in .cache/models/mtcnn), built on a Debian 12
#                     host from the same pins:
#                       docker build --build-arg BINARIES=prebuilt --build-context prebuilt=DIR .
#                     scripts/container-test does this with the host's build-cuda/, so CI does
#                     not compile everything a second time.
# With podman 4.3 (Debian 12's), give --build-arg BINARIES=... even for the default: its
# builder picks the stages to build from the --build-arg values only.
#
# Run the NVIDIA image on a host with the NVIDIA driver (>= 580, for CUDA 13.0) and the
# NVIDIA Container Toolkit (docs/OPERATIONS.md):
#
#   docker run -d --gpus all -p 50051:50051 -p 9464:9464 \
#     -v $PWD/weights:/weights:ro -v i2s-data:/data -v $PWD/secrets:/secrets:ro \
#     i2s-server --address=0.0.0.0:50051 --local-address=127.0.0.1:50052 \
#       --model=ffhq=/weights/stylegan1_ffhq_1024.pt --vgg=/weights/vgg16.pth --devices=cuda \
#       --tls-cert=/secrets/server.pem --tls-key=/secrets/server.key \
#       --auth-tokens=/secrets/tokens --metrics-address=0.0.0.0:9464 --log-format=json
#
# Either image also runs without a GPU (--devices=cpu). Without arguments it serves the demo
# model in plaintext (enough to try it out).
#
# Generator and VGG16 weights are always mounted, never baked in; only MTCNN's small face
# detector (MIT licence, in /usr/share/i2s/mtcnn with its LICENSE.md) is in the image. The store lives on the /data volume. The
# HEALTHCHECK asks grpc.health.v1 through i2s_client on the loopback plaintext listener,
# so give the server --local-address=127.0.0.1:50052 (the default command does).
# The licences of the bundled PyTorch and NVIDIA libraries are in /opt/torch-cuda/licenses.
ARG VARIANT=cuda
ARG BINARIES=source
ARG BUILD_IMAGE=debian:12
ARG RUNTIME_IMAGE=debian:12

# ---- BINARIES=source: compile here -------------------------------------------------------
FROM ${BUILD_IMAGE} AS build-source
ARG VARIANT
# A CA bundle for pip where the network to PyPI goes through a TLS-inspecting proxy (a path
# inside the build, mounted by the caller: podman build -v HOST_BUNDLE:PATH:ro); unset, pip
# uses Debian's certificates.
ARG PIP_CERT=""
WORKDIR /src
COPY scripts/setup scripts/select-blas scripts/fetch-torch scripts/torch-cuda-wheels.txt \
     scripts/fetch-models scripts/
# Only the build's packages (I2S_SETUP_BUILD_ONLY: no test, fuzzing or debootstrap tools).
# cuda: PyPI's LibTorch and CUDA wheels instead of Debian's libtorch-dev (CPU only).
RUN set -eu; \
    export DEBIAN_FRONTEND=noninteractive; \
    case "$VARIANT" in \
      cpu) \
        I2S_SETUP_BUILD_ONLY=1 scripts/setup; \
        mkdir -p /out/torch-cuda ;; \
      cuda) \
        I2S_SETUP_BUILD_ONLY=1 I2S_SETUP_NO_TORCH=1 scripts/setup; \
        if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi; \
        scripts/fetch-torch --runtime /out/torch-cuda; \
        mv .cache/torch-cuda /opt/torch-cuda; \
        rm -rf .cache ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    mkdir -p /out/mtcnn && cp "$(scripts/fetch-models)"/* /out/mtcnn/ && rm -rf .cache; \
    rm -rf /var/lib/apt/lists/*
COPY . .
RUN set -eu; \
    torch=""; \
    [ "$VARIANT" = cuda ] && torch="-DI2S_TORCH=pypi -DI2S_TORCH_DIR=/opt/torch-cuda"; \
    cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DI2S_ENABLE_TESTS=OFF $torch; \
    cmake --build /build --target i2s_server i2s_client i2s_tool; \
    mkdir -p /out/bin; \
    cp /build/server/i2s_server /build/client/i2s_client /build/tools/i2s_tool /out/bin/

# ---- BINARIES=prebuilt: from the `prebuilt` build context --------------------------------
FROM scratch AS build-prebuilt
COPY --from=prebuilt bin/ /out/bin/
COPY --from=prebuilt torch-cuda/ /out/torch-cuda/
COPY --from=prebuilt mtcnn/ /out/mtcnn/

FROM build-${BINARIES} AS binaries

# ---- the runtime image --------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG VARIANT
# The same BLAS choice as scripts/setup (the OpenMP OpenBLAS, set explicitly).
COPY scripts/select-blas /tmp/select-blas
# The shared libraries of the three binaries (Debian 12 names; libgomp1 is the OpenMP runtime
# of LibTorch too: scripts/fetch-torch), libpq5 for the PostgreSQL
# store; Debian's LibTorch with OpenBLAS for the CPU variant only (without it, BLAS is the
# slow reference one; see scripts/setup).
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libsqlite3-0 libcivetweb1 libabsl20220623 libpq5 \
      libopencv-imgcodecs406 libopencv-objdetect406 libopencv-contrib406 libopencv-videoio406 \
      libopencv-photo406 \
      libgomp1 opencv-data ca-certificates \
 && if [ "$VARIANT" = cpu ]; then \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libtorch1.13 libopenblas0-openmp \
      && /tmp/select-blas; \
    fi \
 && rm -rf /var/lib/apt/lists/* /tmp/select-blas \
 && useradd --system --uid 10001 --user-group --home-dir /data i2s \
 && mkdir -p /data && chown i2s:i2s /data
# cuda: LibTorch and the NVIDIA libraries, in the wheels' own layout (torch/lib's RUNPATH is
# $ORIGIN/../../nvidia/*/lib), without what only a build needs (nvcc, headers, static
# libraries, link names: scripts/fetch-torch --runtime), and the licences; empty for cpu.
COPY --from=binaries /out/torch-cuda /opt/torch-cuda
COPY --from=binaries /out/bin/ /usr/local/bin/
# MTCNN's trained weights with their MIT licence (scripts/fetch-models: PyPI's facenet-pytorch
# 2.6.0): the server's default face detector, found here by --mtcnn auto.
COPY --from=binaries /out/mtcnn/ /usr/share/i2s/mtcnn/
# Every library the binaries need must resolve here (libcuda.so.1 is the host driver's,
# mounted at run time by the NVIDIA runtime, so it may be missing at build time).
RUN set -eu; \
    if [ -d /opt/torch-cuda/torch/lib ]; then \
      { echo /opt/torch-cuda/torch/lib; ls -d /opt/torch-cuda/nvidia/*/lib; } > /etc/ld.so.conf.d/i2s-torch-cuda.conf; \
      ldconfig; \
    fi; \
    for b in i2s_server i2s_client i2s_tool; do \
      if ldd "/usr/local/bin/$b" | grep 'not found' | grep -v 'libcuda\.so'; then \
        echo "$b: shared libraries missing in the runtime image" >&2; exit 1; \
      fi; \
    done
USER 10001:10001
VOLUME /data
WORKDIR /data
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=6s --start-period=300s --retries=3 \
  CMD ["i2s_client", "--server=127.0.0.1:50052", "--timeout=5", "health"]
ENTRYPOINT ["/usr/local/bin/i2s_server", "--data-dir=/data"]
CMD ["--address=0.0.0.0:50051", "--local-address=127.0.0.1:50052", "--demo-model", \
     "--plaintext", "--metrics-address=0.0.0.0:9464"]
