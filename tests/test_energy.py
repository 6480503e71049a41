"""Energy backends: detection, RAPL (real and a fake powercap tree), tegrastats parsing, Figure labels."""
import math
import os
import stat
import sys
import time

import pytest

from nni_bigLittle.hw_predictors.energy import (EnergyError, EnergyReading, Figure, NvmlEnergy, RaplEnergy,
                                                TegrastatsEnergy, best_energy_backend, detect_energy_backends,
                                                integrate_samples, parse_tegrastats_line, total_power_mw)

# Real-format tegrastats lines (L4T r32 without units, r35/r36 with mW).
NANO_LINE = ('RAM 2361/3964MB (lfb 5x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) '
             'CPU [12%@1479,6%@1479,8%@1479,5%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@33C CPU@35.5C '
             'iwlwifi@37C PMIC@100C GPU@33.5C AO@42C thermal@34.5C POM_5V_IN 2185/2185 POM_5V_GPU 40/40 '
             'POM_5V_CPU 408/408')
TX2_LINE = ('RAM 2020/7852MB (lfb 1164x4MB) CPU [9%@345,21%@345,25%@345,3%@345,1%@345,1%@345] EMC_FREQ 0% '
            'GR3D_FREQ 0% PLL@42.5C MCPU@42.5C PMIC@100C Tboard@40C GPU@41C BCPU@42.5C thermal@41.9C '
            'Tdiode@41.25C VDD_SYS_GPU 153/158 VDD_SYS_SOC 536/547 VDD_4V0_WIFI 633/527 VDD_IN 3140/3208 '
            'VDD_SYS_CPU 536/590 VDD_SYS_DDR 557/601')
AGX_XAVIER_LINE = ('RAM 1927/15692MB (lfb 2936x4MB) SWAP 0/7846MB (cached 0MB) CPU [2%@1190,1%@1190,off,off,'
                   'off,off,off,off] EMC_FREQ 0% GR3D_FREQ 0% AO@34C GPU@34.5C Tdiode@36.75C PMIC@100C '
                   'AUX@33.5C CPU@35C thermal@34.35C Tboard@34C GPU 0/0 CPU 311/311 SOC 1242/1242 CV 0/0 '
                   'VDDRQ 155/155 SYS5V 1526/1526')
AGX_ORIN_LINE = ('11-14-2024 22:28:01 RAM 3048/30593MB (lfb 6634x4MB) SWAP 0/15296MB (cached 0MB) '
                 'CPU [1%@729,0%@729,0%@729,0%@729,off,off,off,off,off,off,off,off] EMC_FREQ 0%@2133 '
                 'GR3D_FREQ 0%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@43.375C Tboard@32C SOC2@40.25C '
                 'Tdiode@33.25C SOC0@40.406C CV1@-256C GPU@-256C tj@43.375C SOC1@39.5C CV2@-256C '
                 'VDD_GPU_SOC 3176mW/3176mW VDD_CPU_CV 397mW/397mW VIN_SYS_5V0 2929mW/2929mW '
                 'VDDQ_VDD2_1V8AO 503mW/503mW')
ORIN_NANO_LINE = ('RAM 2981/7620MB (lfb 12x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,0%@729,'
                  '0%@729,0%@729,0%@729] GR3D_FREQ 0% cpu@47.656C soc2@46.5C soc0@46.968C gpu@46.906C '
                  'tj@47.656C soc1@46.562C VDD_IN 4799mW/4811mW VDD_CPU_GPU_CV 479mW/482mW VDD_SOC 1438mW/1440mW')


# ------------------------------------------------------------------------------------------------
# Detection on this machine
# ------------------------------------------------------------------------------------------------

def test_detection_lists_all_three_with_reasons():
    found = detect_energy_backends()
    assert [backend.name for backend, _, _ in found] == ['RAPL', 'NVML', 'tegrastats']
    for backend, ok, reason in found:
        assert isinstance(ok, bool)
        assert isinstance(reason, str) and reason.strip(), backend.name
    best = best_energy_backend()
    available = [backend.name for backend, ok, _ in found if ok]
    assert (best.name if best else None) == (available[0] if available else None)
    with pytest.raises(ValueError, match='unknown energy backend'):
        best_energy_backend(prefer=('joulemeter',))


def _busy(seconds):
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        total += sum(range(1000))
    return total


def test_rapl_on_this_machine_is_consistent():
    rapl = RaplEnergy()
    ok, reason = rapl.available()
    assert reason.strip()
    if not ok:
        with pytest.raises(EnergyError, match='unavailable'):
            rapl.start()
        return
    with rapl.measure(inferences=10) as window:
        _busy(0.2)
    reading = window.reading
    assert reading.joules > 0 and reading.seconds > 0
    assert reading.mean_power_w > 0 and reading.mj_per_inference == pytest.approx(reading.joules * 100)
    assert reading.backend == 'RAPL' and reading.source == 'measured' and 'package' in reading.detail


