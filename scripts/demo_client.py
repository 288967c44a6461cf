#!/usr/bin/env python3
"""The demo's client: embeds two sample photos at once (they share optimiser steps on the
server), shows the streamed progress, then morphs and style-mixes the two latents and
writes every picture to --out. Talks to i2s_server through stubs generated from the proto."""

import argparse
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import i2s_harness as h  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--proto", default=os.path.join(os.path.dirname(__file__), "..", "proto"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    h.generate_stubs(a.proto, os.path.join(a.out, ".stubs"))
    import grpc
    from i2s.v1 import i2s_pb2 as pb, i2s_pb2_grpc
    channel = grpc.insecure_channel(f"127.0.0.1:{a.port}",
                                    options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = i2s_pb2_grpc.ImageToStyleGanStub(channel)
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    m = info.models[0]
    print(f"== server {info.version}: model {m.name} {m.resolution}x{m.resolution} "
          f"({'demo, random weights' if m.is_demo else 'trained'}), devices {list(info.devices)}")

    photos = {"astronaut": "astronaut.png", "chelsea": "chelsea.png"}
    latents, lock = {}, threading.Lock()

    def embed(name, file):
        req = pb.EmbedRequest(image=h.image_bytes(file), seed=1, labels={"photo": name},
                              options=pb.EmbedOptions(steps=a.steps), return_reconstruction=True)
        for ev in stub.Embed(req, timeout=3600):
            kind = ev.WhichOneof("kind")
            if kind == "progress" and (ev.progress.step % 25 == 0 or ev.progress.step == 1):
                pr = ev.progress
                with lock:
                    print(f"   {name:9s} step {pr.step:4d}/{pr.total_steps}  loss "
                          f"{pr.metrics.loss:.4f}  PSNR {pr.metrics.psnr_db:5.2f} dB  "
                          f"{pr.steps_per_second:5.1f} steps/s  batch {pr.batch_size}  "
                          f"ETA {pr.eta_seconds:4.0f} s", flush=True)
            elif kind in ("queued", "running"):
                with lock:
                    print(f"   {name:9s} {kind} (job {ev.job_id})", flush=True)
            elif kind == "succeeded":
                s = ev.succeeded
                with open(os.path.join(a.out, f"{name}_reconstruction.png"), "wb") as f:
                    f.write(s.reconstruction.data)
                with lock:
                    latents[name] = s.latent_id
                    print(f"   {name:9s} done: latent {s.latent_id}, PSNR "
                          f"{s.metrics.psnr_db:.2f} dB after {s.metrics.steps} steps", flush=True)
            elif kind in ("failed", "cancelled"):
                raise SystemExit(f"{name}: {kind}: {ev}")

    print(f"== embedding {', '.join(photos)} ({a.steps} steps each, batched together)")
    threads = [threading.Thread(target=embed, args=kv) for kv in photos.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(latents) != 2:
        raise SystemExit("embedding failed")
    ref = lambda name: pb.LatentRef(latent_id=latents[name])

    print("== morphing astronaut -> chelsea (8 frames)")
    for frame in stub.Morph(pb.MorphRequest(a=ref("astronaut"), b=ref("chelsea"), frames=8),
                            timeout=600):
        with open(os.path.join(a.out, f"morph_{frame.index:02d}.png"), "wb") as f:
            f.write(frame.image.data)
    crossover = m.num_layers // 2
    print(f"== style mix: coarse layers of astronaut, layers >= {crossover} from chelsea")
    mix = stub.StyleMix(pb.StyleMixRequest(content=ref("astronaut"), style=ref("chelsea"),
                                           crossover=crossover, store_result=True), timeout=600)
    with open(os.path.join(a.out, "stylemix.png"), "wb") as f:
        f.write(mix.image.data)
    print(f"   stored as latent {mix.latent.id} (parents {', '.join(mix.latent.parents)})")
    for name, file in photos.items():
        with open(os.path.join(a.out, f"{name}_input.png"), "wb") as f:
            f.write(h.image_bytes(file))


if __name__ == "__main__":
    main()
