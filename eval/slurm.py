"""
The SLURM launcher of eval/sweep.py (`--launcher slurm`): every run of a sweep or ladder is one task of a job array,
submitted through submitit. sweep.py decides what runs (the grid; which runs are kept, resumed or started; the
report); this file decides where: the sbatch options, their check against the cluster before anything is submitted,
the submission, the wait, and what a task does on its node.

    python eval/sweep.py --launcher slurm --slurm_partition gpu --slurm_time 4:00:00 --strategies uniform,llr \
        --lrs 1e-4:1e-2:7 --seeds 3 -- configs/llama_135m.py

A task runs its run as the local launcher does (run_dirs.Launcher: the script's output in <run>/stdout.txt, the run's
state in <run>/sweep.json), from its ckpt.pt when it has one; a run on more than one GPU runs under torchrun. SLURM
signals the whole job step (SIGUSR1 WARN_S seconds before the time limit; SIGTERM on preemption or `scontrol
requeue`): train.py writes its checkpoint and exits with checkpoint.REQUEUE_EXIT, and the task requeues its job,
which starts again from that checkpoint. submitit's files and each task's own log go to <out>/slurm/; which job
holds which run, to <out>/slurm/jobs.json. submitit is optional: it is imported only when a sweep submits.
"""
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from tqdm import tqdm

from eval import runs as run_dirs, verdict  # the run directories' state and the local launcher

WARN_S = 90  # SLURM's SIGUSR1 comes this long before a job's time limit: time to finish a step and write a checkpoint
POLL_S = 10.0  # seconds between two looks at the queue
OWN = {"partition": "--slurm_partition", "time": "--slurm_time", "gpus-per-node": "--slurm_gpus_per_run",
       "gpus": "--slurm_gpus_per_run", "gpus-per-task": "--slurm_gpus_per_run", "cpus-per-task": "--slurm_cpus_per_run",
       "account": "--slurm_account", "array": "--slurm_array_parallelism", "nodes": "one node per run",
       "ntasks": "one task per run", "ntasks-per-node": "one task per run", "signal": f"USR1@{WARN_S}, what train.py handles",
       "requeue": "always on", "no-requeue": "requeue on preemption", "output": "<out>/slurm/", "error": "<out>/slurm/",
       "open-mode": "append"}
# the states of a job that will not run again; any other (PREEMPTED and NODE_FAIL too, which a requeue may follow) is
# waited out until it changes or the job leaves the queue (MinJobAge after it ended)
ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "OUT_OF_MEMORY", "TIMEOUT")


# ----------------------------------------------------------------------------------------------
# the options

def parse_time(text):
    """SLURM's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, at least 1."""
    days, dash, rest = text.strip().rpartition("-")
    try:
        parts = [int(x) for x in rest.split(":")]
        d = int(days) if dash else 0
        if len(parts) > 3 or min(parts + [d]) < 0:
            raise ValueError
    except ValueError:
        raise run_dirs.SweepError(f"--slurm_time={text!r}: write minutes, H:MM:SS or D-HH:MM:SS (as sbatch --time)") from None
    if dash:  # D-H, D-H:M, D-H:M:S
        h, m, s = (parts + [0, 0])[:3]
    else:  # M, M:S, H:M:S
        h, m, s = parts if len(parts) == 3 else [0, *parts, 0][:3]
    minutes = d * 1440 + h * 60 + m + math.ceil(s / 60)
    if minutes < 1:
        raise run_dirs.SweepError(f"--slurm_time={text!r}: a job needs at least a minute")
    return minutes


def parse_sbatch(items):
    """['qos=high', 'mem=64G', 'exclusive'] -> {'qos': 'high', 'mem': '64G', 'exclusive': True}; the options this
    launcher sets itself are refused with the argument that sets them."""
    extra = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not key:
            raise run_dirs.SweepError(f"--slurm_sbatch {item!r}: write an sbatch option as KEY=VALUE (qos=high) or KEY (exclusive)")
        if key in OWN:
            raise run_dirs.SweepError(f"--slurm_sbatch {item!r}: the launcher sets --{key} ({OWN[key]})")
        extra[key] = value if eq else True
    return extra


def parameters(a, n):
    """submitit.SlurmExecutor's parameters for an array of n runs (sbatch's option names, '_' for '-')."""
    cpus, gpus = a.slurm_cpus_per_run, a.slurm_gpus_per_run
    params = dict(job_name=os.path.basename(os.path.abspath(a.out)) or "nanolr", time=parse_time(a.slurm_time),
                  partition=a.slurm_partition or None, account=a.slurm_account or None, cpus_per_task=cpus or None,
                  gpus_per_node=gpus or None, array_parallelism=min(n, a.slurm_array_parallelism or n),
                  stderr_to_stdout=True,
                  srun_args=["--cpus-per-task", str(cpus)] if cpus else None,  # srun no longer inherits it (SLURM 22.05)
                  setup=[f"export PYTHONPATH={shlex.quote(run_dirs.ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}"],  # the task imports eval.slurm
                  additional_parameters=dict(signal=f"USR1@{WARN_S}", requeue=True, **parse_sbatch(a.slurm_sbatch)))
    return {k: v for k, v in params.items() if v is not None}


