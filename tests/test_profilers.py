"""Profilers: local ONNX Runtime, the standalone bench_onnx.py, TensorRT availability, and SSH.

The SSH tests start a real OpenSSH server on 127.0.0.1 (a free port, the current user, throwaway
keys in tmp_path) and profile through it, so the whole ssh/scp path is exercised.
"""
import ast
import getpass
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types

import numpy as np
import onnx
import pytest
import torch

from nni_bigLittle.hw_predictors import bench_onnx
from nni_bigLittle.hw_predictors.energy import EnergyBackend
from nni_bigLittle.hw_predictors.profilers import (BENCH_SCRIPT, OnnxRuntimeProfiler, ProfileResult, ProfilerError,
                                                    ProfilerUnavailable, SSHProfiler, TensorRTProfiler)

STAT_FIELDS = ('median_ms', 'mean_ms', 'std_ms', 'min_ms', 'p10_ms', 'p90_ms')


class ConvBnRelu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.head(y.mean(dim=(2, 3)))


def _export(path, dynamic_batch=False):
    model = ConvBnRelu().eval()
    kwargs = {'dynamic_axes': {'input': {0: 'batch'}, 'logits': {0: 'batch'}}} if dynamic_batch else {}
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), opset_version=17, input_names=['input'],
                          output_names=['logits'], dynamo=False, **kwargs)
    return path


@pytest.fixture(scope='module')
def onnx_file(tmp_path_factory):
    return _export(tmp_path_factory.mktemp('onnx') / 'conv_bn_relu.onnx')


@pytest.fixture(scope='module')
def dynamic_onnx_file(tmp_path_factory):
    return _export(tmp_path_factory.mktemp('onnx_dyn') / 'conv_bn_relu_dynamic.onnx', dynamic_batch=True)


def _check_consistent(result: ProfileResult, repeats: int):
    for name in STAT_FIELDS:
        value = getattr(result, name)
        assert isinstance(value, float) and value == value, name
    assert result.median_ms > 0
    assert result.min_ms <= result.p10_ms <= result.median_ms <= result.p90_ms <= result.max_ms
    assert result.min_ms <= result.mean_ms <= result.max_ms
    assert result.std_ms >= 0
    assert result.repeats >= repeats
    assert result.source == 'measured'


# ------------------------------------------------------------------------------------------------
# Local ONNX Runtime
# ------------------------------------------------------------------------------------------------

def test_onnxruntime_profiler_measures_a_real_model(onnx_file):
    profiler = OnnxRuntimeProfiler(threads=1, warmup=2, repeats=5)
    result = profiler.profile(onnx_file)
    _check_consistent(result, 5)
    assert (result.runtime, result.device, result.threads, result.warmup) == ('onnxruntime', 'local', 1, 2)
    assert result.repeats == 5
    assert result.model == 'conv_bn_relu.onnx'
    env = result.environment
    for key in ('onnxruntime_version', 'numpy_version', 'python_version', 'machine', 'processor', 'hostname',
                'providers'):
        assert key in env, key
    assert env['providers'] == ['CPUExecutionProvider']
    assert result.energy is None
    data = result.to_dict()
    assert data['median_ms'] == result.median_ms and data['energy'] is None
    json.dumps(data)  # serializable as is
    assert 'measured' in str(result.latency())


def test_onnxruntime_profiler_accepts_bytes_modelproto_and_many(onnx_file):
    profiler = OnnxRuntimeProfiler(threads=1, warmup=1, repeats=3)
    raw = onnx_file.read_bytes()
    proto = onnx.load(str(onnx_file))
    results = profiler.profile_many([raw, proto, str(onnx_file)])
    assert len(results) == 3
    for result in results:
        _check_consistent(result, 3)
    assert results[0].model == '<bytes>'


def test_min_time_extends_the_timed_loop(onnx_file):
    result = OnnxRuntimeProfiler(threads=1, warmup=0, repeats=1, min_time_s=0.05).profile(onnx_file)
    assert result.repeats > 1  # one run of this tiny model takes far less than 50 ms
    assert result.total_timed_s >= 0.05


