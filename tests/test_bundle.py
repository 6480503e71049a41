"""Deployment bundles: `nni-biglittle export` from a real (small) run, `run_bundle.py` on .npz and image
folders, `nni-biglittle bench` side by side, and clear errors on bad input."""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

from nni_bigLittle.deploy import run_bundle
from nni_bigLittle.app.cli import main

from helpers import pipeline_config


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A digits run (train -> search -> export stage) and the bundle of its most accurate Pi 4 model."""
    folder = tmp_path_factory.mktemp('bundle')
    assert main(['run', pipeline_config(folder), '--quiet']) == 0
    bundle = folder / 'bundle'
    assert main(['export', str(folder / 'run'), '--out', str(bundle), '--device', 'raspberry_pi_4', '--verify', 'all',
                 '--sample-images', '64', '--quiet']) == 0
    return folder / 'run', bundle


def _test_split(run):
    import yaml
    from nni_bigLittle.app.stages.inputs import load_training_data
    cfg = yaml.safe_load((run / 'config.yaml').read_text())
    return load_training_data({**cfg, 'augment': 'none'})


def test_export_writes_a_bundle_verified_on_the_whole_test_split(exported, capsys):
    run, bundle = exported
    names = {p.name for p in bundle.iterdir()}
    assert names == {'little.onnx', 'big_tail.onnx', 'dynamic.onnx', 'big.onnx', 'manifest.json', 'run_bundle.py',
                     'data.npz'}
    manifest = json.loads((bundle / 'manifest.json').read_text())
    check = manifest['verification']
    assert check['inputs'] == len(_test_split(run).test) == 359  # all of digits' test split
    assert check['prediction_agreement'] == 1.0 and check['escalation_agreement'] == 1.0
    assert check['dynamic_graph_prediction_agreement'] == 1.0
    assert max(v for k, v in check.items() if k.startswith('max_abs_diff')) <= 1e-4
    assert manifest['source']['run'] == 'run' and manifest['source']['device'] == 'raspberry_pi_4'
    assert manifest['source']['checkpoint'] == 'export/raspberry_pi_4/front_2.pt'  # the most accurate of two
    assert manifest['preprocess']['mean'] == pytest.approx([0.19] * 3) and manifest['class_names'][9] == '9'
    assert str(run.parent) not in (bundle / 'manifest.json').read_text()  # no machine paths in a bundle
    assert (bundle / 'run_bundle.py').read_text() == open(run_bundle.__file__).read()


def test_the_bundle_runs_the_operating_point_the_front_lists(exported):
    """One currency: the manifest carries the searched front's operating point unchanged (the exact calibrated
    threshold, not a rounded copy), and the bundle escalates as many validation images as the front says."""
    from nni_bigLittle.app.runs import RunFolder
    from nni_bigLittle.nn.operating_point import OperatingPoint
    run, bundle = exported
    manifest = json.loads((bundle / 'manifest.json').read_text())
    source = manifest['source']['front_record']
    front = RunFolder(run).front('raspberry_pi_4')['front']
    entry = next(e for e in front if e['index'] == source['index'] and e['generation'] == source['generation'])
    assert manifest['operating_point'] == entry['operating_point']
    point = OperatingPoint.from_dict(manifest['operating_point'])
    assert point.router.threshold == entry['threshold'] == manifest['router']['threshold']
    assert point.router.calibrated_on == 'validation' and point.router.target_escalation == entry['target_escalation']
    assert manifest['sample'] == entry['sample'] == point.flat_sample
    val = torch.stack([x for x, _ in _test_split(run).val]).numpy()
    _, escalated = run_bundle.BigLittleRuntime(bundle, threads=1).predict(val)
    assert float(escalated.mean()) == pytest.approx(entry['escalation_rate'], abs=1e-12)


def test_run_bundle_preprocesses_as_training_and_agrees_with_pytorch(exported, tmp_path):
    from nni_bigLittle.app.stages.export import load_exported
    run, bundle = exported
    manifest = run_bundle.read_manifest(bundle)
    x, labels = run_bundle.load_data(bundle / 'data.npz', manifest)
    test = _test_split(run).test
    reference = torch.stack([test[i][0] for i in range(len(x))])
    assert np.abs(x - reference.numpy()).max() < 1e-5  # numpy preprocessing == the torchvision eval transform
    assert (labels == np.asarray([int(test[i][1]) for i in range(len(x))])).all()

    done = subprocess.run([sys.executable, str(bundle / 'run_bundle.py'), '--data', str(bundle / 'data.npz'),
                           '--bench', '--threads', '1', '--json', str(tmp_path / 'r.json'), '--predictions',
                           str(tmp_path / 'p.csv')], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for word in ('accuracy', 'escalation rate', 'p50', 'p90', 'p99', 'throughput', 'peak RSS', 'onnxruntime'):
        assert word in done.stdout
    result = json.loads((tmp_path / 'r.json').read_text())
    rows = np.loadtxt(tmp_path / 'p.csv', delimiter=',', skiprows=1, dtype=np.int64)
    model = load_exported(run / manifest['source']['checkpoint'])
    pred, escalated = model.infer(reference)
    assert (rows[:, 1] == pred.numpy()).all() and (rows[:, 2] == escalated.numpy()).all()
    assert result['accuracy'] == pytest.approx(float((pred.numpy() == labels).mean()))
    assert result['escalation_rate'] == pytest.approx(float(escalated.float().mean()))
    assert result['p50_ms'] <= result['p90_ms'] <= result['p99_ms'] and result['images'] == 64

    dynamic = run_bundle.BigLittleRuntime(bundle, threads=1).predict_dynamic(x)  # the If graph: same answers
    assert (dynamic[0] == pred.numpy()).all() and (dynamic[1] == escalated.numpy()).all()


def _png(pixels: np.ndarray, color: int, filters) -> bytes:
    """A PNG written with the given filter type per row (the decoder must undo all five)."""
    h, w = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    rows = pixels.reshape(h, w * channels).astype(np.int32)
    raw, previous = b'', np.zeros(w * channels, np.int32)
    for y in range(h):
        kind = filters[y % len(filters)]
        line = rows[y]
        left = np.concatenate([np.zeros(channels, np.int32), line[:-channels]])
        up_left = np.concatenate([np.zeros(channels, np.int32), previous[:-channels]])
        if kind == 4:
            p = left + previous - up_left
            pa, pb, pc = abs(p - left), abs(p - previous), abs(p - up_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, previous, up_left))
        else:
            predictor = [np.zeros_like(line), left, previous, (left + previous) // 2][kind]
        raw += bytes([kind]) + ((line - predictor) & 0xFF).astype(np.uint8).tobytes()
        previous = line

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, color, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_png_reader_undoes_every_filter_and_colour_type(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    for name, pixels, color, expected in (('rgb', rgb, 2, rgb), ('rgba', rgba, 6, rgba[..., :3]),
                                          ('grey', grey, 0, np.repeat(grey[..., None], 3, -1))):
        path = tmp_path / f'{name}.png'
        path.write_bytes(_png(pixels, color, filters=[0, 1, 2, 3, 4]))
        assert (run_bundle.read_png(path) == expected).all(), name
        assert (np.asarray(Image.open(path).convert('RGB')) == expected).all()  # the file itself is valid
    Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / 'pal.png')
    assert (run_bundle.read_png(tmp_path / 'pal.png') == np.asarray(Image.open(tmp_path / 'pal.png').convert('RGB'))).all()
    Image.fromarray(grey > 128).save(tmp_path / 'bits.png')  # 1-bit grey
    assert (run_bundle.read_png(tmp_path / 'bits.png') == np.repeat(np.where(grey > 128, 255, 0)[..., None], 3, -1)).all()
    (tmp_path / 'bad.png').write_bytes(b'not a png')
    with pytest.raises(run_bundle.BundleError, match='not a PNG'):
        run_bundle.read_png(tmp_path / 'bad.png')


def test_run_bundle_reads_an_image_folder_like_the_npz(exported, tmp_path, capsys):
    run, bundle = exported
    with np.load(bundle / 'data.npz') as data:
        images, labels = data['x_test'][:24], data['y_test'][:24]
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / 'images' / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:  # a binary PPM next to the PNGs
            (folder / f'{i:03d}.ppm').write_bytes(b'P6\n# digits\n32 32\n255\n' + image.tobytes())
        else:
            (folder / f'{i:03d}.png').write_bytes(_png(image, 2, filters=[i % 5]))
    manifest = run_bundle.read_manifest(bundle)
    x_folder, y_folder = run_bundle.load_data(tmp_path / 'images', manifest)
    x_npz, _ = run_bundle.load_data(bundle / 'data.npz', manifest, limit=24)
    order = np.argsort(labels, kind='stable')  # the folder is read class by class
    assert (y_folder == labels[order]).all() and np.abs(x_folder - x_npz[order]).max() == 0
    assert run_bundle.main(['--bundle', str(bundle), '--data', str(tmp_path / 'images')]) == 0
    assert '24 images: accuracy' in capsys.readouterr().out
    small = tmp_path / 'small'  # other sizes are resized to the model's input
    small.mkdir()
    (small / 'a.png').write_bytes(_png(images[0][::2, ::2].copy(), 2, filters=[0]))
    x_small, y_small = run_bundle.load_data(small, manifest)
    assert x_small.shape == (1, 3, 32, 32) and y_small is None


def test_run_bundle_says_what_is_wrong_with_its_input(exported, tmp_path, capsys):
    _, bundle = exported
    cases = {'missing.npz': 'no such file', 'keys.npz': 'none of the image arrays', 'empty': 'holds no images',
             'float.npz': 'ready model input'}
    np.savez(tmp_path / 'keys.npz', pictures=np.zeros((2, 32, 32, 3), np.uint8))
    np.savez(tmp_path / 'float.npz', x=np.zeros((2, 32, 32, 3), np.float32))
    (tmp_path / 'empty').mkdir()
    for name, message in cases.items():
        assert run_bundle.main(['--bundle', str(bundle), '--data', str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err
    assert run_bundle.main(['--bundle', str(tmp_path), '--data', str(bundle / 'data.npz')]) == 2
    assert 'no manifest.json' in capsys.readouterr().err
    assert run_bundle.main(['--bundle', str(bundle), '--data', str(bundle / 'data.npz'), '--graph', 'dynamic',
                            '--batch-size', '4', '--bench']) == 2
    assert 'batch 1' in capsys.readouterr().err


def test_bench_measures_the_bundle_and_baselines_side_by_side(exported, tmp_path, capsys):
    from nni_bigLittle.deploy.bench import bench, format_bench
    from nni_bigLittle.evaluation.pairs import _profiler
    from nni_bigLittle.search_spaces.spec import SpaceSpec
    _, bundle = exported
    result = bench(bundle, images=40, rounds=2, warmup=2, predictor='raspberry_pi_4',
                   baselines={'little again': bundle / 'little.onnx'}, progress=False)
    rows = {r['row']: r for r in result['rows']}
    assert list(rows) == ['dynamic', 'dynamic (If graph)', 'never escalate', 'little.onnx alone', 'big.onnx (static)',
                          'little again']
    assert rows['never escalate']['escalation_rate'] == 0.0
    assert rows['never escalate']['accuracy'] == rows['little.onnx alone']['accuracy'] == rows['little again']['accuracy']
    assert rows['dynamic']['accuracy'] == rows['dynamic (If graph)']['accuracy']
    assert all(r['calls'] == 80 and r['p50_ms'] <= r['p90_ms'] and r['throughput_per_s'] > 0 for r in rows.values())
    manifest = run_bundle.read_manifest(bundle)
    arch = SpaceSpec.from_dict(manifest['spec']).decode(manifest['sample'])
    expected = _profiler('raspberry_pi_4', 'latency').breakdown(arch, rows['dynamic']['escalation_rate'])['expected']
    assert rows['dynamic']['predicted_ms'] == pytest.approx(expected)
    checks = result['checks']
    assert checks['dispatch_overhead_calls'] == 80 and -0.9 < checks['dispatch_overhead'] < 10
    for r in rows.values():  # each row's memory from its own process
        assert 0 < r['model_rss_mb'] < r['peak_rss_mb'] < 2000
    if result['energy_meter'] is None:  # this VM has no RAPL counters: said, not invented
        assert 'RAPL' in result['energy_note'] and all('energy_mj' not in r for r in rows.values())
    else:
        assert all(r['energy_mj'] > 0 for r in rows.values())
    text = format_bench(result)
    assert 'Router and dispatch overhead' in text and 'ONNX Runtime' in text and '| big.onnx (static) |' in text

    out = tmp_path / 'bench'
    assert main(['bench', str(bundle), '--images', '16', '--rounds', '1', '--warmup', '1', '--no-memory',
                 '--predictor', 'none', '--quiet', '--out', str(out)]) == 0
    assert (out / 'bench.md').read_text().startswith('# Deployment benchmark')
    assert json.loads((out / 'bench.json').read_text())['rows'][0]['row'] == 'dynamic'
    capsys.readouterr()
    assert main(['bench', str(bundle), '--baseline', 'nameless.onnx', '--no-memory']) == 2
    assert 'NAME=PATH' in capsys.readouterr().err
    assert main(['bench', str(bundle), '--baseline', f'x={tmp_path / "none.onnx"}', '--no-memory']) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_export_refuses_what_it_cannot_bundle(exported, tmp_path, capsys):
    run, _ = exported
    assert main(['export', str(tmp_path), '--out', str(tmp_path / 'b')]) == 2
    assert 'not a run folder' in capsys.readouterr().err
    assert main(['export', str(run), '--out', str(tmp_path / 'b'), '--device', 'raspberry_pi_9']) == 2
    err = capsys.readouterr().err
    assert 'raspberry_pi_9' in err and 'jetson_nano_trt_fp32' in err
    (tmp_path / 'junk.pt').write_bytes(b'junk')
    assert main(['export', str(tmp_path / 'junk.pt'), '--out', str(tmp_path / 'b')]) == 2
    assert 'cannot be read' in capsys.readouterr().err
    assert not (tmp_path / 'b').exists()


def test_a_bundle_runs_in_a_fresh_venv_with_only_numpy_and_onnxruntime(exported, tmp_path):
    """What a Jetson or Pi gets: copy the bundle, install numpy and onnxruntime, run it. (The versions are
    pinned to this environment's so that pip's cache serves them; the install needs PyPI or that cache.)"""
    import shutil
    from importlib.metadata import version
    _, bundle = exported
    venv = tmp_path / 'venv'
    clean = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
    python = str(venv / 'bin' / 'python')
    install = subprocess.run([python, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
                              f'numpy=={version("numpy")}', f'onnxruntime=={version("onnxruntime")}'],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    for package in ('torch', 'nni', 'nni_bigLittle', 'PIL'):  # nothing of the package or its stack
        probe = subprocess.run([python, '-c', f'import {package}'], capture_output=True, timeout=60, cwd=tmp_path,
                               env=clean)
        assert probe.returncode != 0, f'{package} is importable in the fresh venv'
    device = tmp_path / 'copied_bundle'
    shutil.copytree(bundle, device)
    done = subprocess.run([python, 'run_bundle.py', '--data', 'data.npz', '--bench', '--json', 'result.json'],
                          cwd=device, env=clean, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'accuracy' in done.stdout and 'p90' in done.stdout
    theirs = json.loads((device / 'result.json').read_text())
    ours = run_bundle.run_bench(run_bundle.BigLittleRuntime(bundle), *run_bundle.load_data(bundle / 'data.npz',
                                run_bundle.read_manifest(bundle)), warmup=0)
    assert theirs['accuracy'] == ours['accuracy'] and theirs['escalation_rate'] == ours['escalation_rate']
