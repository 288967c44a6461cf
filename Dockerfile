# Builds the current tools (i2s_tool) on Debian 12 with Debian's LibTorch (CPU).
# The server image for NVIDIA hosts (CUDA base, LibTorch 2.x, grpc.health.v1
# HEALTHCHECK) arrives with the deployment issue; weights are always mounted, never baked in.
#   podman build -t i2s-tools .
#   podman run --rm -v $PWD/weights:/weights:ro i2s-tools info /weights/generator.pt
ARG BASE_IMAGE=debian:12
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY scripts/setup scripts/setup
RUN scripts/setup
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DI2S_ENABLE_TESTS=OFF \
 && cmake --build /build --target i2s_tool

FROM ${BASE_IMAGE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libtorch1.13 libopencv-imgcodecs406 libopencv-objdetect406 libopencv-face406 opencv-data \
      libabsl20220623 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data i2s
COPY --from=build /build/tools/i2s_tool /usr/local/bin/i2s_tool
USER i2s
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/i2s_tool"]
