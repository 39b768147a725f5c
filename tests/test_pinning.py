"""The default kernel pinning gives the bytes measured on another machine; bad asks are refused in one line."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from circuitpath import pinning
from circuitpath.cli import main
from circuitpath.errors import ConfigError
from test_platform import interrupted_copy

#: The reference's four commands and their digests under MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default (its
#: mkl_compatible+aten_default row), measured on an AMD EPYC (Zen 4) with torch 2.13.0+cpu at commit 86615a3:
#: /work/shared/reference/digests-amd-epyc.txt. Natively, or under avx2, every one differs.
REFERENCE = {
    "paper_d32_fullbatch": (["--phases", "4:300:1e-2", "--seed", "5"], "3d257ec73c123e0e", "c298688f09ce1042"),
    "paper_d32_minibatch": (["--phases", "4:300:1e-3:32", "--n-ctx", "8", "--seed", "3"],
                            "6566cca1281306e0", "c49dd86ff1047de6"),
    "paper_d2_fused": (["--preset", "vis_p2", "--steps", "3000", "--seed", "2"], "db02dc1ecfc2a072", "bd8ebd12dc36ca0c"),
    "transformer_2l4h": (["--model", "transformer", "--n-layers", "2", "--n-heads", "4", "--phases", "4:200:1e-3:32",
                          "--seed", "1"], "42a37a80e96f86ff", "bfffdd4aeda31f8b"),
}
#: With this C function preloaded, MKL takes any CPU for an Intel one and runs the branch MKL_CBWR names
#: (on an AMD CPU it otherwise runs AUTO for every name but COMPATIBLE): the arithmetic an Intel CPU runs.
AS_INTEL = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"

#: The four runs in one fresh interpreter, each as `circuitpath train ARGS --out DIR`, then the digests:
#: 'weights' = sha256 over each tensor's name and raw bytes (sorted by name) of the last checkpoint,
#: 'metrics' = sha256 of metrics.jsonl; first 16 hex digits.
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    from circuitpath.cli import main
    import torch
    from safetensors.torch import load_file

    out, commands = Path(sys.argv[1]), json.loads(sys.argv[2])
    digests = {"capability": torch.backends.cpu.get_cpu_capability()}
    for name, args in commands.items():
        assert main(["train", *args, "--out", str(out / name)]) == 0
        tensors = load_file(sorted((out / name / "checkpoints").glob("step_*.safetensors"))[-1])
        h = hashlib.sha256()
        for key in sorted(tensors):
            h.update(key.encode())
            h.update(tensors[key].contiguous().numpy().tobytes())
        metrics = hashlib.sha256((out / name / "metrics.jsonl").read_bytes()).hexdigest()[:16]
        digests[name] = [h.hexdigest()[:16], metrics]
    print(json.dumps(digests))
""")


def clean_env(**extra) -> dict[str, str]:
    """This environment without the kernel variables (this process set them), the pinning's name kept."""
    return {k: v for k, v in os.environ.items() if k not in pinning.VARIABLES} | extra


def digests_of_the_four_runs(out, **env) -> dict:
    commands = {name: args for name, (args, _, _) in REFERENCE.items()}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), json.dumps(commands)], env=clean_env(**env),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


EXPECTED = {name: [weights, metrics] for name, (_, weights, metrics) in REFERENCE.items()}


def test_the_default_pinning_gives_the_reference_digests(tmp_path):
    digests = digests_of_the_four_runs(tmp_path, CIRCUITPATH_PINNING=pinning.DEFAULT)
    ran = digests.pop("capability")
    assert digests == EXPECTED, f"ATen {ran}, pinning {pinning.DEFAULT}"


@pytest.mark.skipif(sys.platform != "linux" or shutil.which("cc") is None, reason="needs Linux and a C compiler")
def test_the_default_pinning_gives_them_on_intel_too(tmp_path):
    """MKL picks its code by vendor: run it as on an Intel CPU (on an Intel CPU this changes nothing) and
    the default pinning must still give the reference's bytes, measured on an AMD EPYC."""
    (tmp_path / "as_intel.c").write_text(AS_INTEL)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "as_intel.so"), str(tmp_path / "as_intel.c")],
                   check=True)
    probe = run_python("import circuitpath, torch\nfrom circuitpath import pinning\n(torch.ones(4, 4) @ torch.ones(4, 4)).sum()\n"
                       "print(pinning.mkl_branch())", CIRCUITPATH_PINNING="avx2", LD_PRELOAD=str(tmp_path / "as_intel.so"))
    assert probe.stdout.split() == ["10"], probe.stderr  # MKL now runs its AVX2 branch, as on an Intel CPU
    digests = digests_of_the_four_runs(tmp_path / "runs", CIRCUITPATH_PINNING=pinning.DEFAULT,
                                       LD_PRELOAD=str(tmp_path / "as_intel.so"))
    digests.pop("capability")
    assert digests == EXPECTED


