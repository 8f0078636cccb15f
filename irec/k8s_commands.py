"""``irec deploy render|apply|status``, ``irec retrain submit|status`` and ``irec rollout``
(``irec retrain run``, the local retraining, is in ``irec.retrain_commands``).

Each renders charts/irec with the values given (``--profile``, ``-f``, ``--set``, as Helm
takes them), validates the objects against the Kubernetes and KubeRay schemas and the KubeRay
operator's own rules (irec.k8s.validate), and then either
prints them (``--dry-run``, or ``render``) or sends them with the ``kubernetes`` client.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from irec.console import fail
from irec.retrain_commands import retrain_run

deploy_app = typer.Typer(help="Render, apply and watch the Helm chart's objects.",
                         no_args_is_help=True)
retrain_app = typer.Typer(help="Retraining: here (run) or as KubeRay RayJobs (submit, status).",
                          no_args_is_help=True)

ProfileOpt = Annotated[list[str] | None, typer.Option(
    "--profile", "-p", help="charts/irec/profiles/<name>.yaml (cpu, gpu, existing-redis, "
    "production); repeat to layer.")]
ValuesOpt = Annotated[list[Path] | None, typer.Option(
    "--values", "-f", help="Values file, as `helm -f`; repeat to layer.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="key.path=value, as `helm --set` (the value is read as YAML).")]
ReleaseOpt = Annotated[str, typer.Option(help="Helm release name.")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Kubernetes namespace.")]
ContextOpt = Annotated[str | None, typer.Option(help="kubeconfig context (default: current).")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Print the objects that would be sent, validated; send nothing.")]


def _values(profile: list[str] | None, files: list[Path] | None,
            sets: list[str] | None) -> dict:
    from irec.k8s.render import ValuesError, load_values, merge_values, profile_values

    try:
        values: dict = {}
        for name in profile or []:
            values = merge_values(values, profile_values(name))
        values = merge_values(values, load_values(*(files or [])))
        for item in sets or []:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ValuesError(f"--set {item!r}: expected key.path=value")
            nested: dict = yaml.safe_load(raw) if raw else ""
            for part in reversed(key.split(".")):
                nested = {part: nested}
            values = merge_values(values, nested)
        return values
    except (ValuesError, FileNotFoundError, yaml.YAMLError) as exc:
        fail(str(exc))


def _checked(build) -> list[dict]:
    """Objects from ``build()``, or exit with the chart's, the schemas' or the operator's
    complaint."""
    from irec.k8s.render import RenderError, ValuesError, validate

    try:
        objects = build()
    except (ValuesError, RenderError) as exc:
        fail(str(exc))
    errors = validate(objects)
    if errors:
        fail("rendered objects fail validation (Kubernetes and KubeRay schemas, KubeRay "
             "operator rules):\n  " + "\n  ".join(errors))
    return objects


def _print(objects: list[dict], output: Path | None = None) -> None:
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        typer.echo(f"wrote {len(objects)} objects to {output}", err=True)


def _connect(context: str | None):
    from irec.k8s.cluster import ClusterError, connect

    try:
        return connect(context)
    except ClusterError as exc:
        fail(str(exc))


def _log(line: str) -> None:
    typer.echo(line, err=True)


@deploy_app.command("render")
def deploy_render(profile: ProfileOpt = None, values: ValuesOpt = None, set_: SetOpt = None,
                  release: ReleaseOpt = "irec", namespace: NamespaceOpt = "irec",
                  output: Annotated[Path | None, typer.Option("-o", help="Write here.")] = None
                  ) -> None:
    """Render the chart (as `helm template`), validate every object, print them."""
    from irec.k8s.ops import deploy_objects

    given = _values(profile, values, set_)
    _print(_checked(lambda: deploy_objects(given, release=release, namespace=namespace)),
           output)


@deploy_app.command("apply")
def deploy_apply(profile: ProfileOpt = None, values: ValuesOpt = None, set_: SetOpt = None,
                 release: ReleaseOpt = "irec", namespace: NamespaceOpt = "irec",
                 context: ContextOpt = None, dry_run: DryRunOpt = False) -> None:
    """Server-side apply the release's objects (one-off hook Jobs only when absent)."""
    from irec.k8s.cluster import ClusterError, apply
    from irec.k8s.ops import deploy_objects

    given = _values(profile, values, set_)
    objects = _checked(lambda: deploy_objects(given, release=release, namespace=namespace))
    if dry_run:
        _print(objects)
        return
    api = _connect(context)
    _log(f"deploy: applying {len(objects)} objects of release {release} to {namespace}")
    try:
        apply(api, objects, _log)
    except ClusterError as exc:
        fail(str(exc))
    _log(f"deploy: done; watch with `irec deploy status -n {namespace} --release {release}`")