def test_nvml_reason_is_given_when_unavailable():
    ok, reason = NvmlEnergy().available()
    assert reason.strip()
    if not ok:
        assert any(word in reason for word in ('pynvml', 'NVML', 'GPU'))


# ------------------------------------------------------------------------------------------------
# RAPL on a fake powercap tree
# ------------------------------------------------------------------------------------------------

def _zone(root, name, label, energy_uj, max_uj=262143328850):
    path = root / name
    path.mkdir()
    (path / 'name').write_text(label + '\n')
    (path / 'energy_uj').write_text(f'{energy_uj}\n')
    (path / 'max_energy_range_uj').write_text(f'{max_uj}\n')
    return path


def test_rapl_sums_packages_and_handles_wraparound(tmp_path):
    pkg0 = _zone(tmp_path, 'intel-rapl:0', 'package-0', 1_000_000)
    pkg1 = _zone(tmp_path, 'intel-rapl:1', 'package-1', 999_000, max_uj=1_000_000)
    core = _zone(tmp_path, 'intel-rapl:0:0', 'core', 500)
    _zone(tmp_path, 'intel-rapl:2', 'psys', 7)
    rapl = RaplEnergy(root=tmp_path)
    ok, reason = rapl.available()
    assert ok, reason
    assert [z.name for z in rapl.zones()] == ['package-0', 'package-1']  # no subzones, no psys
    rapl.start()
    (pkg0 / 'energy_uj').write_text('3500000\n')       # +2.5 J
    (pkg1 / 'energy_uj').write_text('1000\n')          # wrapped: +0.002 J
    (core / 'energy_uj').write_text('999999999\n')     # inside package-0: ignored
    reading = rapl.stop(inferences=5)
    assert reading.joules == pytest.approx(2.502)
    assert reading.components == pytest.approx({'package-0': 2.5, 'package-1': 0.002})
    assert reading.mj_per_inference == pytest.approx(2502 / 5)
    assert reading.detail == 'package-0+package-1'
    assert str(reading.figure()).endswith('(measured, RAPL package-0+package-1)')
    subzone = RaplEnergy(root=tmp_path, zones=['core'])
    assert [z.name for z in subzone.zones()] == ['core']


def test_rapl_unavailable_reasons(tmp_path, monkeypatch):
    ok, reason = RaplEnergy(root=tmp_path / 'absent').available()
    assert not ok and 'no powercap directory' in reason
    ok, reason = RaplEnergy(root=tmp_path).available()
    assert not ok and 'no intel-rapl' in reason
    _zone(tmp_path, 'intel-rapl:0', 'package-0', 1)
    ok, reason = RaplEnergy(root=tmp_path, zones=['dram']).available()
    assert not ok and 'dram' in reason

    def denied(path):
        raise PermissionError(13, 'Permission denied', path)
    # chmod cannot take read access from root, so permission loss is simulated at the read.
    monkeypatch.setattr(RaplEnergy, '_read_uj', staticmethod(denied))
    ok, reason = RaplEnergy(root=tmp_path).available()
    assert not ok and 'permission denied' in reason and 'chmod' in reason


# ------------------------------------------------------------------------------------------------
# tegrastats
# ------------------------------------------------------------------------------------------------

def test_parse_tegrastats_nano():
    rails = parse_tegrastats_line(NANO_LINE)
    assert rails == {'POM_5V_IN': 2185.0, 'POM_5V_GPU': 40.0, 'POM_5V_CPU': 408.0}
    assert total_power_mw(rails) == (2185.0, 'POM_5V_IN')


def test_parse_tegrastats_tx2():
    rails = parse_tegrastats_line(TX2_LINE)
    assert rails == {'VDD_SYS_GPU': 153.0, 'VDD_SYS_SOC': 536.0, 'VDD_4V0_WIFI': 633.0, 'VDD_IN': 3140.0,
                     'VDD_SYS_CPU': 536.0, 'VDD_SYS_DDR': 557.0}
    assert total_power_mw(rails) == (3140.0, 'VDD_IN')


def test_parse_tegrastats_agx_xavier_sums_rails():
    rails = parse_tegrastats_line(AGX_XAVIER_LINE)
    assert rails == {'GPU': 0.0, 'CPU': 311.0, 'SOC': 1242.0, 'CV': 0.0, 'VDDRQ': 155.0, 'SYS5V': 1526.0}
    total, detail = total_power_mw(rails)
    assert total == 311 + 1242 + 155 + 1526 and 'SYS5V' in detail


