"""``nni-biglittle``: the command line of nni_bigLittle.

Subcommands so far: ``space show`` / ``space sample`` (inspect the search space), ``data info``
(check a dataset and its splits), ``predictor list|show|rebuild|predict|build-local`` (hardware
cost predictors), ``cotrain`` / ``search`` / ``evaluate`` / ``ablation`` (the stages of a co-training
run, each resumable), ``run`` (the whole pipeline from one YAML). Later subcommands (bench, report)
plug in here.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

__all__ = ['main', 'build_parser']


def _space_from_args(args):
    from nni_bigLittle.search_spaces.presets import get_preset
    return get_preset(args.preset, num_classes=args.num_classes, resolution=args.resolution)


def cmd_space_show(args) -> int:
    from nni_bigLittle.nn.costs import arch_costs
    spec = _space_from_args(args)
    choices = spec.choices()
    print(f'BigLittleSpace preset={spec.name!r} resolution={spec.resolution} classes={spec.num_classes}')
    print(f'{len(choices)} labelled choices, {math.prod(len(v) for v in choices.values()):.3e} raw combinations')
    width = max(len(label) for label in choices)
    for label, values in choices.items():
        print(f'  {label:<{width}}  {list(values)}')
    for name, sample in (('largest', spec.largest()), ('smallest', spec.smallest())):
        costs = arch_costs(spec.decode(sample))
        print(f'{name:>8}: big {costs.big.macs / 1e6:.2f} MMACs / {costs.big.params / 1e6:.2f} M params, '
              f'little {costs.little.macs / 1e6:.2f} MMACs')
    return 0


def cmd_space_sample(args) -> int:
    import random
    from nni_bigLittle.nn.costs import arch_costs
    spec = _space_from_args(args)
    sample = spec.random_sample(random.Random(args.seed))
    costs = arch_costs(spec.decode(sample))
    record = {
        'sample': sample,
        'little_macs': costs.little.macs, 'big_tail_macs': costs.big_tail.macs, 'big_macs': costs.big.macs,
        'router_macs': costs.router.macs, 'little_params': costs.little.params,
        'big_tail_params': costs.big_tail.params, 'router_params': costs.router.params,
        f'expected_macs@{args.escalation}': costs.expected_macs(args.escalation),
    }
    print(json.dumps(record, indent=2))
    return 0


def cmd_space_export(args) -> int:
    from nni_bigLittle.search_spaces.hpo import (
        dumps_search_space, nni_search_space, parse_space_options, read_search_space)
    from nni_bigLittle.search_spaces.presets import get_preset
    spec = get_preset(args.preset, num_classes=args.num_classes, resolution=args.resolution,
                      **parse_space_options(args.option))
    extra = read_search_space(args.extra) if args.extra else None
    space = nni_search_space(spec, extra)
    text = dumps_search_space(space)
    if args.output in (None, '-'):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f'{len(space)} parameters ({len(space) - len(extra or {})} labels of the {spec.name!r} space) '
              f'written to {args.output}')
    return 0


def cmd_data_info(args) -> int:
    import numpy as np
    from nni_bigLittle.data import load_dataset
    splits = load_dataset(args.name, args.root, resolution=args.resolution, val_size=args.val_size, seed=args.seed)
    print(f'{splits.name}: {splits.num_classes} classes at {splits.resolution}x{splits.resolution} '
          f'(source: {splits.source})')
    for part in ('train', 'val', 'test'):
        labels = getattr(splits, part).labels.numpy()
        counts = np.bincount(labels, minlength=splits.num_classes)
        print(f'  {part:<5} {len(labels):>6} images, per class min {counts.min()} / max {counts.max()}')
    return 0


def cmd_predictor_list(args) -> int:
    from nni_bigLittle.hw_predictors.devices import list_bundled
    rows = list_bundled()
    print(f'{"name":<26} {"metric":<8} {"unit":<5} {"n":>7} {"held-out ±10%":>14}  data source')
    for r in rows:
        within = r.get('heldout_within_10')
        within = f'{100 * within:.1f} %' if within is not None else 'n/a'
        print(f'{r["name"]:<26} {r["metric"]:<8} {r["unit"]:<5} {r["n_measurements"]:>7} {within:>14}  '
              f'{r["data_source"]}')
    return 0


def cmd_predictor_show(args) -> int:
    from nni_bigLittle.hw_predictors.devices import load_predictor
    predictor = load_predictor(args.name, metric=args.metric)
    print(predictor.describe())
    print(json.dumps(predictor.metadata.get('fit_metrics', {}), indent=2))
    return 0


def cmd_predictor_rebuild(args) -> int:
    from nni_bigLittle.hw_predictors.devices import BUNDLED_DIR, format_fit_report, rebuild_bundled
    out = args.out or BUNDLED_DIR
    reports = rebuild_bundled(args.data, out_dir=out, names=args.only or None, progress=not args.quiet)
    print(format_fit_report(reports))
    return 0


def cmd_predictor_predict(args) -> int:
    from nni_bigLittle.hw_predictors.devices import list_bundled, load_predictor
    from nni_bigLittle.hw_predictors.kernels import detect_kernels, torch_to_onnx
    from nni_bigLittle.hw_predictors.model_refs import resolve_model
    from nni_bigLittle.hw_predictors.predictor import PredictorError

    ref = resolve_model(args.model, args.input, preset=args.preset, num_classes=args.num_classes)
    devices = [r['name'] for r in list_bundled() if r['metric'] == 'latency'] if args.device == 'all' \
        else [d.strip() for d in args.device.split(',')]
    sources = ('torch', 'onnx') if args.source == 'both' else (args.source,)
    # kernels once per part and source; predictions per device
    kernels = {}
    for part, (module, onnx_model, shape) in ref.parts.items():
        if module is not None and 'torch' in sources:
            kernels[(part, 'torch')] = detect_kernels(module, 'torch', shape)
        if 'onnx' in sources:
            graph = onnx_model if onnx_model is not None else torch_to_onnx(module, shape)
            kernels[(part, 'onnx')] = detect_kernels(graph, 'onnx', shape if onnx_model is None else None)
    first = next(iter(kernels.values()))
    print(f'{ref.name}: {len(ref.parts)} part(s); {len(first)} kernels, {sum(k.flops for k in first) / 1e6:.2f} MMACs '
          f'in {next(iter(ref.parts))!r}')
    records = []
    for device in devices:
        predictors = {'latency': load_predictor(device, metric='latency')}
        try:
            predictors['energy'] = load_predictor(device, metric='energy')
        except PredictorError:
            pass
        for metric, predictor in predictors.items():
            for part in ref.parts:
                row = {'device': device, 'metric': metric, 'unit': predictor.unit, 'part': part}
                for source in sources:
                    if (part, source) not in kernels:
                        continue
                    pred = predictor.predict_kernels(kernels[(part, source)])
                    row[source] = pred.total
                    row['uncovered'] = len(pred.uncovered)
                    row['extrapolated'] = len(pred.extrapolated)
                if 'torch' in row and 'onnx' in row:
                    row['diff_pct'] = 100 * abs(row['torch'] - row['onnx']) / max(abs(row['torch']), 1e-12)
                records.append(row)
            if ref.arch is not None:
                p = args.escalation
                source = sources[0]
                little, tail = (next(r[source] for r in records if r['device'] == device and r['metric'] == metric
                                     and r['part'] == part) for part in ('little', 'big_tail'))
                records.append({'device': device, 'metric': metric, 'unit': predictor.unit,
                                'part': f'expected@{p:g}', source: little + p * tail})
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f'{"device":<24} {"metric":<7} {"part":<14} ' + ' '.join(f'{s:>12}' for s in sources)
          + f' {"diff":>7} {"unit":<5} {"uncov.":>6} {"extrap.":>7}  (predicted)')
    for r in records:
        values = ' '.join(f'{r[s]:>12.4f}' if s in r else f'{"":>12}' for s in sources)
        diff = f'{r["diff_pct"]:>6.2f}%' if 'diff_pct' in r else f'{"":>7}'
        print(f'{r["device"]:<24} {r["metric"]:<7} {r["part"]:<14} {values} {diff} {r["unit"]:<5} '
              f'{r.get("uncovered", ""):>6} {r.get("extrapolated", ""):>7}')
    return 0


def cmd_predictor_build_local(args) -> int:
    from nni_bigLittle.hw_predictors.builder import BuildConfig, build_local_predictor
    config = BuildConfig(threads=args.threads, seed=args.seed, budget_minutes=args.budget_minutes, out=args.out,
                         work_dir=args.work_dir, report_dir=args.report_dir, validate=args.validate,
                         calibrate=args.calibrate, rounds=args.rounds, network_passes=args.passes,
                         regressor=args.regressor, imagenet_archs=0 if args.no_imagenet else 3,
                         timm_models=tuple(args.timm or ()), progress=not args.quiet)
    result = build_local_predictor(config)
    summary = result.summary
    if args.json:
        print(json.dumps({'path': str(result.path), 'summary': summary, 'rounds': result.rounds,
                          'elapsed_s': result.elapsed_s, 'new_measurements': result.n_new_measurements}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nni_bigLittle import __version__
    parser = argparse.ArgumentParser(prog='nni-biglittle', description=__doc__.splitlines()[0])
    parser.add_argument('--version', action='version', version=f'nni_bigLittle {__version__}')
    sub = parser.add_subparsers(dest='command', required=True)

    space = sub.add_parser('space', help='inspect the big/little search space')
    space_sub = space.add_subparsers(dest='space_command', required=True)
    for name, fn, help_text in (('show', cmd_space_show, 'list the labelled choices and the extreme networks'),
                                ('sample', cmd_space_sample, 'draw a valid random sample and print its costs')):
        p = space_sub.add_parser(name, help=help_text)
        p.add_argument('--preset', default='cifar', help='cifar or imagenet (default: cifar)')
        p.add_argument('--num-classes', type=int, default=None)
        p.add_argument('--resolution', type=int, default=None)
        p.set_defaults(func=fn)
        if name == 'sample':
            p.add_argument('--seed', type=int, default=0)
            p.add_argument('--escalation', type=float, default=0.3,
                           help='escalation rate for the expected MACs (default 0.3)')

    p = space_sub.add_parser('export', help='the space as an NNI search-space JSON (nnictl searchSpaceFile)')
    p.add_argument('--preset', default='cifar', help='cifar or imagenet (default: cifar)')
    p.add_argument('--num-classes', type=int, default=None)
    p.add_argument('--resolution', type=int, default=None)
    p.add_argument('--option', action='append', metavar='KEY=VALUE',
                   help='SpaceSpec override (YAML value), e.g. width_choices=[0.5,1.0]; repeatable')
    p.add_argument('--extra', default=None, help='JSON file of extra NNI hyper-parameters to append '
                                                 '(e.g. learning_rate for the train trial)')
    p.add_argument('-o', '--output', default=None, help='output file (default: stdout)')
    p.set_defaults(func=cmd_space_export)

    data = sub.add_parser('data', help='datasets')
    data_sub = data.add_subparsers(dest='data_command', required=True)
    info = data_sub.add_parser('info', help='load a dataset and print its splits')
    info.add_argument('name', help='digits, cifar10, cifar100, fashion_mnist or imagefolder')
    info.add_argument('--root', default=None, help='data folder or file (default: $NNI_BIGLITTLE_DATA, ~/.cache)')
    info.add_argument('--resolution', type=int, default=None)
    info.add_argument('--val-size', type=float, default=None, help='validation size: count or fraction')
    info.add_argument('--seed', type=int, default=0)
    info.set_defaults(func=cmd_data_info)

    pred = sub.add_parser('predictor', help='hardware latency / energy predictors')
    pred_sub = pred.add_subparsers(dest='predictor_command', required=True)
    p = pred_sub.add_parser('list', help='bundled predictors with data source and held-out accuracy')
    p.set_defaults(func=cmd_predictor_list)
    p = pred_sub.add_parser('show', help='describe one predictor (routes, metadata, fit metrics)')
    p.add_argument('name')
    p.add_argument('--metric', default='latency', choices=('latency', 'energy'))
    p.set_defaults(func=cmd_predictor_show)
    p = pred_sub.add_parser('rebuild', help='refit the bundled predictors from the measurement data')
    p.add_argument('--data', required=True, help='the latency data folder (e.g. ../shared/data/latency)')
    p.add_argument('--out', default=None, help='write here instead of the package\'s bundled folder')
    p.add_argument('--only', action='append', help='rebuild only this predictor (repeatable)')
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_predictor_rebuild)
    p = pred_sub.add_parser('predict', help='predict the latency (and energy) of a model on devices')
    p.add_argument('--device', default='all', help='predictor name(s), comma separated, or "all" (default)')
    p.add_argument('--model', required=True,
                   help='timm:<name>, torchvision:<name>, biglittle:<preset>[:seed=<n>], sample .json or .onnx')
    p.add_argument('--input', default=None, help='input shape NxCxHxW (default 1x3x224x224, or the space\'s)')
    p.add_argument('--source', default='both', choices=('torch', 'onnx', 'both'),
                   help='detect kernels from the PyTorch module, its ONNX export, or both (default)')
    p.add_argument('--preset', default='cifar', help='space of a sample .json (default cifar)')
    p.add_argument('--num-classes', type=int, default=None)
    p.add_argument('--escalation', type=float, default=0.3, help='escalation rate for big/little models')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_predictor_predict)
    p = pred_sub.add_parser('build-local', help="profile this machine (ONNX Runtime, CPU) and build its predictor "
                                                "with nn-Meter's method (prior, refinement, validation)")
    p.add_argument('--threads', type=int, default=1, help='ONNX Runtime intra-op threads (default 1)')
    p.add_argument('--out', default=None,
                   help='predictor file (default: $NNI_BIGLITTLE_PREDICTORS or ~/.cache/nni_bigLittle/predictors, '
                        'local_cpu_ort.npz)')
    p.add_argument('--work-dir', default=None, help='measurement cache; a killed build resumes from it '
                                                    '(default: beside the predictor, local_cpu_ort.work)')
    p.add_argument('--budget-minutes', type=float, default=20.0, help='time cap of the whole build (default 20)')
    p.add_argument('--validate', type=int, default=20,
                   help='validation seeds, each a little path and a big network of the cifar preset (default 20)')
    p.add_argument('--calibrate', type=int, default=30, help='calibration seeds, disjoint from validation (default 30)')
    p.add_argument('--rounds', type=int, default=5, help='adaptive refinement rounds (default 5)')
    p.add_argument('--passes', type=int, default=5,
                   help='end-to-end passes over the networks, spread over the build (default 5)')
    p.add_argument('--regressor', default='random-forest',
                   choices=('random-forest', 'extra-trees', 'gradient-boosting'),
                   help='kernel regressor (default random-forest)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-imagenet', action='store_true', help='leave imagenet-preset kernels out of the prior')
    p.add_argument('--timm', action='append', metavar='MODEL',
                   help='add the kernels of a timm model at 224x224 to the prior (repeatable), '
                        'e.g. mobilenetv3_large_100')
    p.add_argument('--report-dir', default=None,
                   help='write the validation report (README.md, validation.csv) here, e.g. '
                        'benchmarks/results/local_cpu_ort')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.add_argument('--json', action='store_true', help='also print the summary as JSON')
    p.set_defaults(func=cmd_predictor_build_local)
    _add_training_commands(sub)
    _add_deployment_commands(sub)
    return parser


def cmd_cotrain(args) -> int:
    from nni_bigLittle.app.config import load_config, set_dotted
    from nni_bigLittle.app.stages.train import train_supernet
    config = load_config(args.config)
    if args.threads is not None:
        config['threads'] = args.threads
    for item in args.set or []:
        key, _, value = item.partition('=')
        if not _:
            raise ValueError(f'--set needs KEY=VALUE, got {item!r}.')
        import yaml
        set_dotted(config, key, yaml.safe_load(value))
    train_supernet(config, args.run_dir, progress=not args.quiet, trace_steps=args.trace_steps)
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch
        torch.set_num_threads(threads)


def cmd_search(args) -> int:
    _set_threads(args.threads)
    from nni_bigLittle.app.stages.search import search_stage
    search_stage(args.run_dir, progress=not args.quiet, devices=args.device, metric=args.metric,
                 population=args.population, generations=args.generations, budget=args.budget, seed=args.seed)
    return 0


def cmd_evaluate(args) -> int:
    _set_threads(args.threads)
    from nni_bigLittle.app.stages.evaluate import evaluate_stage
    rows = evaluate_stage(args.run_dir, count=args.count)['rows']
    from nni_bigLittle.app.runs import RunFolder
    print((RunFolder(args.run_dir).results_dir / 'front_models.md').read_text())
    return 0 if rows else 1


def cmd_ablation(args) -> int:
    _set_threads(args.threads)
    from nni_bigLittle.app.ablations import (ablation_stage, dimension_ablation_stage, routing_ablation_stage,
                                         strategy_ablation_stage)
    if args.kind == 'routing':
        routing_ablation_stage(args.run_dir, device=args.device)
    elif args.kind == 'dimensions':
        dimension_ablation_stage(args.run_dir, device=args.device, population=args.population or 12,
                                 generations=args.generations or 2, progress=not args.quiet)
    elif args.kind == 'strategy':
        strategy_ablation_stage(args.run_dir, device=args.device, train_subset=args.train_subset,
                                epochs=args.epochs, population=args.population or 8,
                                generations=args.generations or 2, progress=not args.quiet)
    else:
        ablation_stage(args.run_dir, device=args.device, progress=not args.quiet, pick=args.pick)
    suffix = '_accurate' if args.kind == 'cotraining' and args.pick == 'accurate' else ''
    from nni_bigLittle.app.runs import RunFolder
    print((RunFolder(args.run_dir).results_dir / f'ablation_{args.kind}{suffix}.md').read_text())
    return 0


def cmd_run(args) -> int:
    _set_threads(args.threads)
    from nni_bigLittle.app.config import load_config
    from nni_bigLittle.app.pipeline import run_pipeline
    config = load_config(args.config)
    if args.threads is not None:
        config.setdefault('train', {})['threads'] = args.threads
    run_pipeline(config, run_dir=args.run_dir, progress=not args.quiet, base=Path(args.config).parent)
    return 0


def cmd_experiment(args) -> int:
    from nni_bigLittle.app.experiment import check_experiment, launch_experiment
    if args.experiment_command == 'check':
        summary = check_experiment(args.config, args.port)
        print(f'{args.config}: OK (tuner {summary["tuner"]}, {summary["parameters"]} parameters, trial '
              f'{summary["trial"] or "(not ours, unchecked)"})')
    else:
        launch_experiment(args.config, args.port, settle_s=args.settle)
    return 0


def cmd_records(args) -> int:
    from nni_bigLittle.app.runs import copy_records
    copied = copy_records(args.run_dir, args.out)
    print(f'{len(copied)} record files of {args.run_dir} copied to {args.out}:')
    for path in copied:
        print(f'  {path}')
    return 0


def cmd_export(args) -> int:
    _set_threads(args.threads)
    from nni_bigLittle.app.stages.export import export_bundle
    verify = None if args.verify == 'all' else int(args.verify)
    manifest = export_bundle(args.source, args.out, device=args.device, pick=args.pick, verify=verify,
                             sample_images=args.sample_images, progress=not args.quiet)
    out = Path(args.out)
    print(f'bundle written to {out}:')
    for path in sorted(out.iterdir()):
        print(f'  {path.name:16s} {path.stat().st_size / 1024:9.1f} KiB')
    check = manifest.get('verification')
    if check:
        print(f'verified against PyTorch on {int(check["inputs"])} test images: predictions agree '
              f'{check["prediction_agreement"]:.2%}, escalations {check["escalation_agreement"]:.2%}, dynamic.onnx '
              f'{check.get("dynamic_graph_prediction_agreement", float("nan")):.2%}; max |diff| little '
              f'{check["max_abs_diff_little_logits"]:.1e}, big {check["max_abs_diff_big_logits"]:.1e}, confidence '
              f'{check["max_abs_diff_confidence"]:.1e}')
    data = ' --data data.npz' if (out / 'data.npz').is_file() else ' --data <npz or image folder>'
    print(f'run it (numpy + onnxruntime only): cd {out} && python3 run_bundle.py{data} --bench')
    if args.tensorrt:
        return _export_tensorrt(out, [p.strip() for p in args.tensorrt.split(',') if p.strip()])
    return 0


def _export_tensorrt(out: Path, precisions: list[str]) -> int:
    """TensorRT engines next to the ONNX files, each checked against ONNX Runtime on the bundle's data."""
    from nni_bigLittle.deploy.run_bundle import load_data
    from nni_bigLittle.deploy.tensorrt import TensorRTUnavailable, build_tensorrt_engines, verify_tensorrt
    try:
        section = build_tensorrt_engines(out, precisions=precisions)
    except TensorRTUnavailable as err:
        print(f'error: no TensorRT engines (the ONNX bundle is complete): {err}', file=sys.stderr)
        return 2
    data = out / 'data.npz'
    for precision in section:
        line = f'TensorRT {precision}: {section[precision]["little"]}, {section[precision]["big_tail"]}'
        if data.is_file():
            x, _ = load_data(data, json.loads((out / 'manifest.json').read_text()))
            check = verify_tensorrt(out, precision, [x[i:i + 64] for i in range(0, len(x), 64)])
            line += (f'; against ONNX Runtime on {int(check["inputs"])} images: predictions agree '
                     f'{check["prediction_agreement"]:.2%}')
        print(line)
    return 0


