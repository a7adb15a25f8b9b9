"""Site profiles: GPU matching on old and new pools, profile checks, the grid-proxy refusal."""

from __future__ import annotations

import dataclasses
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gridtrain.condor.proxy import check_proxy, proxy_expires
from gridtrain.condor.render import render_submit_description
from gridtrain.condor.site import SiteProfile, load_profile
from gridtrain.errors import CondorError, ConfigError
from tests.condor.test_condor_render import example_jobs
from tests.conftest import in_ci

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def requirements(profile: SiteProfile) -> str:
    text = render_submit_description(profile, example_jobs(1))
    [line] = [line for line in text.splitlines() if line.startswith("requirements ")]
    return line.split("=", 1)[1].strip()


@pytest.mark.parametrize(
    ("machine", "matches"),
    [
        # a recent pool has no CUDA* slot attributes: the fallback clauses step aside, and
        # require_gpus does the matching (test_gpu_request_matches_gpu_ads_on_new_pools)
        ({}, True),
        ({"CUDACapability": 8.0, "CUDAGlobalMemoryMb": 40000}, True),  # an old pool, an A100
        ({"CUDACapability": 6.1, "CUDAGlobalMemoryMb": 11000}, False),  # old pool, GTX 1080 Ti
        ({"CUDACapability": 7.5, "CUDAGlobalMemoryMb": 8000}, False),  # capable, too small
    ],
)
def test_gpu_fallback_clauses_match_old_pools_and_step_aside_on_new_ones(
    machine: dict, matches: bool
) -> None:
    import classad2

    profile = load_profile("cms-connect")
    expression = classad2.ExprTree(requirements(profile))
    job = classad2.ClassAd()
    site = {"HAS_SINGULARITY": True, "HAS_CVMFS_cms_cern_ch": True, "HAS_CVMFS_sft_cern_ch": True}
    slot = classad2.ClassAd({**site, **machine})
    assert expression.eval(scope=job, target=slot) is matches


def submitted_job_ad(profile: SiteProfile, run_dir: Path):  # -> classad2.ClassAd
    """The job ad condor_submit makes of the rendered description, as a ``classad2.ClassAd``.

    That is where a recent pool's GPU matching comes from: condor_submit turns
    ``gpus_minimum_capability``/``_memory`` into the job's ``RequireGPUs`` and adds
    ``countMatches(MY.RequireGPUs, TARGET.AvailableGPUs) >= RequestGPUs`` to its requirements.
    htcondor2 cannot expand a description without a schedd (``Submit.jobs`` is not implemented);
    the version-1 bindings of the same wheel can.
    """
    import classad2

    with warnings.catch_warnings():  # no condor_config here: fine for expanding a description
        warnings.filterwarnings("ignore", message=".*condor_config.*", category=UserWarning)
        try:
            import htcondor
        except ImportError as err:
            reason = f"the htcondor version-1 bindings expand submit descriptions: {err}"
            if in_ci():
                pytest.fail(f"CI must test GPU matching on new pools, but {reason}")
            pytest.skip(reason)
    run_dir.mkdir(parents=True, exist_ok=True)  # initialdir, which condor_submit checks
    jobs = dataclasses.replace(example_jobs(1), run_dir=run_dir)
    # condor_submit reads the proxy file when it makes the ad; the GPU request does not use it
    text = render_submit_description(dataclasses.replace(profile, x509_proxy=False), jobs)
    [ad] = list(htcondor.Submit(text).jobs(count=1))
    return classad2.parseOne(str(ad))


