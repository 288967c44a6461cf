# i2s_server (with i2s_client for health checks and i2s_tool) in a slim runtime image, in
# two variants chosen by the VARIANT build argument:
#
#   VARIANT=cuda (default)  NVIDIA CUDA 12.6 + cuDNN 9 on Ubuntu 24.04, with PyTorch's
#                           LibTorch 2.6 for CUDA 12.6 (cxx11 ABI) in /opt/libtorch
#   VARIANT=cpu             Debian 12 with Debian's LibTorch 1.13 (CPU only)
#
# Ubuntu 24.04 has the same gRPC 1.51, protobuf 3.21, Abseil 20220623 and OpenCV 4.6 as
# Debian 12, so both variants build with scripts/setup; only LibTorch differs.
#
#   docker build -t i2s-server .                                  # NVIDIA image
#   docker build --build-arg VARIANT=cpu -t i2s-server:cpu .      # CPU image (or podman build)
#
# Run the NVIDIA image on a host with the NVIDIA driver and Container Toolkit:
#
#   docker run -d --gpus all -p 50051:50051 -p 9464:9464 \
#     -v $PWD/weights:/weights:ro -v i2s-data:/data -v $PWD/secrets:/secrets:ro \
#     i2s-server --address=0.0.0.0:50051 --local-address=127.0.0.1:50052 \
#       --model=ffhq=/weights/stylegan1_ffhq_1024.pt --vgg=/weights/vgg16.pth --devices=cuda \
#       --tls-cert=/secrets/server.pem --tls-key=/secrets/server.key \
#       --auth-tokens=/secrets/tokens --metrics-address=0.0.0.0:9464 --log-format=json
#
# The CPU image runs the same way without --gpus and with --devices=cpu. Without
# arguments either image serves the demo model in plaintext (enough to try it out).
#
# Weights are always mounted, never baked in. The store lives on the /data volume. The
# HEALTHCHECK asks grpc.health.v1 through i2s_client on the loopback plaintext listener,
# so give the server --local-address=127.0.0.1:50052 (the default command does).
#
# Base images and the LibTorch archive are build arguments (CPU_BUILD_IMAGE,
# CPU_RUNTIME_IMAGE, CUDA_BUILD_IMAGE, CUDA_RUNTIME_IMAGE, LIBTORCH_URL); a build only
# pulls the two of its variant. CI (scripts/container-test) builds the CPU variant with
# podman from a debootstrapped Debian 12; the NVIDIA variant is not built there (see
# docs/OPERATIONS.md for what is and is not exercised).
ARG VARIANT=cuda
ARG CPU_BUILD_IMAGE=debian:12
ARG CPU_RUNTIME_IMAGE=debian:12
ARG CUDA_BUILD_IMAGE=nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# One builder and one runtime base per variant; `FROM <name>-${VARIANT}` below picks
# the pair, and the other variant's bases are never pulled.
FROM ${CPU_BUILD_IMAGE} AS build-base-cpu
FROM ${CUDA_BUILD_IMAGE} AS build-base-cuda
FROM ${CPU_RUNTIME_IMAGE} AS runtime-base-cpu
FROM ${CUDA_RUNTIME_IMAGE} AS runtime-base-cuda

FROM build-base-${VARIANT} AS build
ARG VARIANT
# PyTorch's LibTorch for the NVIDIA variant (its CUDA version must match the base image's).
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu126/libtorch-cxx11-abi-shared-with-deps-2.6.0%2Bcu126.zip
WORKDIR /src
COPY scripts/setup scripts/select-blas scripts/
# Only the build's packages (I2S_SETUP_BUILD_ONLY: no test, fuzzing or debootstrap tools).
# cuda: LibTorch comes from the archive instead of Debian's libtorch-dev (CPU only, and not
# in Ubuntu). /opt/libtorch/lib exists in both variants so the runtime stage can copy it.
RUN set -eu; \
    export DEBIAN_FRONTEND=noninteractive; \
    case "$VARIANT" in \
      cpu) \
        I2S_SETUP_BUILD_ONLY=1 scripts/setup; \
        mkdir -p /opt/libtorch/lib ;; \
      cuda) \
        I2S_SETUP_BUILD_ONLY=1 I2S_SETUP_NO_TORCH=1 scripts/setup; \
        apt-get update -q; \
        apt-get install -y -q --no-install-recommends curl unzip ca-certificates; \
        curl -fsSL --retry 3 -o /tmp/libtorch.zip "$LIBTORCH_URL"; \
        unzip -q /tmp/libtorch.zip -d /opt; \
        rm /tmp/libtorch.zip; \
        test -f /opt/libtorch/share/cmake/Torch/TorchConfig.cmake ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    rm -rf /var/lib/apt/lists/*
COPY . .
# CMAKE_PREFIX_PATH finds PyTorch's LibTorch (cuda); for cpu the folder is empty and
# Debian's LibTorch is found as usual.
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DI2S_ENABLE_TESTS=OFF \
      -DCMAKE_PREFIX_PATH=/opt/libtorch \
 && cmake --build /build --target i2s_server i2s_client i2s_tool

FROM runtime-base-${VARIANT}
ARG VARIANT
# The same BLAS choice as scripts/setup (the OpenMP OpenBLAS, set explicitly).
COPY scripts/select-blas /tmp/select-blas
# The shared libraries of the three binaries (Debian 12 names; Ubuntu 24.04's renamed
# "t64" packages provide these names, so apt picks them there), libpq5 for the PostgreSQL
# store, and Debian's LibTorch with OpenBLAS for the CPU variant only (without it, BLAS is
# the slow reference one; see scripts/setup).
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libsqlite3-0 libcivetweb1 libabsl20220623 libpq5 \
      libopencv-imgcodecs406 libopencv-objdetect406 libopencv-contrib406 libopencv-videoio406 \
      opencv-data ca-certificates \
 && if [ "$VARIANT" = cpu ]; then \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libtorch1.13 libopenblas0-openmp \
      && /tmp/select-blas; \
    fi \
 && rm -rf /var/lib/apt/lists/* /tmp/select-blas \
 && useradd --system --uid 10001 --user-group --home-dir /data i2s \
 && mkdir -p /data && chown i2s:i2s /data
# PyTorch's LibTorch (cuda; empty for cpu), found through ld.so.conf as well as the
# binaries' RUNPATH.
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /build/server/i2s_server /build/client/i2s_client /build/tools/i2s_tool \
     /usr/local/bin/
# Every library the binaries need must resolve here (libcuda.so.1 is the host driver's,
# mounted at run time by the NVIDIA runtime, so it may be missing at build time).
RUN echo /opt/libtorch/lib > /etc/ld.so.conf.d/i2s-libtorch.conf && ldconfig \
 && for b in i2s_server i2s_client i2s_tool; do \
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
