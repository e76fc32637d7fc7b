"""MLflow tracking with the project's defaults: an embedded sqlite store unless
``MLFLOW_TRACKING_URI`` names a server; every run tagged with its lineage."""
from __future__ import annotations

import contextlib
import os
import subprocess
import warnings
from collections.abc import Iterator

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "hwnas"
# Set by the pipeline flow for a stage's subprocess: the stage's own runs nest
# under the flow's run for that stage.
PARENT_ENV = "HWNAS_MLFLOW_PARENT_RUN_ID"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


# MLflow retries a failed HTTP call for about 4 minutes (7 retries, backoff factor 2) and
# waits 120 s for an answer: a tracking server gone mid-run held each call that long. Ours,
# unless the environment sets them: 3 retries within about 7 s, 30 s for an answer.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _no_answer(uri: str, timeout: float = 5) -> str | None:
    """Why no server accepts a connection at the http(s) ``uri`` now; None if one does."""
    import socket
    from urllib.parse import urlsplit

    try:
        url = urlsplit(uri)
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return None
    except (OSError, ValueError) as err:
        return str(getattr(err, "strerror", None) or err)


def unreachable(err: BaseException | None = None):
    """A ``UserError`` (one line naming the server) when ``err`` came from a tracking server
    that has gone away: it refuses connections now, or ``err`` is MLflow's timeout.
    None otherwise (an SQLite store, or a server that answers). Once the server is found
    gone, this process's further MLflow calls (ending its runs on the way out) fail at once
    instead of retrying."""
    from hwnas.errors import UserError, one_line

    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    reason = _no_answer(uri)
    if reason is None and err is not None and "failed with timeout exception" in str(err):
        reason = f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT')} s"
    if reason is None:
        return None
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    return UserError(f"MLflow tracking server {uri}: unreachable ({one_line(reason, 120)})")


SQLITE_HEADER = b"SQLite format 3\x00"