def sbatch_flags(params, n):
    """The sbatch options of the array, as flags (what --plan shows and sbatch --test-only checks)."""
    named = {k: v for k, v in params.items() if k in ("job_name", "time", "partition", "account", "cpus_per_task", "gpus_per_node")}
    options = {**{k.replace("_", "-"): v for k, v in named.items()}, **params["additional_parameters"]}
    options["array"] = f"0-{n - 1}%{params['array_parallelism']}"
    return [f"--{k}" if v is True else f"--{k}={v}" for k, v in sorted(options.items())]


def describe(a, n):
    """The --plan line: the array this sweep would submit now (n runs to run)."""
    if n == 0:
        return "SLURM: nothing to submit"
    params = parameters(a, n)
    return (f"SLURM: one array job of {n} task{'s' if n != 1 else ''}, one run each"
            + (f" under torchrun on {a.slurm_gpus_per_run} GPUs" if a.slurm_gpus_per_run > 1 else "")
            + f"; sbatch {' '.join(shlex.quote(f) for f in sbatch_flags(params, n))}")


def check_cluster(flags):
    """Before anything is written or submitted: a controller that answers, and options it accepts (SLURM's own
    message once, e.g. for a partition that does not exist)."""
    missing = [b for b in ("sbatch", "scontrol", "squeue", "srun") if shutil.which(b) is None]
    if missing:
        raise run_dirs.SweepError(f"--launcher slurm: {', '.join(missing)} not on PATH: run the sweep on a machine of the "
                               "SLURM cluster (a login node)")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=120)
    if ping.returncode != 0 or " UP" not in ping.stdout:
        said = " ".join((ping.stdout + ping.stderr).split("\n")[0].split())
        raise run_dirs.SweepError(f"no SLURM controller reachable ({said}); nothing was submitted")
    test = subprocess.run(["sbatch", "--test-only", *flags, "--wrap=true"], capture_output=True, text=True, timeout=300)
    if test.returncode != 0:
        said = "; ".join(l.strip() for l in (test.stderr + test.stdout).splitlines() if l.strip())
        raise run_dirs.SweepError(f"SLURM refuses the jobs' options ({said}); nothing was submitted")


# ----------------------------------------------------------------------------------------------
# the queue

def queue_states():
    """{job id: state} of this user's jobs in the queue ('123_4' for an array task), or None when squeue fails."""
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", str(os.getuid()), "-o", "%i|%T"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return dict(l.strip().split("|", 1) for l in proc.stdout.splitlines() if "|" in l)


def in_queue(state):
    return state is not None and state not in ENDED


def read_jobs(out):
    return run_dirs.read_json(os.path.join(out, "slurm", "jobs.json")) or {}


def run_states(runs, out):
    """{run directory: 'pending' or 'running'} for the runs whose job is still in the queue (sweep.py --status)."""
    jobs, states = read_jobs(out), queue_states() or {}
    found = {}
    for r in runs:
        state = states.get((jobs.get(os.path.relpath(r["dir"], out)) or {}).get("job"))
        if in_queue(state):
            found[r["dir"]] = "running" if state in ("RUNNING", "COMPLETING", "CONFIGURING") else "pending"
    return found


# ----------------------------------------------------------------------------------------------
# submitting and waiting

def launch(todo, a, out):
    """Submit the runs of todo that no job of an earlier submission still holds, as one array; wait until all their
    jobs have left the queue, printing each result; set every run's status (as run_dirs.Launcher would)."""
    if not todo:
        return
    jobs = read_jobs(out)
    states = (queue_states() or {}) if any(os.path.relpath(r["dir"], out) in jobs for r in todo) else {}
    held = {r["dir"]: jobs[key]["job"] for r in todo for key in [os.path.relpath(r["dir"], out)]
            if key in jobs and in_queue(states.get(jobs[key]["job"]))}
    new = [r for r in todo if r["dir"] not in held]
    if new:
        try:
            import submitit
        except ImportError:
            raise run_dirs.SweepError("--launcher slurm needs the submitit package: pip install submitit") from None
        params = parameters(a, len(new))
        check_cluster(sbatch_flags(params, len(new)))
        for r in new:  # the directories as the jobs will find them: cleared for a fresh start, their arguments recorded
            os.makedirs(r["dir"], exist_ok=True)
            if r["action"] == "fresh":
                run_dirs.clear(r["dir"])
            record = run_dirs.read_json(os.path.join(r["dir"], "sweep.json")) or {}
            run_dirs.write_json(os.path.join(r["dir"], "sweep.json"), dict(args=r["args"], status="submitted",
                                                                         attempts=record.get("attempts", 0), action=r["action"]))
        executor = submitit.SlurmExecutor(folder=os.path.join(out, "slurm"), max_num_timeout=0)
        executor.update_parameters(**params)
        try:
            submitted = executor.map_array(run_task, new, [a.nproc_per_node] * len(new))
        except Exception as e:  # submitit's errors carry sbatch's message
            raise run_dirs.SweepError(f"sbatch failed: {' '.join(str(e).split())}") from None
        for r, job in zip(new, submitted):
            jobs[os.path.relpath(r["dir"], out)] = dict(job=job.job_id, log=str(job.paths.stdout))
            held[r["dir"]] = job.job_id
        run_dirs.write_json(os.path.join(out, "slurm", "jobs.json"), jobs)
        print(f"submitted {len(new)} run{'s' if len(new) > 1 else ''} as job {submitted[0].job_id.split('_')[0]}"
              + (f"; waiting for {len(todo) - len(new)} still in the queue" if len(todo) > len(new) else "")
              + f" (logs in {os.path.relpath(os.path.join(out, 'slurm'))}/)", flush=True)
    else:
        print(f"waiting for {len(todo)} run{'s' if len(todo) > 1 else ''} still in the queue", flush=True)
    wait(todo, held, jobs, out)