def cmd_bench(args) -> int:
    from nni_bigLittle.deploy.bench import bench, format_bench, parse_baselines, write_bench
    result = bench(args.bundle, data=args.data, baselines=parse_baselines(args.baseline), threads=args.threads,
                   batch_size=args.batch_size, images=args.images, rounds=args.rounds, warmup=args.warmup,
                   predictor=None if args.predictor == 'none' else args.predictor, memory=not args.no_memory,
                   energy=not args.no_energy, progress=not args.quiet)
    print(format_bench(result))
    if args.out:
        for path in write_bench(result, args.out):
            print(f'wrote {path}')
    return 0


def cmd_baselines(args) -> int:
    _set_threads(args.threads)
    from nni_bigLittle.app.baselines import train_baselines
    from nni_bigLittle.app.config import load_config
    train_baselines(load_config(args.config), args.run_dir, models=args.model, progress=not args.quiet,
                    base=Path(args.config).parent)
    return 0


def cmd_report(args) -> int:
    from nni_bigLittle.app.report import collect_report, render_report
    if args.collect:
        _set_threads(args.threads)
        if len(args.runs) != 1:
            raise ValueError('--collect takes one co-training run folder (its weights are read); give the baselines '
                             'run with --baselines.')
        collect_report(args.runs[0], args.baselines, device=args.device, measure=not args.no_measure,
                       progress=not args.quiet)
    elif args.baselines:
        raise ValueError('--baselines goes with --collect; without it the report reads report.json records only.')
    for path in render_report(args.runs, args.out):
        print(f'wrote {path}')
    print((Path(args.out) / 'README.md').read_text())
    return 0