@deploy_app.command("status")
def deploy_status(release: ReleaseOpt = "irec", namespace: NamespaceOpt = "irec",
                  context: ContextOpt = None) -> None:
    """One line per workload of the release: RayService app status, readiness, schedules."""
    from irec.k8s.cluster import ClusterError, status_lines

    api = _connect(context)
    try:
        for line in status_lines(api, release, namespace):
            typer.echo(line)
    except ClusterError as exc:
        fail(str(exc))


@retrain_app.command("submit")
def retrain_submit(profile: ProfileOpt = None, values: ValuesOpt = None, set_: SetOpt = None,
                   release: ReleaseOpt = "irec", namespace: NamespaceOpt = "irec",
                   name: Annotated[str | None, typer.Option(
                       help="RayJob name (default <release>-retrain-<UTC time>).")] = None,
                   follow: Annotated[bool, typer.Option(
                       help="Wait for the run to finish, printing its progress.")] = True,
                   timeout: Annotated[float, typer.Option(help="Seconds to follow.")] = 21600,
                   poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 10,
                   context: ContextOpt = None, dry_run: DryRunOpt = False) -> None:
    """Create a retraining RayJob from the chart's retraining spec and follow it."""
    from irec.k8s.cluster import ClusterError, follow_job, submit_job
    from irec.k8s.ops import job_state, retrain_job, run_name

    given = _values(profile, values, set_)
    job_name = name or run_name(release)
    job = _checked(lambda: [retrain_job(given, name=job_name, release=release,
                                        namespace=namespace)])[0]
    if dry_run:
        _print([job])
        return
    api = _connect(context)
    try:
        submit_job(api, job)
        _log(f"retrain: submitted RayJob/{job_name} in {namespace}")
        if not follow:
            return
        final = follow_job(api, job_name, namespace, timeout_s=timeout, poll_s=poll, log=_log)
    except ClusterError as exc:
        fail(str(exc))
    deployment, ray_status, _ = job_state(final)
    message = (final.get("status") or {}).get("message", "")
    _log(f"retrain: RayJob/{job_name} finished: {deployment} (job {ray_status}) {message}")
    if ray_status != "SUCCEEDED":
        raise typer.Exit(1)


@retrain_app.command("status")
def retrain_status(name: Annotated[str | None, typer.Argument(
                       help="A RayJob; default: every retraining run of the release.")] = None,
                   release: ReleaseOpt = "irec", namespace: NamespaceOpt = "irec",
                   context: ContextOpt = None) -> None:
    """The state of retraining runs (RayJobs)."""
    from irec.k8s.cluster import RAY, ClusterError, get, release_objects
    from irec.k8s.ops import summarize

    api = _connect(context)
    try:
        jobs = ([get(api, RAY, "RayJob", name, namespace)] if name else
                [o for o in release_objects(api, release, namespace) if o["kind"] == "RayJob"])
    except ClusterError as exc:
        fail(str(exc))
    for job in jobs:
        typer.echo(summarize(job))
    if not jobs:
        typer.echo(f"no retraining runs of release {release!r} in {namespace!r}")