def test_dynamic_input_needs_a_shape(dynamic_onnx_file):
    profiler = OnnxRuntimeProfiler(threads=1, warmup=1, repeats=2)
    with pytest.raises(ProfilerError, match=r"dynamic dimensions.*--input-shape input=1x3x32x32"):
        profiler.profile(dynamic_onnx_file)
    result = profiler.profile(dynamic_onnx_file, input_shapes={'input': (2, 3, 32, 32)})
    _check_consistent(result, 2)
    with pytest.raises(ProfilerError, match='not inputs of the model'):
        profiler.profile(dynamic_onnx_file, input_shapes={'images': (1, 3, 32, 32)})
    with pytest.raises(ProfilerError, match='rank 4'):
        profiler.profile(dynamic_onnx_file, input_shapes={'input': (1, 3, 32)})


def test_bad_models_give_clear_errors(tmp_path):
    profiler = OnnxRuntimeProfiler(threads=1, warmup=0, repeats=1)
    with pytest.raises(ProfilerError, match='not found'):
        profiler.profile(tmp_path / 'missing.onnx')
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not an onnx model')
    with pytest.raises(ProfilerError, match='could not load'):
        profiler.profile(bad)
    with pytest.raises(ProfilerError, match='torch.onnx.export'):
        profiler.profile(torch.nn.Linear(2, 2))
    with pytest.raises(ProfilerUnavailable, match='not available'):
        OnnxRuntimeProfiler(providers=['NoSuchExecutionProvider'])


class _CountingEnergy(EnergyBackend):
    """A deterministic meter: 1 mJ per call to _end, records how it was used."""
    name = 'fake'

    def __init__(self):
        self.events = []

    def available(self):
        return True, 'always'

    def _begin(self):
        self.events.append('start')

    def _end(self):
        self.events.append('stop')
        return 0.001, 'counter', {'counter': 0.001}


def test_energy_backend_meters_only_the_timed_loop(onnx_file):
    meter = _CountingEnergy()
    result = OnnxRuntimeProfiler(threads=1, warmup=3, repeats=4, energy_backend=meter).profile(onnx_file)
    assert meter.events == ['start', 'stop']
    reading = result.energy
    assert reading is not None and reading.inferences == result.repeats == 4
    assert reading.joules == pytest.approx(0.001)
    assert reading.mj_per_inference == pytest.approx(0.25)
    assert result.to_dict()['energy']['backend'] == 'fake'
    assert str(reading.figure()) == '0.25 mJ (measured, fake counter)'


def test_describe_reports_environment_and_settings():
    info = OnnxRuntimeProfiler(threads=2, warmup=1, repeats=3).describe()
    assert info['threads'] == 2 and info['runtime'] == 'onnxruntime'
    assert info['onnxruntime_version'] and info['python_version']


def test_benchmark_session_is_importable_and_consistent(onnx_file):
    session = bench_onnx.make_session(str(onnx_file), threads=1)
    feeds = bench_onnx.make_feeds(session)
    calls = []
    stats = bench_onnx.benchmark_session(session, feeds, 1, 3, 0.0, before_timed=lambda: calls.append('before'),
                                         after_timed=lambda n: calls.append(n))
    assert calls == ['before', 3]
    assert stats['repeats'] == 3 and stats['warmup'] == 1 and stats['threads'] == 1
    assert stats['min_ms'] <= stats['median_ms'] <= stats['max_ms']
    assert bench_onnx.summarize_times([1.0, 2.0, 3.0, 4.0])['median_ms'] == 2.5
    assert bench_onnx.parse_input_shapes(['a=1x3x8x8', 'b:x=2,4']) == {'a': (1, 3, 8, 8), 'b:x': (2, 4)}
    with pytest.raises(bench_onnx.BenchError, match='NAME=D1xD2'):
        bench_onnx.parse_input_shapes(['1x3x8x8'])


# ------------------------------------------------------------------------------------------------
# bench_onnx.py as a standalone script
# ------------------------------------------------------------------------------------------------