def check_store(must_exist: bool = False, writable: bool = True) -> str | None:
    """The MLflow store of ``tracking_uri()``, checked before MLflow opens it, so a bad one
    is one line naming it (a ``UserError``), not a SQLAlchemy traceback or minutes of
    retries: an SQLite file must be a readable database (and writable with ``writable``);
    a server must accept a connection within seconds. Returns the SQLite path (None for
    a server)."""
    from pathlib import Path

    from hwnas.errors import UserError

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        if reason := _no_answer(uri):
            raise UserError(f"MLFLOW_TRACKING_URI {uri}: no MLflow server answers ({reason})")
        return None
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        if must_exist:
            raise UserError(f"{path}: no MLflow store here; run the pipeline first or set "
                            "MLFLOW_TRACKING_URI")
        return str(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as err:
        raise UserError(f"{path}: cannot read the MLflow store: {err.strerror}") from None
    if head and head != SQLITE_HEADER:
        raise UserError(f"{path}: not an SQLite database (the MLflow store is damaged); "
                        "move it away or set MLFLOW_TRACKING_URI")
    folder = path.parent if str(path.parent) else Path(".")
    if writable and not (os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
        raise UserError(f"{path}: the MLflow store is read-only (the file or its folder)")
    return str(path)


def git_commit(cwd: str | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=cwd, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _mlflow():
    for key, value in HTTP_DEFAULTS.items():  # before MLflow's first call (its children inherit)
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="sqlalchemy")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


@contextlib.contextmanager
def run(name: str, params: dict | None = None, tags: dict | None = None,
        nested: bool = False, experiment: str = EXPERIMENT) -> Iterator[object]:
    """An MLflow run tagged with the git commit (plus ``tags``); params logged
    flat. The run ends FAILED if the body raises. Outside any active run it nests
    under the pipeline's stage run when the flow started this process. A store that
    cannot be used is a ``UserError`` naming it, before the body runs; a tracking server
    gone while it runs, a ``UserError`` naming the server (``unreachable``)."""
    from hwnas.errors import UserError, one_line

    store = check_store()
    mlflow = _mlflow()
    all_tags = {"git_commit": git_commit(), **(tags or {})}
    parent = None if nested or mlflow.active_run() else os.environ.get(PARENT_ENV)
    try:
        mlflow.set_experiment(experiment)
        started = mlflow.start_run(run_name=name, nested=nested, tags=all_tags,
                                   parent_run_id=parent)
    except Exception as err:  # MlflowException, SQLAlchemy's errors (a locked database)...
        raise UserError(f"{store or tracking_uri()}: cannot start an MLflow run: "
                        f"{one_line(getattr(err, 'message', None) or err, 200)}") from None
    try:  # a server gone mid-run: one line naming it, not MLflow's traceback
        with started as active:
            try:
                if params:
                    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                yield active
            except Exception as err:
                if not isinstance(err, UserError):
                    unreachable(err)  # if gone, ending the run below fails at once
                raise
    except UserError:
        raise
    except Exception as err:
        if gone := unreachable(err):
            raise gone from None
        raise


def stage_tags(stage: str, spec_hash: str | None = None) -> dict[str, str]:
    """Tags of a stage's own runs. The hashes of its inputs and outputs are added by the
    pipeline once ``dvc repro`` has written them to dvc.lock (``hwnas.lineage``; read
    here, they would be the previous run's)."""
    return {"stage": stage, **({"hardware_spec_hash": spec_hash} if spec_hash else {})}


def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Log the numeric entries of ``metrics`` to the active run."""
    mlflow = _mlflow()
    numeric = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(numeric, step=step)


def close_if_running(run_id: str | None) -> None:
    """A SIGKILLed run stays RUNNING in MLflow; mark it KILLED when its work resumes."""
    if not run_id:
        return
    try:
        client = _mlflow().MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
    except Exception:  # tracking is lineage, never a reason to fail the work
        pass


FINGERPRINT_TAG = "search_fingerprint"


def _candidate_runs(client, experiment_id: str, fingerprint: str) -> list:
    """Every run of this search's candidates (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=5000, page_token=token,
                                  filter_string=f"tags.{FINGERPRINT_TAG} = '{fingerprint}'")
        runs += [r for r in page if "trial" in r.data.tags]
        token = page.token
        if not token:
            return runs


def log_candidates(df, parent_run_id: str, fingerprint: str,
                   chosen: dict[str, str | None] | None = None) -> int:
    """One child run per search candidate (params: the architecture string; metrics:
    score, latency, memory; tags: trial, git commit, the search's ``fingerprint``),
    created in batches through the client, for the candidates no earlier run of the
    same search logged: a resumed or repeated search adds only its new ones. A run left
    unfinished by a kill, or holding another network for its trial, is replaced. Then
    the candidate run of each chosen network (its first trial) is tagged
    ``chosen=<name>`` (names comma-joined when one network is chosen twice) and the tag
    leaves runs no longer chosen. Returns how many runs were created."""
    import time

    from mlflow.entities import Metric, Param

    client = _mlflow().MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    arch_of = dict(zip(df["trial"].astype(int), df["arch"]))
    logged = {}  # trial -> run
    for r in _candidate_runs(client, exp, fingerprint):
        trial = int(r.data.tags["trial"])
        if r.info.status == "FINISHED" and r.data.params.get("arch") == arch_of.get(trial):
            logged[trial] = r
        else:
            client.delete_run(r.info.run_id)
    commit, now = git_commit(), int(time.time() * 1000)
    ids = {t: r.info.run_id for t, r in logged.items()}
    tags = {t: r.data.tags.get("chosen") for t, r in logged.items()}
    for r in df[~df["trial"].isin(list(logged))].itertuples(index=False):
        run = client.create_run(exp, run_name=f"candidate-{r.trial}", tags={
            "mlflow.parentRunId": parent_run_id, "git_commit": commit,
            FINGERPRINT_TAG: fingerprint, "trial": str(r.trial),
            "pareto": str(bool(r.pareto)), "feasible": str(bool(r.feasible))})
        client.log_batch(run.info.run_id,
                         metrics=[Metric(k, float(getattr(r, k)), now, 0)
                                  for k in ("score", "latency_ms", "memory_bytes")],
                         params=[Param("arch", r.arch)])
        client.set_terminated(run.info.run_id)
        ids[int(r.trial)], tags[int(r.trial)] = run.info.run_id, None
    want: dict[int, str] = {}
    for name, arch in (chosen or {}).items():
        trials = df.loc[df["arch"] == arch, "trial"]
        if arch is not None and len(trials):
            t = int(trials.min())
            want[t] = f"{want[t]},{name}" if t in want else name
    for trial, run_id in ids.items():
        if want.get(trial) != tags[trial]:
            if trial in want:
                client.set_tag(run_id, "chosen", want[trial])
            else:
                client.delete_tag(run_id, "chosen")
    return len(ids) - len(logged)


def log_artifacts(folder, names, log=print) -> None:
    """Files of ``folder`` as artifacts of the active run: a convenience, so a failure
    is reported and the work goes on (the lineage tags are already logged)."""
    try:
        mlflow = _mlflow()
        for name in names:
            mlflow.log_artifact(str(folder / name))
    except Exception as err:
        log(f"note: could not log artifacts to MLflow: {err}")