def _add_deployment_commands(sub) -> None:
    p = sub.add_parser('report', help='the results table, Pareto plots and headline from report.json records; '
                                      'with --collect, first measure every row of a run (needs its weights)')
    p.add_argument('runs', nargs='+', help='run folders or their committed records (each with results/report.json)')
    p.add_argument('--out', required=True, help='folder for table.csv, README.md (table + headline) and the PNGs')
    p.add_argument('--collect', action='store_true', help='evaluate and cost every row first (writes '
                                                          '<run>/results/report.json)')
    p.add_argument('--baselines', default=None, help='with --collect: the baselines run folder')
    p.add_argument('--device', default='raspberry_pi_4', help="with --collect: whose front supplies our pair")
    p.add_argument('--no-measure', action='store_true', help='with --collect: skip the ONNX Runtime timings')
    p.add_argument('--threads', type=int, help='torch threads')
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_report)

    p = sub.add_parser('baselines', help='train the baselines (timm MobileNetV3-S/L, EfficientNet-B0, BranchyNet '
                                         'exits) with a co-training recipe\'s data and budget; re-run to resume')
    baselines_sub = p.add_subparsers(dest='baselines_command', required=True)
    q = baselines_sub.add_parser('train', help='train (or resume) each model; stores validation and test logits')
    q.add_argument('config', help='baseline YAML (recipe, models, exit_stages, exit_weights), e.g. '
                                  'experiments/cifar10_baselines.yaml')
    q.add_argument('--run-dir', required=True)
    q.add_argument('--model', action='append', help='train only this one (repeatable); one process per core')
    q.add_argument('--threads', type=int, help='torch threads')
    q.add_argument('--quiet', action='store_true')
    q.set_defaults(func=cmd_baselines)

    p = sub.add_parser('export', help='a deployment bundle (little.onnx, big_tail.onnx, dynamic.onnx, big.onnx, '
                                      'manifest.json, run_bundle.py, data.npz) from a run or an exported checkpoint, '
                                      'verified against PyTorch')
    p.add_argument('source', help='a run folder (after its search stage) or a checkpoint <run>/export/<device>/'
                                  'front_<k>.pt')
    p.add_argument('--out', required=True, help='bundle folder')
    p.add_argument('--device', default=None, help="whose front (default: the run's first searched device)")
    p.add_argument('--pick', choices=('cheapest', 'middle', 'accurate'), default='accurate',
                   help='which of the frozen front models (default: the most accurate)')
    p.add_argument('--verify', default='1000', help="test images to check ONNX Runtime against PyTorch on "
                                                   "(default 1000; 'all'; 0 skips)")
    p.add_argument('--sample-images', type=int, default=256, help='raw test images written to data.npz (default 256)')
    p.add_argument('--tensorrt', default=None, metavar='fp32,fp16',
                   help='also build TensorRT engines of these precisions (needs tensorrt and an NVIDIA GPU: '
                        'pip install nni_bigLittle[tensorrt]); each is checked against ONNX Runtime on data.npz')
    p.add_argument('--threads', type=int, help='torch threads')
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('bench', help='latency (p50/p90/mean), throughput and peak memory of a bundle and baseline '
                                     'ONNX models, measured side by side in one run')
    p.add_argument('bundle', help='a bundle folder written by nni-biglittle export')
    p.add_argument('--data', default=None, help="an .npz or image folder (default: the bundle's data.npz)")
    p.add_argument('--baseline', action='append', metavar='NAME=PATH.onnx', help='a baseline ONNX model (repeatable)')
    p.add_argument('--threads', type=int, default=1, help='ONNX Runtime intra-op threads (default 1, as the '
                                                          'local_cpu_ort predictor was built)')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--images', type=int, default=500, help='images per round (default 500)')
    p.add_argument('--rounds', type=int, default=5, help='interleaved rounds (default 5)')
    p.add_argument('--warmup', type=int, default=20, help='untimed calls per row first (default 20)')
    p.add_argument('--predictor', default='local_cpu_ort', help="latency predictor to compare with ('none': skip)")
    p.add_argument('--no-memory', action='store_true', help='skip the per-row peak-memory processes')
    p.add_argument('--no-energy', action='store_true', help='do not meter energy (RAPL / tegrastats) even where '
                                                            'a meter exists')
    p.add_argument('--out', default=None, help='write bench.json and bench.md here')
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_bench)