def _run_bench(*args):
    return subprocess.run([sys.executable, str(BENCH_SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_bench_script_json_is_one_parseable_line(onnx_file):
    done = _run_bench(onnx_file, '--threads', 1, '--warmup', 2, '--repeats', 5, '--json')
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    for key in STAT_FIELDS + ('repeats', 'warmup', 'threads', 'onnxruntime_version', 'numpy_version',
                              'python_version', 'machine', 'processor', 'hostname', 'providers'):
        assert key in data, key
    assert data['repeats'] == 5 and data['threads'] == 1 and data['median_ms'] > 0
    assert data['min_ms'] <= data['median_ms'] <= data['max_ms']


def test_bench_script_is_standalone():
    """It must run on a device without nni_bigLittle: stdlib, numpy and onnxruntime only."""
    tree = ast.parse(BENCH_SCRIPT.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, 'relative imports would tie bench_onnx.py to the package'
            imported.add(node.module.split('.')[0])
    allowed = {'argparse', 'json', 'math', 'os', 'platform', 'socket', 'sys', 'time', 'numpy', 'onnxruntime'}
    assert imported <= allowed, imported - allowed


def test_bench_script_errors_are_json_too(dynamic_onnx_file, tmp_path):
    done = _run_bench(dynamic_onnx_file, '--warmup', 0, '--repeats', 1, '--json')
    assert done.returncode == bench_onnx.EXIT_USAGE
    error = json.loads(done.stdout.strip())
    assert '--input-shape input=' in error['error']
    done = _run_bench(dynamic_onnx_file, '--warmup', 0, '--repeats', 2, '--input-shape', 'input=3x3x32x32', '--json')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['repeats'] == 2
    done = _run_bench(tmp_path / 'missing.onnx', '--json')
    assert done.returncode == bench_onnx.EXIT_USAGE and 'not found' in json.loads(done.stdout)['error']
    done = _run_bench('--check', '--json')
    assert done.returncode == 0 and json.loads(done.stdout)['ok'] is True


# ------------------------------------------------------------------------------------------------
# TensorRT
# ------------------------------------------------------------------------------------------------

def _tensorrt_missing_reason():
    try:
        importlib.import_module('tensorrt')
    except ImportError as exc:
        return f'tensorrt is not importable ({exc})'
    if not torch.cuda.is_available():
        return 'no CUDA GPU visible to torch'
    return None


def test_tensorrt_profiler_reports_why_it_is_unavailable():
    if _tensorrt_missing_reason() is None:
        pytest.skip('TensorRT and a CUDA GPU are present here; the gpu-marked test covers this machine')
    with pytest.raises(ProfilerUnavailable) as info:
        TensorRTProfiler(precision='fp32', warmup=1, repeats=2)
    assert info.value.reason and 'TensorRT profiling is unavailable' in info.value.reason
    with pytest.raises(ValueError, match='precision'):
        TensorRTProfiler(precision='int4')


def _fake_tensorrt(version):
    """A host-only stand-in for the tensorrt module: checks the profiler's calls, for both API generations.

    Version >= 8.5 offers the named-tensor API (num_io_tensors, set_tensor_address, execute_async_v3);
    older versions only bindings (num_bindings, execute_async_v2), as on a JetPack 4.6 Jetson Nano.
    """
    major, minor = (int(v) for v in version.split('.')[:2])
    named = (major, minor) >= (8, 5)
    trt = types.ModuleType('tensorrt')
    trt.__version__ = version
    log = {'executions': 0, 'flags': [], 'profiles': [], 'addresses': None}
    trt.log = log

    class Logger:
        WARNING = 'warning'

        def __init__(self, level):
            self.level = level

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE='workspace')
    trt.BuilderFlag = types.SimpleNamespace(FP16='fp16')
    trt.TensorIOMode = types.SimpleNamespace(INPUT='input', OUTPUT='output')
    trt.nptype = lambda dtype: np.float32

    class Tensor:
        def __init__(self, name, shape, is_input):
            self.name, self.shape, self.is_input = name, tuple(shape), is_input

    class Network:
        def __init__(self):
            self.tensors = []

        @property
        def num_inputs(self):
            return len([t for t in self.tensors if t.is_input])

        def get_input(self, index):
            return [t for t in self.tensors if t.is_input][index]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            graph = onnx.load_from_string(data).graph
            for values, is_input in ((graph.input, True), (graph.output, False)):
                for value in values:
                    dims = [d.dim_value if d.HasField('dim_value') else -1 for d in value.type.tensor_type.shape.dim]
                    self.network.tensors.append(Tensor(value.name, dims, is_input))
            return True

    class OptimizationProfile:
        def set_shape(self, name, low, opt, high):
            log['profiles'].append((name, tuple(low), tuple(opt), tuple(high)))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            log['workspace'] = (pool, size)

        def set_flag(self, flag):
            log['flags'].append(flag)

        def add_optimization_profile(self, profile):
            log['profile_added'] = True

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log['network_flags'] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            return {'network': network}

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.shapes = {t.name: t.shape for t in engine.tensors}

        def _resolve(self, name):
            batch = next(self.shapes[t.name][0] for t in self.engine.tensors if t.is_input)
            return tuple(batch if d < 0 else d for d in self.shapes[name])

        def _run(self):
            log['executions'] += 1
            return True

    if named:
        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)

        def set_tensor_address(self, name, address):
            log.setdefault('tensor_addresses', {})[name] = address

        Context.set_input_shape = set_input_shape
        Context.get_tensor_shape = Context._resolve
        Context.set_tensor_address = set_tensor_address
        Context.execute_async_v3 = lambda self, stream_handle: self._run()
    else:
        def set_binding_shape(self, index, shape):
            self.shapes[self.engine.tensors[index].name] = tuple(shape)

        def execute_async_v2(self, bindings, stream_handle):
            log['addresses'] = list(bindings)
            return self._run()

        Context.set_binding_shape = set_binding_shape
        Context.get_binding_shape = lambda self, index: self._resolve(self.engine.tensors[index].name)
        Context.execute_async_v2 = execute_async_v2

    class Engine:
        def __init__(self, network):
            self.tensors = network.tensors

        def create_execution_context(self):
            return Context(self)

    if named:
        Engine.num_io_tensors = property(lambda self: len(self.tensors))
        Engine.get_tensor_name = lambda self, i: self.tensors[i].name
        Engine.get_tensor_mode = lambda self, name: next(
            'input' if t.is_input else 'output' for t in self.tensors if t.name == name)
        Engine.get_tensor_dtype = lambda self, name: 'float'
    else:
        Engine.num_bindings = property(lambda self: len(self.tensors))
        Engine.get_binding_name = lambda self, i: self.tensors[i].name
        Engine.binding_is_input = lambda self, i: self.tensors[i].is_input
        Engine.get_binding_dtype = lambda self, i: 'float'

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine(blob['network'])

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


class _HostBuffers:
    """Host-memory stand-in for the CUDA buffer backends."""
    closed = []

    def __init__(self, device_index):
        self.stream_handle = 1234

    def alloc(self, shape, np_dtype, fill=None):
        host = np.zeros(shape, dtype=np_dtype) if fill is None else np.array(fill, dtype=np_dtype)
        device = np.empty_like(host)
        return host, device, 1000 + len(shape) * 10 + host.size

    def h2d(self, host, device):
        device[...] = host

    def d2h(self, host, device):
        host[...] = device

    def synchronize(self):
        pass

    def describe(self):
        return {'cuda_backend': 'host-stand-in'}

    def close(self):
        _HostBuffers.closed.append(True)


@pytest.mark.parametrize('version', ['10.3.0', '8.6.1', '8.2.1'])
def test_tensorrt_profiler_logic_with_a_stand_in(monkeypatch, version, onnx_file, dynamic_onnx_file):
    """The engine build / buffer binding / execution sequence for TensorRT 10, 8.6 and 8.2 APIs."""
    from nni_bigLittle.hw_predictors import profilers
    fake = _fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, 'tensorrt', fake)
    monkeypatch.setattr(profilers, '_cuda_buffer_backend_name', lambda: ('host', 'stand-in'))
    monkeypatch.setitem(profilers._CUDA_BUFFER_BACKENDS, 'host', _HostBuffers)
    _HostBuffers.closed = []
    profiler = TensorRTProfiler(precision='fp16', warmup=2, repeats=3, workspace_gb=0.5)
    result = profiler.profile(onnx_file)
    _check_consistent(result, 3)
    assert result.runtime == 'tensorrt' and result.device == 'local:cuda:0'
    assert result.environment['tensorrt_version'] == version
    assert fake.log['executions'] == 5
    assert fake.log['network_flags'] == (0 if version.startswith('10') else 1)  # explicit batch before 10
    assert fake.log['workspace'] == ('workspace', 1 << 29)
    assert fake.log['flags'] == ['fp16']
    if version == '8.2.1':
        assert result.environment['execute_api'] == 'execute_async_v2'
        assert len(fake.log['addresses']) == 2 and all(isinstance(a, int) for a in fake.log['addresses'])
    else:
        assert result.environment['execute_api'] == 'execute_async_v3'
        assert sorted(fake.log['tensor_addresses']) == ['input', 'logits']
    assert _HostBuffers.closed == [True]
    # Dynamic batch: a one-point optimization profile at the requested shape, or a clear error.
    with pytest.raises(ProfilerError, match="dynamic dimensions.*input_shapes"):
        profiler.profile(dynamic_onnx_file)
    dynamic = profiler.profile(dynamic_onnx_file, input_shapes={'input': (4, 3, 32, 32)})
    _check_consistent(dynamic, 3)
    assert fake.log['profiles'] == [('input', (4, 3, 32, 32), (4, 3, 32, 32), (4, 3, 32, 32))]
    assert _HostBuffers.closed == [True] * 3  # buffers released on success and on error


@pytest.mark.gpu
def test_tensorrt_profiler_on_a_gpu(onnx_file, dynamic_onnx_file):
    reason = _tensorrt_missing_reason()
    if reason:
        pytest.skip(reason)
    profiler = TensorRTProfiler(precision='fp16', warmup=2, repeats=5)
    result = profiler.profile(onnx_file)
    _check_consistent(result, 5)
    assert result.runtime == 'tensorrt' and result.device.startswith('local:cuda')
    assert result.environment['tensorrt_version']
    dynamic = profiler.profile(dynamic_onnx_file, input_shapes={'input': (4, 3, 32, 32)})
    _check_consistent(dynamic, 5)


# ------------------------------------------------------------------------------------------------
# SSH, against a real sshd on loopback
# ------------------------------------------------------------------------------------------------

def _find_sshd():
    for candidate in ('/usr/sbin/sshd', shutil.which('sshd')):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _keygen(path):
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'nni_biglittle-test', '-f', str(path)],
                   check=True, capture_output=True, timeout=30)


