"""Captioning at corpus scale and on long videos (issue 11), measured in one run on this machine (CPU).

1. Corpus: N clips (64; 8 with --quick) of 10 s 640x360 H.264 captioned with the full-size model (ResNet-50 +
   GPT-2 small, random init, 8 frames, 20 new tokens, eos suppressed) three ways:
   - one by one, as `vidgpt2 caption` did before (decode, then generate, per clip, in one process);
   - `vidgpt2.caption_videos` (what `vidgpt2 caption --output` runs: DataLoader decoding workers, batched generate,
     JSONL appended as it goes);
   - the model alone on the same batches decoded beforehand (the ceiling).
   Target: the engine reaches at least 0.85x the model-alone clips/s at the same batch size.
2. Long video: a 1-hour clip (the 10 s clip's packets remuxed 360 times: a real H.264 stream, keyframes every 250
   frames and at each 10 s boundary) cut into windows of S = 10 s: seconds per window to decode + preprocess (what a
   decoding worker does) vs the same number of 10 s clips. Target: at most 1.5x.

    python benchmarks/bench_corpus.py [--quick] [--clips N] [--batch-size B]
    python benchmarks/bench_corpus.py --device cuda --dtype auto     # the GPU table (bf16 autocast where supported)

All three variants run on `--device` with the same autocast (`--dtype`, as `vidgpt2 caption --dtype`: auto is bf16
or fp16 on a GPU and fp32 on the CPU); decoding stays on the CPU, in worker processes for the engine.

Prints markdown tables; writes benchmarks/results/bench_corpus.json (bench_corpus_quick.json with --quick).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CACHE_DIR,
    load_average,
    machine_info,
    markdown_table,
    parse_args,
    per_round_ratios,
    print_machine,
    setup_torch,
    timed,
    write_results,
)

CORPUS_TARGET = 0.85  # engine clips/s / model-alone clips/s
LONG_TARGET = 1.5  # seconds per window of the 1-hour clip / seconds per 10 s clip
NEW_TOKENS = 20
SEGMENT_SECONDS = 10.0


def _extra(parser) -> None:
    parser.add_argument("--clips", type=int, default=None, help="Corpus size (default 64; 8 with --quick).")
    parser.add_argument("--batch-size", type=int, default=8, help="Clips per generate (default 8).")
    parser.add_argument("--rounds", type=int, default=None, help="Interleaved rounds over the corpus (default 2; 1 quick).")
    parser.add_argument("--windows", type=int, default=None, help="Windows timed in part 2 (default all 360; 48 quick).")
    parser.add_argument("--device", default="cpu", help="Where the model runs: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="Autocast for every variant (default auto: bf16/fp16 on a GPU, fp32 on the CPU).")


# --- data ---------------------------------------------------------------------------------------------------------------
def ten_second_clip() -> Path:
    """The 10 s 640x360 30 fps H.264 clip of bench_core (textured, moving; keyframe every 250 frames), cached."""
    from bench_core import write_test_clip

    path = CACHE_DIR / "videos" / "clip_10s_360p_30fps_gop250.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"  encoding {path.name} (once; cached) ...", file=sys.stderr, flush=True)
        write_test_clip(path, 10, 640, 360)
    return path


def remux_repeated(source: Path, target: Path, repeats: int) -> Path:
    """`repeats` copies of `source`'s video packets one after the other, timestamps shifted: a long H.264 stream
    written in seconds (no re-encoding)."""
    import av

    if target.exists():
        return target
    tmp = target.with_suffix(".tmp.mp4")
    with av.open(str(source)) as src, av.open(str(tmp), "w", format="mp4") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        packets = [(bytes(p), p.pts, p.dts, p.duration, p.is_keyframe) for p in src.demux(in_stream) if p.size]
        span = max(pts + (duration or 0) for _, pts, _, duration, _ in packets) - min(pts for _, pts, *_ in packets)
        for k in range(repeats):
            for data, pts, dts, duration, keyframe in packets:
                packet = av.Packet(data)
                packet.pts, packet.dts = pts + k * span, dts + k * span
                packet.duration, packet.is_keyframe = duration, keyframe
                packet.time_base, packet.stream = in_stream.time_base, out_stream
                dst.mux(packet)
    tmp.rename(target)
    return target


def full_size_model_and_processor():
    """ResNet-50 + GPT-2 small (default VidGPT2Config), random init; a word-level tokenizer (no GPT-2 download)."""
    from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration, VidGPT2Processor, VidGPT2VideoProcessor
    from vidgpt2.tokenization import build_word_level_tokenizer

    tokenizer = build_word_level_tokenizer(["a car drives down the road", "a man walks"])
    eos = tokenizer.eos_token_id
    config = VidGPT2Config(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, decoder_start_token_id=eos)
    model = VidGPT2ForConditionalGeneration(config).eval()
    processor = VidGPT2Processor(video_processor=VidGPT2VideoProcessor(num_frames=config.num_frames), tokenizer=tokenizer)
    return model, processor


# --- 1. corpus ----------------------------------------------------------------------------------------------------------
def bench_corpus(
    clips: list[str], batch_size: int, per_round: int, device: str = "cpu", dtype: str = "auto"
) -> tuple[list[list[Any]], dict[str, Any]]:
    import torch

    from vidgpt2 import caption_videos
    from vidgpt2.captioning import autocast_dtype, default_num_workers

    model, processor = full_size_model_and_processor()
    target = torch.device(device)
    amp = autocast_dtype(target, dtype)  # None: fp32
    model = model.to(target)

    def run_generate(pixels: torch.Tensor) -> None:  # the model part of the one-by-one and model-alone variants
        with torch.inference_mode(), torch.autocast(target.type, dtype=amp, enabled=amp is not None):
            sequences = model.generate(pixel_values_videos=pixels.to(target), **generate_kwargs)
        processor.batch_decode(sequences)

    generate_kwargs = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "num_beams": 1, "do_sample": False}
    workers = default_num_workers()

    def one_by_one(part: list[int]) -> None:  # the loop `vidgpt2 caption` ran before
        for i in part:
            run_generate(processor(videos=[clips[i]])["pixel_values_videos"])

    fills: list[float] = []  # per engine call: seconds from the call to its first generate (worker start-up +
    # decoding the first batch, with the model idle); reported, not subtracted

    def engine(part: list[int]) -> None:
        started, first = time.perf_counter(), []

        def noting_generate(*args, **kwargs):
            if not first:
                first.append(time.perf_counter())
            return generate(*args, **kwargs)

        generate, model.generate = model.generate, noting_generate  # an instance attribute for this call only
        try:
            with tempfile.TemporaryDirectory() as folder:
                rows = caption_videos(
                    [clips[i] for i in part], model, processor, output=Path(folder) / "out.jsonl",
                    batch_size=batch_size, num_workers=workers, device=device, dtype=dtype, show_progress=False,
                    **generate_kwargs,
                )
        finally:
            del model.generate
        fills.append(first[0] - started)
        if len(rows) != len(part) or any("error" in r for r in rows):
            raise RuntimeError(f"the engine failed on some clips: {[r for r in rows if 'error' in r][:2]}")

    print("  decoding the batches for the model-alone run (untimed) ...", file=sys.stderr, flush=True)
    decoded = {
        i: processor(videos=clips[i : i + batch_size])["pixel_values_videos"] for i in range(0, len(clips), batch_size)
    }  # batch start -> (B, 8, 3, 224, 224); rounds hold whole batches

    def model_alone(part: list[int]) -> None:
        for pixels in (decoded[i] for i in part if i in decoded):
            run_generate(pixels)

    # warm-up (first generate, first worker start) on one batch, untimed
    caption_videos(clips[:batch_size], model, processor, batch_size=batch_size, num_workers=workers, device=device,
                   dtype=dtype, show_progress=False, **generate_kwargs)
    variants = {
        "model alone, pre-decoded batches": model_alone,
        "caption_videos (engine)": engine,
        "one by one (before)": one_by_one,
    }
    # rounds over disjoint parts of the corpus, the variants interleaved in each, in reverse order every other round
    # (A B C, C B A, ...): load that drifts during a round hits no variant always first or always last
    parts = [list(range(i, min(i + per_round, len(clips)))) for i in range(0, len(clips), per_round)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for number, part in enumerate(parts, start=1):
        order = list(variants.items()) if number % 2 else list(variants.items())[::-1]
        for name, fn in order:
            print(f"  round {number}/{len(parts)}: {name} on {len(part)} clips ...", file=sys.stderr, flush=True)
            seconds, _ = timed(lambda fn=fn, part=part: fn(part))
            times[name].append(seconds)
            print(f"  ... {seconds:.0f} s", file=sys.stderr, flush=True)
    alone = times["model alone, pre-decoded batches"]
    ratios = {name: per_round_ratios(alone, t) for name, t in times.items()}  # clips/s relative to model alone
    rows = [
        [name, f"{sum(t):.0f}", f"{len(clips) / sum(t):.3f}", f"{statistics.median(ratios[name]):.2f}",
         ", ".join(f"{r:.2f}" for r in ratios[name])]
        for name, t in times.items()
    ]
    ratio = statistics.median(ratios["caption_videos (engine)"])
    results = {
        "clips": len(clips), "rounds": len(parts), "batch_size": batch_size, "num_workers": workers,
        "device": str(target), "autocast": str(amp).replace("torch.", "") if amp is not None else "fp32",
        "new_tokens": NEW_TOKENS, "seconds_per_round": times,
        "clips_per_s": {k: len(clips) / sum(v) for k, v in times.items()},
        "ratios_vs_model_alone_per_round": ratios,
        "engine_vs_model_alone": ratio,
        "engine_seconds_to_first_generate_per_round": fills,
        "engine_vs_one_by_one": statistics.median(per_round_ratios(times["one by one (before)"], times["caption_videos (engine)"])),
        "target_met": ratio >= CORPUS_TARGET,
    }
    return rows, results


# --- 2. long video ------------------------------------------------------------------------------------------------------
def bench_long(short: Path, long: Path, windows: int, chunk: int = 12) -> tuple[list[list[Any]], dict[str, Any]]:
    from vidgpt2 import VidGPT2VideoProcessor
    from vidgpt2.captioning import Clip, ClipDataset, expand_segments
    from vidgpt2.video_io import video_duration

    processor = VidGPT2VideoProcessor(num_frames=8)
    probe_s, (all_windows, failed) = timed(lambda: expand_segments([Clip(str(long))], SEGMENT_SECONDS))
    if failed:
        raise RuntimeError(f"probing the long clip failed: {failed}")
    step = max(1, len(all_windows) // windows)
    chosen = all_windows[::step][:windows]  # spread over the whole hour
    long_set = ClipDataset(chosen, processor)
    short_set = ClipDataset([Clip(str(short))] * len(chosen), processor)
    for dataset in (long_set, short_set):  # warm-up
        dataset[0]
    long_times, short_times = [], []
    for begin in range(0, len(chosen), chunk):  # interleaved chunks: load drifts hit both alike
        indices = range(begin, min(begin + chunk, len(chosen)))
        for dataset, store in ((long_set, long_times), (short_set, short_times)):
            seconds, items = timed(lambda dataset=dataset, indices=indices: [dataset[i] for i in indices])
            if any("error" in item for item in items):
                raise RuntimeError(f"decoding failed: {[i['error'] for i in items if 'error' in i][:2]}")
            store.append(seconds / len(indices))
    ratios = per_round_ratios(long_times, short_times)
    ratio = statistics.median(ratios)
    long_ms, short_ms = statistics.median(long_times) * 1000, statistics.median(short_times) * 1000
    rows = [
        [f"window of the {video_duration(long) / 3600:.2f} h clip", len(chosen), f"{long_ms:.0f}", f"{ratio:.2f}"],
        ["10 s clip", len(chosen), f"{short_ms:.0f}", "1.00"],
    ]
    results = {
        "long_seconds": video_duration(long), "windows_in_long": len(all_windows), "windows_timed": len(chosen),
        "probe_and_cut_s": probe_s, "ms_per_window_long": long_ms, "ms_per_clip_short": short_ms,
        "per_chunk_ratios": ratios, "ratio": ratio, "target_met": ratio <= LONG_TARGET,
    }
    return rows, results


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], _extra)
    setup_torch(args.threads, args.seed)
    info = machine_info(args.threads)
    mode = "quick" if args.quick else "full"
    print(f"# bench_corpus ({mode} mode)\n")
    print_machine(info)
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "machine": info}

    short = ten_second_clip()
    n = args.clips or (8 if args.quick else 64)
    corpus_dir = CACHE_DIR / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):  # copies of one clip: the same decoding work per clip, distinct files
        path = corpus_dir / f"clip_{i:03d}.mp4"
        if not path.exists():
            shutil.copyfile(short, path)
        clips.append(str(path))
    batch = min(args.batch_size, n)

    print(f"\n## Corpus: {n} clips of 10 s 640x360 H.264, full-size model, batch {batch}, {NEW_TOKENS} new tokens, "
          f"{args.device} (--dtype {args.dtype})\n")
    rounds = args.rounds or (1 if args.quick else 2)
    per_round = -(-n // rounds // batch) * batch  # whole batches per round
    rows, results["corpus"] = bench_corpus(clips, batch, per_round, args.device, args.dtype)
    print(markdown_table(["variant", "seconds", "clips/s", "clips/s vs model alone (median of rounds)", "per round"], rows))
    r = results["corpus"]
    print(
        f"\nEngine / model alone = {r['engine_vs_model_alone']:.2f} (target >= {CORPUS_TARGET}: "
        f"{'met' if r['target_met'] else 'MISSED'}); engine / one by one = {r['engine_vs_one_by_one']:.2f}x; "
        f"{r['num_workers']} decoding worker(s)."
    )

    long = remux_repeated(short, CACHE_DIR / "videos" / "clip_1h_360p_30fps_remuxed.mp4", 360)
    windows = args.windows or (48 if args.quick else 360)
    print(f"\n## Long video: {SEGMENT_SECONDS:g} s windows of a 1-hour clip vs 10 s clips (decode + preprocess)\n")
    rows, results["long"] = bench_long(short, long, windows)
    print(markdown_table(["input", "count", "ms each (median of chunks)", "ratio"], rows))
    r = results["long"]
    print(
        f"\n{r['windows_in_long']} windows; probing + cutting took {r['probe_and_cut_s'] * 1000:.0f} ms. "
        f"Window / clip = {r['ratio']:.2f} (target <= {LONG_TARGET}: {'met' if r['target_met'] else 'MISSED'})."
    )

    results["runtime_s"] = time.perf_counter() - started
    results["load_average_at_end"] = load_average()
    name = "bench_corpus_quick" if args.quick else "bench_corpus"
    path = write_results(name if args.device == "cpu" else f"{name}_{args.device.split(':')[0]}", results)
    print(f"\nLoad average at end: {results['load_average_at_end']}. Runtime {results['runtime_s']:.0f} s. Results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