def _add_training_commands(sub) -> None:
    p = sub.add_parser('records', help='copy the text records of a run folder (config, metrics, status, fronts, '
                                       'results; no weights) to commit them, e.g. under benchmarks/results/')
    p.add_argument('run_dir')
    p.add_argument('--out', required=True, help='destination folder')
    p.set_defaults(func=cmd_records)

    p = sub.add_parser('experiment', help='check an nnictl experiment YAML before anything starts, or check and '
                                          'launch it (nnictl create)')
    experiment_sub = p.add_subparsers(dest='experiment_command', required=True)
    for name, text in (('check', 'check the config, tuner, search space, trial command, data and port'),
                       ('create', 'check, then nnictl create; stops it again if the manager reports ERROR')):
        q = experiment_sub.add_parser(name, help=text)
        q.add_argument('config', help='experiment YAML, e.g. experiments/quickstart.yaml')
        q.add_argument('--port', type=int, default=None if name == 'check' else 8080,
                       help='web UI / manager port' + (' (default 8080)' if name == 'create' else ''))
        if name == 'create':
            q.add_argument('--settle', type=float, default=25.0, help='seconds to watch for an early ERROR')
        q.set_defaults(func=cmd_experiment)

    p = sub.add_parser('run', help='the whole pipeline from a YAML: co-train the supernet (NNI NasExperiment) -> '
                                   'Pareto search per device -> export front models -> test report; re-run to resume')
    p.add_argument('config', help='pipeline YAML (run_dir, train, search, export, report), e.g. '
                                  'experiments/quickstart_pipeline.yaml')
    p.add_argument('--run-dir', default=None, help='override run_dir of the config')
    p.add_argument('--threads', type=int, help='torch threads')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(func=cmd_run)

    p = sub.add_parser('cotrain', help='co-train a big/little supernet (sandwich or progressive shrinking); '
                                       're-run the same command to resume')
    p.add_argument('config', help='training config YAML (see nni_bigLittle.app.config)')
    p.add_argument('--run-dir', required=True, help='run folder (created, or resumed when it holds this config)')
    p.add_argument('--threads', type=int, help='torch threads (may differ between resumes)')
    p.add_argument('--set', action='append', metavar='KEY=VALUE', help='override a config key (YAML value; dotted for nested keys, e.g. '
                                                             'optimizer.learning_rate=0.05)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    p.add_argument('--trace-steps', action='store_true', help='log every step (batch, sampled pairs) to steps.csv')
    p.set_defaults(func=cmd_cotrain)

    p = sub.add_parser('search', help='multi-objective evolution (NSGA-II) on the trained supernet of a cotrain run; '
                                      'the Pareto front per device; re-run to resume')
    p.add_argument('run_dir', help='a finished cotrain run folder')
    p.add_argument('--device', action='append', help='predictor name (repeatable; default: raspberry_pi_4 and '
                                                     'jetson_nano_trt_fp32)')
    p.add_argument('--metric', choices=('latency', 'energy', 'macs'))
    p.add_argument('--population', type=int)
    p.add_argument('--generations', type=int)
    p.add_argument('--budget', type=float, help='single-budget mode: the most accurate pair within this cost')
    p.add_argument('--seed', type=int)
    p.add_argument('--quiet', action='store_true')
    p.add_argument('--threads', type=int, help='torch threads')
    p.set_defaults(func=cmd_search)

    p = sub.add_parser('evaluate', help='test-split numbers of models across each searched front, next to the '
                                        'largest and smallest static subnets')
    p.add_argument('run_dir')
    p.add_argument('--count', type=int, default=3, help='models per front (spread over the cost axis)')
    p.add_argument('--threads', type=int, help='torch threads')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('ablation', help='co-trained pair vs the same architectures trained independently and '
                                        'cascaded (same recipe and epochs); resumable')
    p.add_argument('run_dir')
    p.add_argument('--device', default='raspberry_pi_4', help='whose front supplies the pair')
    p.add_argument('--pick', choices=('middle', 'accurate'), default='middle',
                   help='cotraining: which front model (accurate: an escalating pair on CIFAR-10)')
    p.add_argument('--kind', choices=('cotraining', 'routing', 'dimensions', 'strategy'), default='cotraining',
                   help='cotraining: the pair trained independently and cascaded (the front\'s middle model); '
                        'routing: the four router policies at the same escalation rates (the most accurate model); '
                        'dimensions: the search with each dimension frozen in turn, against the full search; '
                        'strategy: sandwich vs progressive shrinking vs DARTS vs multi-trial evolution, each from '
                        'scratch on one reduced budget')
    p.add_argument('--population', type=int, help='dimensions / strategy: NSGA-II population (default 12 / 8)')
    p.add_argument('--generations', type=int, help='dimensions / strategy: generations (default 2)')
    p.add_argument('--train-subset', type=int, default=4000,
                   help='strategy: training images every strategy trains on (default 4000)')
    p.add_argument('--epochs', type=int, default=4, help='strategy: epochs over them (default 4)')
    p.add_argument('--quiet', action='store_true')
    p.add_argument('--threads', type=int, help='torch threads')
    p.set_defaults(func=cmd_ablation)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, 'val_size', None) is not None and args.val_size >= 1:
        args.val_size = int(args.val_size)
    from nni_bigLittle.data import DataError
    from nni_bigLittle.app.experiment import ExperimentCheckError
    from nni_bigLittle.deploy.run_bundle import BundleError
    from nni_bigLittle.app.runs import RunConfigMismatch
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError, RunConfigMismatch, BundleError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except RuntimeError as err:
        export = sys.modules.get('nni_bigLittle.deploy.export')  # imported only by the commands that export (torch)
        if export is not None and isinstance(err, export.ExportMismatch):
            print(f'error: the exported graphs disagree with PyTorch: {err}', file=sys.stderr)
            return 3
        raise


if __name__ == '__main__':
    sys.exit(main())