@pytest.fixture(scope='module')
def sshd(tmp_path_factory):
    """A private OpenSSH server on 127.0.0.1, accepting a throwaway key for the current user."""
    binary = _find_sshd()
    if binary is None:
        pytest.skip('sshd (openssh-server) is not installed; .ci/run installs it with apt-get')
    if shutil.which('ssh-keygen') is None or shutil.which('ssh') is None:
        pytest.skip('ssh / ssh-keygen (openssh-client) are not installed')
    base = tmp_path_factory.mktemp('sshd')
    host_key, client_key = base / 'host_ed25519', base / 'client_ed25519'
    _keygen(host_key)
    _keygen(client_key)
    authorized = base / 'authorized_keys'
    authorized.write_text((base / 'client_ed25519.pub').read_text())
    os.chmod(authorized, 0o600)
    port = _free_port()
    is_root = os.geteuid() == 0
    config = base / 'sshd_config'
    lines = [
        'ListenAddress 127.0.0.1', f'Port {port}', f'HostKey {host_key}', f'AuthorizedKeysFile {authorized}',
        'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'PubkeyAuthentication yes', 'UsePAM no',
        'StrictModes no', f'PidFile {base / "sshd.pid"}', 'Subsystem sftp internal-sftp', 'LogLevel VERBOSE',
    ]
    if is_root:
        lines.append('PermitRootLogin prohibit-password')
        # sshd refuses to start as root without its privilege-separation directory.
        os.makedirs('/run/sshd', mode=0o755, exist_ok=True)
    config.write_text('\n'.join(lines) + '\n')
    log_path = base / 'sshd.log'
    log = open(log_path, 'w')
    process = subprocess.Popen([binary, '-D', '-e', '-f', str(config)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            log.close()
            pytest.fail(f'sshd exited with status {process.returncode}:\n{log_path.read_text()}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                log.close()
                pytest.fail(f'sshd did not listen on port {port} within 15 s:\n{log_path.read_text()}')
            time.sleep(0.1)
    info = {'port': port, 'key': client_key, 'known_hosts': base / 'known_hosts', 'log': log_path, 'base': base}
    try:
        yield info
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _ssh_profiler(sshd, **kwargs):
    options = dict(host='127.0.0.1', port=sshd['port'], user=getpass.getuser(), identity_file=str(sshd['key']),
                   python=sys.executable, ssh_options=('-o', f'UserKnownHostsFile={sshd["known_hosts"]}'),
                   threads=1, warmup=2, repeats=5, connect_timeout=10)
    options.update(kwargs)
    return SSHProfiler(**options)


def _with_log(sshd):
    return f'\nsshd log:\n{sshd["log"].read_text()[-3000:]}'


def test_ssh_check_reports_remote_environment(sshd):
    profiler = _ssh_profiler(sshd)
    try:
        info = profiler.check()
    except ProfilerError as exc:
        pytest.fail(f'{exc}{_with_log(sshd)}')
    assert info['ok'] is True
    assert info['python_executable'] and info['onnxruntime_version'] and info['numpy_version']
    assert info['device'] == f'ssh:{getpass.getuser()}@127.0.0.1:{sshd["port"]}'


def test_ssh_profiler_measures_on_the_remote(sshd, onnx_file, dynamic_onnx_file):
    profiler = _ssh_profiler(sshd)
    try:
        result = profiler.profile(onnx_file)
    except ProfilerError as exc:
        pytest.fail(f'{exc}{_with_log(sshd)}')
    _check_consistent(result, 5)
    assert result.runtime == 'onnxruntime'
    assert result.device == f'ssh:{getpass.getuser()}@127.0.0.1:{sshd["port"]}'
    assert result.model == 'conv_bn_relu.onnx'
    assert result.environment['onnxruntime_version'] and result.environment['hostname']
    assert result.threads == 1 and result.warmup == 2
    # Dynamic inputs: the shape travels as --input-shape; a missing one is reported from the remote.
    dynamic = profiler.profile(dynamic_onnx_file, input_shapes={'input': (2, 3, 32, 32)})
    _check_consistent(dynamic, 5)
    with pytest.raises(ProfilerError, match='remote benchmark failed.*dynamic dimensions'):
        profiler.profile(dynamic_onnx_file)


def test_ssh_profiler_cleans_up_and_supports_a_fixed_remote_dir(sshd, onnx_file, tmp_path):
    profiler = _ssh_profiler(sshd)
    seen = []
    original = profiler._profile_in

    def spy(directory, model, input_shapes):  # the "remote" is this machine, so its directory can be looked at
        seen.append((directory, sorted(os.listdir(directory))))
        return original(directory, model, input_shapes)
    profiler._profile_in = spy
    results = profiler.profile_many([onnx_file, onnx_file.read_bytes()])
    assert len(results) == 2
    assert [d for d, _ in seen] == [seen[0][0]] * 2  # one remote directory for both models
    assert os.path.basename(seen[0][0]).startswith('nni_biglittle_bench.')
    assert seen[0][1] == ['bench_onnx.py']
    assert not os.path.exists(seen[0][0])  # removed afterwards
    remote_dir = tmp_path / 'remote work'  # a space, to exercise quoting
    result = _ssh_profiler(sshd, remote_dir=str(remote_dir)).profile(onnx_file)
    _check_consistent(result, 5)
    assert sorted(os.listdir(remote_dir)) == ['bench_onnx.py']  # the model is removed, the script kept


def test_ssh_remote_python_without_onnxruntime_is_explained(sshd, tmp_path):
    fake_site = tmp_path / 'fake_site' / 'onnxruntime'
    fake_site.mkdir(parents=True)
    (fake_site / '__init__.py').write_text("raise ImportError('simulated: onnxruntime is not installed')\n")
    wrapper = tmp_path / 'python_without_ort'
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={fake_site.parent} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    with pytest.raises(ProfilerUnavailable, match='pip install numpy onnxruntime'):
        _ssh_profiler(sshd, python=str(wrapper)).check()
    with pytest.raises(ProfilerUnavailable, match='was not found'):
        _ssh_profiler(sshd, python=str(tmp_path / 'no_such_python3')).check()


def test_ssh_wrong_port_and_wrong_key_are_clear(sshd, tmp_path):
    closed_port = _free_port()
    with pytest.raises(ProfilerError, match='connection refused'):
        _ssh_profiler(sshd, port=closed_port).check()
    other_key = tmp_path / 'unauthorized_ed25519'
    _keygen(other_key)
    with pytest.raises(ProfilerError, match='authentication .* failed'):
        _ssh_profiler(sshd, identity_file=str(other_key)).check()
    with pytest.raises(ProfilerError, match='does not exist'):
        _ssh_profiler(sshd, identity_file=str(tmp_path / 'no_key'))
