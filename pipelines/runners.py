"""Where `s2f prepare` runs: the Beam runner named by --runner and the options it needs.

DirectRunner   this machine, 2 worker processes by default (--num_workers); run as Beam's
               FnApiRunner (`local_runner`), which Beam's DirectRunner itself falls back to for
               this pipeline when its first choice, the Prism runner, is missing: Beam 2.77's
               DirectRunner downloads Prism, a Go binary, from GitHub at run time; s2f downloads
               nothing
DaskRunner     Beam's Dask runner on a dask.distributed cluster (--beam_arg=--dask_client_address=
               tcp://HOST:PORT); its workers import s2f from their own install, as this machine
               does (the runner ships no code)
any other      a remote service (Dataflow, Flink, Spark: their own --beam_arg options); its workers
               get s2f the way Beam ships code: the project's own setup file (--setup_file, added
               here when s2f runs from its source tree), or what the user passes instead
               (--sdk_container_image, --extra_package, --setup_file)
"""

from __future__ import annotations

import os

DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"
NAMES = {"DaskRunner": DASK}  # Beam knows this runner by its full name only
LOCAL = ("DirectRunner", "InteractiveRunner", "PrismRunner", DASK)  # workers with s2f installed
SHIPPING = ("--setup_file", "--sdk_container_image", "--extra_package", "--extra_packages")


def full_name(runner: str) -> str:
    """--runner as Beam resolves it (the Dask runner by its class path)."""
    return NAMES.get(runner, runner)


def source_setup_file() -> str | None:
    """The project's setup.py when s2f runs from its source tree (a clone, pip install -e), else None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    setup = os.path.join(root, "setup.py")
    found = os.path.isfile(setup) and os.path.isfile(os.path.join(root, "pyproject.toml"))
    return setup if found else None


def local_runner(runner: str, options):
    """The runner instance for the DirectRunner (Beam's FnApiRunner, with the pipeline's options
    provisioned to its workers as the DirectRunner does), None for any other runner (Beam makes it
    from --runner)."""
    if runner != "DirectRunner":
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(provision))


def pipeline_args(
    runner: str, beam_args: list[str], num_workers: int, shards: int, loud: bool
) -> list[str]:
    """The pipeline's options: the user's (--beam_arg) and, where they are silent, ours."""
    runner = full_name(runner)
    args = [f"--runner={runner}", *beam_args]

    def given(option: str) -> bool:
        return any(a.split("=", 1)[0] == option for a in beam_args)

    # A worker's failure comes back as the pipeline's exception (the `s2f` command prints it as one
    # line): its workers' own error logs would tell it again, as tracebacks, unless logging is loud.
    if not given("--default_sdk_harness_log_level"):
        args.append(f"--default_sdk_harness_log_level={'ERROR' if loud else 'CRITICAL'}")
    if runner == "DirectRunner" and not given("--direct_num_workers"):
        args += [f"--direct_num_workers={num_workers}", "--direct_running_mode=multi_processing"]
    if runner == DASK and not given("--dask_npartitions"):
        # a shard per task: the shards spread over the workers, and a lost worker costs only its
        # shards in flight (the scheduler runs them again elsewhere)
        args.append(f"--dask_npartitions={shards}")
    if runner not in LOCAL and not any(given(option) for option in SHIPPING):
        setup = source_setup_file()
        if setup is None:
            raise ValueError(
                f"--runner={runner} runs on remote workers, which need s2f: pass "
                "--beam_arg=--sdk_container_image=IMAGE (an image with s2f installed) or "
                "--beam_arg=--extra_package=s2f-VERSION.tar.gz (BUILD.md, Preparing data at scale)"
            )
        args.append(f"--setup_file={setup}")
    return args