def test_parse_tegrastats_orin():
    rails = parse_tegrastats_line(AGX_ORIN_LINE)
    assert rails == {'VDD_GPU_SOC': 3176.0, 'VDD_CPU_CV': 397.0, 'VIN_SYS_5V0': 2929.0, 'VDDQ_VDD2_1V8AO': 503.0}
    rails = parse_tegrastats_line(ORIN_NANO_LINE)
    assert rails == {'VDD_IN': 4799.0, 'VDD_CPU_GPU_CV': 479.0, 'VDD_SOC': 1438.0}
    assert total_power_mw(rails) == (4799.0, 'VDD_IN')
    assert total_power_mw(rails, ['VDD_CPU_GPU_CV']) == (479.0, 'VDD_CPU_GPU_CV')
    with pytest.raises(EnergyError, match='no rail'):
        total_power_mw(rails, ['POM_5V_GPU'])


def test_parse_tegrastats_ignores_lines_without_rails():
    assert parse_tegrastats_line('RAM 2361/3964MB (lfb 5x4MB) SWAP 0/1982MB (cached 0MB) CPU [off,off]') == {}
    assert parse_tegrastats_line('') == {}


def test_integrate_samples_rectangle_rule():
    samples = [(10.5, {'VDD_IN': 4000.0}), (11.0, {'VDD_IN': 6000.0}), (13.0, {'VDD_IN': 9999.0})]
    joules, detail, components = integrate_samples(samples, 10.0, 12.0)
    # 4 W from the window start to 11.0, then 6 W to the window end; the sample after the window is ignored.
    assert joules == pytest.approx(4 * 1.0 + 6 * 1.0)
    assert detail == 'VDD_IN' and components['VDD_IN'] == pytest.approx(10.0)
    # A window shorter than one interval uses the next sample.
    joules, _, _ = integrate_samples([(20.0, {'VDD_IN': 5000.0})], 19.0, 19.5)
    assert joules == pytest.approx(2.5)


def test_tegrastats_backend_with_a_fake_binary(tmp_path):
    fake = tmp_path / 'tegrastats'
    # Prints a constant 5 W on VDD_IN every --interval ms, like the real tool on an Orin Nano.
    fake.write_text(f'#!{sys.executable}\n'
                    'import sys, time\n'
                    'interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000\n'
                    'while True:\n'
                    '    print("RAM 2981/7620MB (lfb 12x4MB) VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 1000mW/1000mW", '
                    'flush=True)\n'
                    '    time.sleep(interval)\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    missing = TegrastatsEnergy(binary=str(tmp_path / 'absent'))
    ok, reason = missing.available()
    assert not ok and 'not an NVIDIA Jetson' in reason
    backend = TegrastatsEnergy(interval_ms=20, binary=str(fake))
    assert backend.available()[0]
    with backend.measure(inferences=4) as window:
        time.sleep(0.3)
    reading = window.reading
    assert reading.backend == 'tegrastats' and reading.detail == 'VDD_IN'
    assert reading.mean_power_w == pytest.approx(5.0, rel=0.1)
    assert reading.joules == pytest.approx(5.0 * reading.seconds, rel=0.1)
    assert reading.components['VDD_CPU_GPU_CV'] == pytest.approx(reading.joules / 5, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def test_figure_labels_measured_and_predicted():
    assert str(Figure(12.3, 'mJ', 'measured', 'RAPL package-0')) == '12.3 mJ (measured, RAPL package-0)'
    predicted = Figure(4.56789, 'ms', 'predicted', 'predictor jetson_nano_trt_fp32 (iCAS data)')
    assert str(predicted) == '4.57 ms (predicted, predictor jetson_nano_trt_fp32 (iCAS data))'
    assert str(Figure(1234.4, 'ms', 'measured', 'x')) == '1234 ms (measured, x)'
    assert predicted.to_dict()['kind'] == 'predicted'
    with pytest.raises(ValueError, match='measured'):
        Figure(1.0, 'mJ', 'guessed', 'x')


def test_energy_reading_totals():
    reading = EnergyReading.from_totals(0.5, 2.0, 100, 'NVML', 'GPU0 test')
    assert reading.mj_per_inference == pytest.approx(5.0)
    assert reading.mean_power_w == pytest.approx(0.25)
    assert str(reading.figure()) == '5 mJ (measured, NVML GPU0 test)'
    assert math.isnan(EnergyReading.from_totals(1.0, 1.0, 0, 'x').mj_per_inference)  # no inferences: undefined


def test_backends_refuse_to_stop_unstarted():
    backend = RaplEnergy(root=os.devnull)
    with pytest.raises(EnergyError, match='without start'):
        backend.stop()
