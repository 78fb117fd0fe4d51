"""Where the cost of walking K images together goes on this machine (a CPU here).

    python bench/profile_batching.py [--arch smolvlm-256m] [--k 1,2,4,8] [--models-dir runs/bench-models]

For each K: the prefix encoding of K images in one batch against K single encodings, and one realistic
round (the tree's first yes/no round of K images: their gate questions) as one forward against one forward
per image, with the padding share of that batch, and the same round packed exactly (one sequence per image
after its prefix, a 4D mask keeping the questions apart: `--packing exact`, no padding between questions); then the top operators of the K-image round under
torch.profiler. Numbers from a loaded machine are not worth comparing: run it quiet.
"""

from __future__ import annotations

import argparse
import time

import torch


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from explainer import testing
    from explainer.answerers.base import ImageContext
    from explainer.answerers.hf import load_vlm
    from explainer.answerers.hf import prefix_cache as pc
    from explainer.bench import synthetic_images

    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="smolvlm-256m")
    ap.add_argument("--k", default="1,2,4,8")
    ap.add_argument("--models-dir", default="runs/bench-models")
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    path = (testing.build_smolvlm_256m(f"{args.models_dir}/smolvlm-256m") if args.arch == "smolvlm-256m"
            else testing.build_tiny_vlm(args.arch, args.models_dir))
    base = load_vlm(path, device="cpu", dtype=args.dtype)
    base.max_images = base.max_batch = 256
    ks = [int(k) for k in args.k.split(",")]
    pictures = [im.resize((128, 128)) for im in synthetic_images(max(ks), 0)]
    # gate questions of one region (what a K-image round sends): several lengths, so padding shows
    gates = ["Look at the object in the region inside the red box. Do its edges glow, bleed or blur into the "
             "background? Answer yes or no.", "Is any texture repeated unnaturally? Answer yes or no.",
             "Do the shadows or the light fall in ways a real scene could not produce? Answer yes or no.",
             "Are parts of the object merged, cut off or floating? Answer yes or no."]
    print(f"{base.model_type}, {sum(p.numel() for p in base.model.parameters()) / 1e6:.0f}M, "
          f"{base.model.dtype}, {torch.get_num_threads()} threads")
    print("| K | encode K together s / image | encode alone s / image | round together s / image | "
          "round per image s / image | padding share of the round | round packed (exact) s / image |")
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        ctx = {s: ImageContext(image=pictures[s], preamble="This image may be AI-generated.") for s in range(k)}

        def together():
            base.begin_images(ctx)
            base.end_images(list(ctx))

        def alone():
            for c in ctx.values():
                base.begin_image(c)
                base.end_image()

        enc_t, enc_a = _time(together, 2) / k, _time(alone, 2) / k
        base.begin_images(ctx)
        pairs = [(s, q) for s in ctx for q in gates]
        rows = base._prepare([(s, type("Q", (), {"prompt": q})()) for s, q in pairs], lambda q: q.prompt)
        owners = [base._open[s] for s, _ in pairs]

        def round_together():
            pc.run_suffixes(base.model, [o.prefix for o in owners], rows, base.pad_id)

        def round_alone():
            for s in ctx:
                mine = [i for i, (t, _) in enumerate(pairs) if t == s]
                pc.run_suffixes(base.model, [owners[i].prefix for i in mine], [rows[i] for i in mine], base.pad_id)

        def round_packed():
            pc.run_packed(base.model, [o.prefix for o in owners], rows, base.pad_id)

        width = max(map(len, rows))
        padding = 1 - sum(map(len, rows)) / (len(rows) * width)
        print(f"| {k} | {enc_t:.3f} | {enc_a:.3f} | {_time(round_together) / k:.3f} | {_time(round_alone) / k:.3f} | "
              f"{100 * padding:.0f}% | {_time(round_packed) / k:.3f} |")
        if k == max(ks):
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                round_together()
            print(f"\ntop operators of one {k}-image round:\n")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        base.end_images(list(ctx))


if __name__ == "__main__":
    main()