def new_pool_slot(*gpus: tuple[float, int]):  # -> classad2.ClassAd
    """A slot as an HTCondor >= 9 startd advertises it: one nested ad per GPU, listed in
    ``AvailableGPUs``, properties all GPUs share also as ``GPUs_<property>``; no CUDA* names."""
    import classad2

    slot = classad2.ClassAd(
        {
            "HAS_SINGULARITY": True,
            "HAS_CVMFS_cms_cern_ch": True,
            "HAS_CVMFS_sft_cern_ch": True,
            "GLIDEIN_CMSSite": "T2_US_UCSD",
            "Arch": "X86_64",
            "OpSys": "LINUX",
            "Cpus": 8,
            "Memory": 64000,  # MB
            "Disk": 200_000_000,  # KiB
            "HasFileTransfer": True,
            "HasSelfCheckpointTransfers": True,
            "GPUs": len(gpus),
        }
    )
    names = []
    for index, (capability, memory) in enumerate(gpus):
        name = f"GPUs_GPU_{index:08x}"
        slot[name] = classad2.ClassAd(
            {"Id": f"GPU-{index:08x}", "Capability": capability, "GlobalMemoryMb": memory}
        )
        names.append(name)
    slot["AvailableGPUs"] = classad2.ExprTree("{ " + ", ".join(names) + " }")
    if len(set(gpus)) == 1:
        slot["GPUs_Capability"], slot["GPUs_GlobalMemoryMb"] = gpus[0]
    return slot


@pytest.mark.parametrize(
    ("gpus", "qualifying"),
    [
        ([(8.0, 40960)], 1),  # an A100: above both minimums
        ([(7.5, 15360)], 1),  # a T4: capability exactly the minimum, memory above it
        ([(6.1, 11264)], 0),  # a GTX 1080 Ti: fails both
        ([(8.6, 10240)], 0),  # capable enough, too little memory
        ([(6.1, 40960)], 0),  # memory enough, not capable enough
        ([(6.1, 11264), (8.6, 24576)], 1),  # two GPUs, one that qualifies: enough for one
    ],
)
def test_gpu_request_matches_gpu_ads_on_new_pools(
    tmp_path: Path, gpus: list[tuple[float, int]], qualifying: int
) -> None:
    import classad2

    profile = load_profile("cms-connect")  # request_gpus 1, capability >= 7.5, memory >= 15000
    job = submitted_job_ad(profile, tmp_path / "run")
    assert job["RequestGPUs"] == profile.request_gpus == 1
    assert job["GPUsMinCapability"] == profile.gpus_minimum_capability == 7.5
    assert job["GPUsMinMemory"] == profile.gpus_minimum_memory == 15000
    slot = new_pool_slot(*gpus)
    assert "CUDACapability" not in slot  # so only require_gpus can turn a GPU down
    count = classad2.ExprTree("countMatches(MY.RequireGPUs, TARGET.AvailableGPUs)")
    assert count.eval(scope=job, target=slot) == qualifying
    assert job.lookup("Requirements").eval(scope=job, target=slot) is (qualifying >= 1)


def test_a_profile_requirement_the_slot_lacks_does_not_match() -> None:
    import classad2

    expression = classad2.ExprTree(requirements(load_profile("cms-connect")))
    slot = classad2.ClassAd({"HAS_SINGULARITY": True, "HAS_CVMFS_cms_cern_ch": False})
    assert expression.eval(scope=classad2.ClassAd(), target=slot) is False


def test_site_commands_come_from_the_profile(tmp_path: Path) -> None:
    profile = dataclasses.replace(
        load_profile("cms-connect"), undesired_sites=("T2_XX_Broken", "T3_YY_Slow")
    )
    text = render_submit_description(profile, example_jobs(1))
    assert '+UNDESIRED_Sites        = "T2_XX_Broken,T3_YY_Slow"' in text
    assert '+ProjectName            = "cms.org.example"' in text
    assert "use_x509userproxy       = True" in text
    lxplus = render_submit_description(load_profile("lxplus"), example_jobs(1))
    assert '+JobFlavour             = "tomorrow"' in lxplus
    assert "use_x509userproxy" not in lxplus
    assert load_profile("lxplus").runtime_hours() == 24.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("job_flavour: lunch\n", "job_flavour 'lunch' is not one of espresso"),
        ("desired_sites: T2_US_UCSD\n", "desired_sites must be a list of strings"),
        ("project_name: 'a\"b'\n", "quotes and newlines cannot go into a ClassAd string"),
    ],
)
def test_bad_site_keys_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mysite" / "condor.yaml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        render_submit_description(load_profile(path.parent), example_jobs(1))
    assert str(path) in str(error.value) or "project_name" in str(error.value)