def rollout(model_tag: Annotated[str | None, typer.Option(
                help="BentoML tag (interest:<version>) or 'champion'.")] = None,
            local: Annotated[bool, typer.Option(
                "--local", help="Roll the Serve app of the local Ray cluster (`irec serve`), "
                                "not the RayService.")] = False,
            undo: Annotated[bool, typer.Option(
                "--undo", help="Back to the version served before the last rollout.")] = False,
            profile: ProfileOpt = None, values: ValuesOpt = None, set_: SetOpt = None,
            release: ReleaseOpt = "irec", namespace: NamespaceOpt = "irec",
            app: Annotated[str, typer.Option(help="Serve application name.")] = "irec",
            timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 600,
            poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 5,
            context: ContextOpt = None, dry_run: DryRunOpt = False) -> None:
    """Point the serving stages at a model tag and wait for RUNNING.

    Only the stages' ``user_config`` changes, so replicas reconfigure in place (no restart,
    no lost request). --local resolves 'champion' to a concrete tag, verifies the model against
    the app's feature store before touching the app, and puts the previous version back if
    the app does not run the new one in time (ray_apps/rollout.py). On the RayService the
    previous version goes back on DEPLOY_FAILED or a timeout; a moving tag (champion,
    :latest) is refused there, and --undo returns to the tag the last rollout recorded on
    it. With --dry-run: the chart's RayService with the new tag.
    """
    if local:
        _rollout_local(model_tag, undo, app, timeout)
        return
    if undo == (model_tag is not None):
        fail("give exactly one of --model-tag or --undo")
    if model_tag is not None and (model_tag == "champion" or model_tag.endswith(":latest")):
        fail(f"--model-tag {model_tag} moves: each replica would resolve it by itself. Give a "
             "version (interest:<version>); the retraining RayJob resolves and rolls out the "
             "champion itself with retraining.rollout.enabled")
    from irec.k8s.cluster import ClusterError, previous_tag
    from irec.k8s.cluster import rollout as roll
    from irec.k8s.ops import deploy_objects, rolled_out

    given = _values(profile, values, set_)
    services = [o for o in _checked(lambda: deploy_objects(given, release=release,
                                                           namespace=namespace))
                if o["kind"] == "RayService"]
    if not services:
        fail("the chart renders no RayService with these values (serving.enabled is false?)")
    service = services[0]
    if dry_run:
        if undo:
            fail("--undo reads the live RayService: no --dry-run")
        try:
            updated = rolled_out(service, model_tag, app)
        except KeyError as exc:
            fail(str(exc))
        _print(_checked(lambda: [updated]))
        return
    api = _connect(context)
    name = service["metadata"]["name"]
    try:
        model_tag = model_tag or previous_tag(api, name, namespace)
        _log(f"rollout: RayService/{name} in {namespace} -> {model_tag}")
        roll(api, name, namespace, model_tag, app=app, timeout_s=timeout, poll_s=poll,
             log=_log)
    except (ClusterError, KeyError) as exc:
        fail(str(exc))
    _log(f"rollout: RayService/{name} runs {model_tag}")


def _rollout_local(model_tag: str | None, undo: bool, app: str, timeout: float) -> None:
    import ray

    from ray_apps import rollout as local

    if undo == (model_tag is not None):
        fail("give exactly one of --model-tag or --undo")
    ray.init(address="auto", ignore_reinit_error=True, log_to_driver=False,
             configure_logging=False)
    _log(f"rollout: {app} on the local Ray cluster -> {model_tag or 'the previous version'}")
    try:
        rolled = (local.undo(app, timeout) if undo else
                  local.rollout(model_tag, app, timeout))
    except (local.RolloutRefused, local.RolloutFailed) as exc:
        fail(f"rollout: {exc}")
    _log(f"rollout: {app} runs {rolled.current} (was {rolled.previous}; "
         f"{rolled.seconds:.0f}s)")


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")
    retrain_app.command("run")(retrain_run)
    app.add_typer(retrain_app, name="retrain")
    app.command("rollout")(rollout)