def wait(todo, held, jobs, out):
    """Poll the queue until every run's job has left it; then the run's state is read from its directory."""
    left, t0, silent = dict(held), time.time(), 0.0
    bar = tqdm(total=len(todo), unit="run", disable=None)
    try:
        while left:
            states = queue_states()
            if states is None:
                silent += POLL_S
                if silent > 600:
                    raise run_dirs.SweepError("squeue has failed for 10 minutes; the jobs go on: run the same command later to "
                                           "wait for them and write the report")
            else:
                silent = 0.0
                for d in [d for d, job in left.items() if not in_queue(states.get(job))]:
                    run = next(r for r in todo if r["dir"] == d)
                    collect(run, jobs[os.path.relpath(d, out)], time.time() - t0, len(todo) - len(left) + 1, len(todo), bar)
                    del left[d]
                    bar.update()
                running = sum(states.get(job) == "RUNNING" for job in left.values())
                bar.set_postfix_str(f"{running} running, {len(left) - running} pending", refresh=True)
            if left:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        ids = sorted({job.split("_")[0] for job in left.values()})
        raise SystemExit(f"stopped waiting; the jobs go on in SLURM (scancel {' '.join(ids)} stops them). Run the same "
                         "command again to wait for them and write the report, or add --status to see them") from None
    finally:
        bar.close()


def collect(run, job, seconds, k, n, bar):
    """A run whose job has left the queue: its state from its directory; a job that ended without a result fails."""
    run.update(run_dirs.outcome(run))
    record = run_dirs.read_json(os.path.join(run["dir"], "sweep.json")) or {}
    if run["status"] == verdict.PENDING:  # the task wrote no result: it was cancelled, killed, or could not start
        why = "it was preempted and SLURM did not requeue it" if record.get("status") == run_dirs.REQUEUED else \
            "its job ended without a result (cancelled, out of time or memory, or the task could not start)"
        run.update(status=verdict.FAILED, message=why)
        run_dirs.write_json(os.path.join(run["dir"], "sweep.json"), dict(record, status=verdict.FAILED, message=why))
    run.update(rc=record.get("rc"), seconds=record.get("seconds", seconds), job=job["job"], log=job["log"])
    shown = f"{run['final_val_loss']:.4f}" if run["status"] == verdict.FINISHED else \
        f"{run['status'].upper()}: {run.get('message')} (see {run['dir']}/stdout.txt and {job['log']})"
    bar.write(f"[{k}/{n}] {run['label']} lr={run['lr']:g} seed={run['seed']} (job {job['job']}, "
              f"{record.get('attempts', 0)} attempt{'s' if record.get('attempts', 0) != 1 else ''}): {shown}")


# ----------------------------------------------------------------------------------------------
# on the node

def run_task(run, nproc):
    """One array task: the run, on the CPUs and GPUs SLURM gave the job, from its ckpt.pt when it has one; a run
    preempted (it wrote its checkpoint and exited with REQUEUE_EXIT) requeues its job. SLURM signals every process of
    the job step, train.py included; this process only notes the signal and waits for train.py (submitit's own
    handler would requeue at once and end the step while train.py still writes its checkpoint)."""
    signals = []
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda signum, frame: signals.append(signal.Signals(signum).name))
    run["action"] = "resume" if os.path.exists(os.path.join(run["dir"], "ckpt.pt")) else "fresh"
    threads = max(1, int(os.environ.get("SLURM_CPUS_PER_TASK", 1)) // nproc)
    slot = dict(gpus=os.environ.get("CUDA_VISIBLE_DEVICES", ""), threads=threads)
    launcher = run_dirs.Launcher([slot], nproc, run.get("script", "train.py"))
    launcher.total = 1
    run = launcher.launch(run, slot)
    if run["status"] == run_dirs.REQUEUED:
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=120)
        said = " ".join((proc.stdout + proc.stderr).split())
        print(f"requeued job {job}" if proc.returncode == 0 else
              f"scontrol requeue {job}: {said}" + (" (SLURM is requeueing it already)" if "SIGTERM" in signals else ""),
              flush=True)
        sys.exit(run_dirs.REQUEUE_EXIT)  # not a result: submitit runs the task again when the job starts again
    if run["status"] == verdict.FAILED:
        sys.exit(1)
    return run["status"]