def write_proxy(path: Path, hours: float, now: datetime = NOW) -> Path:
    """A proxy-like file: a certificate valid for ``hours`` from ``now``, its key, an issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridtrain test proxy")])

    def certificate(until: datetime) -> bytes:
        built = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=10))
            .not_valid_after(until)
            .sign(key, hashes.SHA256())
        )
        return built.public_bytes(serialization.Encoding.PEM)

    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    user_cert = certificate(now + timedelta(days=300))
    path.write_bytes(certificate(now + timedelta(hours=hours)) + pem_key + user_cert)
    return path


def test_a_proxy_that_would_expire_before_the_jobs_finish_is_refused(tmp_path: Path) -> None:
    profile = load_profile("cms-connect")  # max_runtime_hours 48
    short = write_proxy(tmp_path / "x509up_short", hours=12)
    assert proxy_expires(short) == NOW + timedelta(hours=12)
    with pytest.raises(CondorError) as error:
        check_proxy(profile, short, now=NOW)
    message = str(error.value)
    assert str(short) in message
    assert "expires in 12.0 h" in message
    assert "(48 h)" in message
    assert "voms-proxy-init --voms cms --valid 192:00" in message

    check_proxy(profile, write_proxy(tmp_path / "x509up_long", hours=100), now=NOW)
    with pytest.raises(CondorError, match="the grid proxy expired"):
        check_proxy(profile, write_proxy(tmp_path / "x509up_old", hours=-1), now=NOW)


def test_a_missing_or_broken_proxy_says_how_to_make_one(tmp_path: Path) -> None:
    profile = load_profile("cms-connect")
    with pytest.raises(CondorError, match="no grid proxy; create one with `voms-proxy-init"):
        check_proxy(profile, tmp_path / "absent", now=NOW)
    (tmp_path / "garbage").write_text("not a certificate\n")
    with pytest.raises(CondorError, match="holds no certificate"):
        check_proxy(profile, tmp_path / "garbage", now=NOW)
    check_proxy(load_profile("osg"), tmp_path / "absent", now=NOW)  # no proxy needed there


def test_gridtrain_submit_refuses_before_submitting_with_a_short_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gridtrain.cli import main

    run = tmp_path / "run"
    run.mkdir()
    for name in ("worker.json", "ps.secret"):
        (run / name).write_text("{}\n")
    proxy = write_proxy(tmp_path / "x509up", hours=-2, now=datetime.now(UTC))
    monkeypatch.setenv("X509_USER_PROXY", str(proxy))
    code = main(["submit", str(run), "--workers", "2", "--profile", "cms-connect",
                 "--address", "10.0.0.5:9600"])  # fmt: skip
    assert code == 2
    assert f"{proxy}: the grid proxy expired" in capsys.readouterr().err
    assert not (run / "condor" / "jobs.json").exists()


@pytest.mark.parametrize(
    ("excluded", "site", "matches"),
    [
        ("", "T2_US_UCSD", True),
        ("T2_US_UCSD", "T2_US_UCSD", False),  # excluded after failures there
        ("T2_US_Purdue,T2_US_UCSD", "T2_US_Wisconsin", True),
        ("T2_US_UCSD", None, True),  # a slot that names no site is not excluded by name
    ],
)
def test_excluded_sites_do_not_match(excluded: str, site: str | None, matches: bool) -> None:
    import classad2

    from gridtrain.condor.submit import htcondor

    profile = load_profile("cms-connect")
    text = render_submit_description(profile, example_jobs(1))
    assert htcondor().Submit(text)["job_machine_attrs"] == "GLIDEIN_CMSSite"
    job = classad2.ClassAd({"GridtrainExcludedSites": excluded})
    slot = classad2.ClassAd(
        {"HAS_SINGULARITY": True, "HAS_CVMFS_cms_cern_ch": True, "HAS_CVMFS_sft_cern_ch": True}
    )
    if site is not None:
        slot["GLIDEIN_CMSSite"] = site
    assert classad2.ExprTree(requirements(profile)).eval(scope=job, target=slot) is matches
