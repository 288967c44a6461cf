# i2s_server (with i2s_client for health checks and i2s_tool) in a slim runtime image.
#
#   docker build -t i2s-server .                          # CPU image, Debian 12, Debian's LibTorch
#   docker run -d --gpus all -p 50051:50051 -p 9464:9464 \
#     -v $PWD/weights:/weights:ro -v i2s-data:/data -v $PWD/secrets:/secrets:ro \
#     i2s-server --address=0.0.0.0:50051 --local-address=127.0.0.1:50052 \
#       --model=ffhq=/weights/stylegan1_ffhq_1024.pt --vgg=/weights/vgg16.pth --devices=cuda \
#       --tls-cert=/secrets/server.pem --tls-key=/secrets/server.key \
#       --auth-tokens=/secrets/tokens --metrics-address=0.0.0.0:9464 --log-format=json
#
# Weights are always mounted, never baked in. The store lives on the /data volume. The
# HEALTHCHECK asks grpc.health.v1 through i2s_client on the loopback plaintext listener,
# so give the server --local-address=127.0.0.1:50052 (the default command does).
#
# Base images are build arguments. The defaults build the CPU image from Debian 12 with
# Debian's LibTorch 1.13. An NVIDIA image needs a LibTorch 2.x CUDA build in the builder
# (PyTorch's, with CUDA's runtime libraries in the runtime stage) and is not built here:
# see docs/OPERATIONS.md for what is and is not exercised.
ARG BUILD_IMAGE=debian:12
ARG RUNTIME_IMAGE=debian:12

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY scripts/setup scripts/setup
RUN scripts/setup
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DI2S_ENABLE_TESTS=OFF \
 && cmake --build /build --target i2s_server i2s_client i2s_tool

FROM ${RUNTIME_IMAGE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libtorch1.13 libgrpc++1.51 libprotobuf32 libsqlite3-0 libcivetweb1 libabsl20220623 \
      libopencv-imgcodecs406 libopencv-objdetect406 libopencv-contrib406 libopencv-videoio406 \
      opencv-data ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data i2s \
 && mkdir -p /data && chown i2s:i2s /data
COPY --from=build /build/server/i2s_server /build/client/i2s_client /build/tools/i2s_tool \
     /usr/local/bin/
USER 10001:10001
VOLUME /data
WORKDIR /data
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=6s --start-period=300s --retries=3 \
  CMD ["i2s_client", "--server=127.0.0.1:50052", "--timeout=5", "health"]
ENTRYPOINT ["/usr/local/bin/i2s_server", "--data-dir=/data"]
CMD ["--address=0.0.0.0:50051", "--local-address=127.0.0.1:50052", "--demo-model", \
     "--plaintext", "--metrics-address=0.0.0.0:9464"]