def test_an_unknown_pinning_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    assert main(["--pinning", "avx3", "train", "--out", str(tmp_path / "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--pinning avx3" in lines[0] and "avx2, native, compatible" in lines[0]
    assert not (tmp_path / "x").exists()


def test_an_unknown_pinning_in_the_environment_is_refused_by_the_cli(tmp_path):
    done = subprocess.run([sys.executable, "-m", "circuitpath.cli", "train", "--out", str(tmp_path / "x")],
                          env=clean_env(CIRCUITPATH_PINNING="fast"), capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == (
        "circuitpath: error: CIRCUITPATH_PINNING=fast is not a pinning: choose one of avx2, native, compatible")
    assert not (tmp_path / "x").exists()


def test_a_pinning_the_cpu_cannot_run_is_refused_naming_both(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pinning, "cpu_flags", lambda: {"sse2", "fma"})
    assert main(["--pinning", "avx2", "train", "--out", str(tmp_path / "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pinning avx2 needs a CPU with AVX2 and FMA" in lines[0]
    assert "this CPU has no AVX2" in lines[0] and not (tmp_path / "x").exists()


def test_the_default_runs_on_any_cpu_and_avx2_asked_for_on_one_without_it_is_refused(monkeypatch):
    monkeypatch.delenv(pinning.ENV, raising=False)
    assert pinning.resolve(None, {"sse2"}) == pinning.resolve(None, None) == "compatible" == pinning.DEFAULT
    assert pinning.resolve("avx2", {"avx2", "fma"}) == "avx2"
    assert pinning.resolve("compatible", {"sse2"}) == "compatible"
    with pytest.raises(ConfigError, match="flags that could not be read"):
        pinning.resolve("avx2", None)
    monkeypatch.setenv(pinning.ENV, "avx2")
    with pytest.raises(ConfigError, match="this CPU has no AVX2"):
        pinning.resolve(None, {"sse2", "fma"})


def test_run_json_records_the_pinning_and_show_names_it(trained_run, capsys):
    assert trained_run.info[pinning.KEY] == pinning.running() == os.environ[pinning.ENV]
    assert main(["show", str(trained_run.path)]) == 0
    assert f"\npinning: {pinning.running()}\n" in capsys.readouterr().out


@pytest.mark.parametrize("recorded", ["avx2", None], ids=["avx2", "none"])
def test_resume_under_another_pinning_is_refused_in_one_line_and_changes_nothing(tmp_path, recorded, capsys):
    run = interrupted_copy(tmp_path, pinning=recorded)  # None: no key, as runs written before it was recorded
    before = {f: f.read_bytes() for f in sorted(run.path.rglob("*")) if f.is_file() and f.name != ".lock"}
    assert main(["train", "--resume", str(run.path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    asked = recorded or "native"
    assert len(lines) == 1 and f"under pinning {asked}," in lines[0] and f"continue it with --pinning {asked}, " in lines[0]
    assert f"under pinning {pinning.running()}:" in lines[0]
    after = {f: f.read_bytes() for f in sorted(run.path.rglob("*")) if f.is_file() and f.name != ".lock"}
    assert after == before


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=clean_env(**env), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", ["avx2", "compatible"])
def test_the_pinning_takes_effect_after_import_torch_and_in_child_processes(name):
    if name == "avx2" and "avx2" not in (pinning.cpu_flags() or ()):
        pytest.skip("avx2 needs an AVX2 CPU")
    child = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    done = run_python("import torch, subprocess, sys\nimport circuitpath\nfrom circuitpath import pinning\n"
                      "print(torch.backends.cpu.get_cpu_capability(), pinning.mkl_branch(), pinning.running())\n"
                      f"subprocess.run([sys.executable, '-c', {child!r}])", CIRCUITPATH_PINNING=name)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    cbwr, aten = pinning.PINNINGS[name]["MKL_CBWR"], pinning.PINNINGS[name]["ATEN_CPU_CAPABILITY"].upper()
    branch = pinning.mkl_branch_expected(cbwr, pinning.cpu_vendor())  # AVX2: 10 on an Intel CPU, 2 (AUTO) elsewhere
    assert done.stdout.split() == [aten, str(branch), name, aten]


def test_mkl_runs_its_avx2_branch_on_intel_and_auto_elsewhere_and_the_check_accepts_either(monkeypatch):
    """mkl_service.h: 1 no branch, 2 AUTO, 3 COMPATIBLE, 10 AVX2; MKL documents only AUTO and COMPATIBLE on
    non-Intel CPUs. A pin after `import torch` is checked against the branch this vendor runs."""
    expected = pinning.mkl_branch_expected
    assert [expected(v, "GenuineIntel") for v in (None, "AVX2", "COMPATIBLE")] == [1, 10, 3]
    assert [expected(v, "AuthenticAMD") for v in (None, "AVX2", "COMPATIBLE")] == [1, 2, 3]
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    for vendor, branch, took in (("GenuineIntel", 10, True), ("GenuineIntel", 2, False), ("AuthenticAMD", 2, True),
                                 ("AuthenticAMD", 1, False)):
        monkeypatch.setattr(pinning, "cpu_vendor", lambda: vendor)
        monkeypatch.setattr(pinning, "mkl_branch", lambda: branch)
        assert pinning._took_effect({"MKL_CBWR": "AVX2"}) is took, (vendor, branch)


def test_a_pinning_that_cannot_take_effect_is_said_in_one_line_and_not_passed_on():
    done = run_python("import torch, os\ntorch.ones(2) + 1\nimport circuitpath\nfrom circuitpath import pinning\n"
                      "print(pinning.running(), os.environ.get('ATEN_CPU_CAPABILITY'), os.environ['CIRCUITPATH_PINNING'])",
                      CIRCUITPATH_PINNING="compatible")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch ran kernels before circuitpath could pin them" in lines[0]
    assert "pinning compatible could not take effect: this process runs native" in lines[0]
    assert "import circuitpath before torch" in lines[0]
    assert done.stdout.split() == ["native", "None", "native"]


def test_the_shells_variables_win_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "circuitpath.cli", "train", "--out", str(tmp_path / "x"), "--p", "2",
                           "--steps", "2", "--n-ctx", "6", "--k", "3", "--n-train", "40", "--d-model", "8"],
                          env=clean_env(ATEN_CPU_CAPABILITY="default", CIRCUITPATH_PINNING="avx2"),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if "overrides" in line]
    assert ours == ["circuitpath: ATEN_CPU_CAPABILITY=default set in the environment overrides pinning avx2: "
                    "it runs custom: ATEN_CPU_CAPABILITY=default"]
    info = json.loads((tmp_path / "x" / "run.json").read_text())
    assert info["pinning"] == "custom: ATEN_CPU_CAPABILITY=default"
    assert info["platform"]["cpu_capability"] == "DEFAULT"


def test_worker_processes_train_under_the_pinning_chosen_here(tmp_path):
    """Workers resume runs created here, and refuse one written under another pinning than theirs."""
    done = run_python(textwrap.dedent(f"""
        import json, sys
        from circuitpath import pinning
        from circuitpath.training import processes
        from circuitpath.training.train import train_many
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from conftest import tiny_config
        assert pinning.pin("compatible") == []
        processes.MIN_WORK = 0  # train in worker processes however small the work
        runs = train_many([tiny_config(seed=s) for s in range(2)], [{str(tmp_path)!r} + f"/r{{s}}" for s in range(2)],
                          progress=False, workers=2)
        print(json.dumps([[run.status, run.info["pinning"], run.info["platform"]["cpu_capability"]] for run in runs]))
    """))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [["completed", "compatible", "DEFAULT"]] * 2
    assert "overrides" not in done.stderr and "could not take effect" not in done.stderr


def test_ray_workers_get_the_variables_of_the_pinning_running_here():
    wanted = pinning.PINNINGS[pinning.running()]
    assert pinning.environment() == {pinning.ENV: pinning.running(), **wanted}
