"""The Training tab's runs: a request checked (who may train, the page's limits, its objective and prompts), its run
folder reserved, then queued (app.training_jobs.TrainingQueue: one at a time, in a background thread, on its own
model copy, so generation keeps working while it trains); its adapter joins the store when it is done.

    >>> training = TrainingService(config, store, torch.device("cpu"))                     # doctest: +SKIP
    >>> training.start(TrainRequest(task="sentiment", budget="steps", amount=2), owner="me")["state"]   # doctest: +SKIP
    'queued'
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from ipa.errors import UserError
from ipa.rewards.objective import Objective
from ipa.rewards.preference import PreferenceModel
from ipa.tasks import get_task
from ipa.tasks.data import DataError, load_inputs
from ipa.tasks.objective import PROMPT_SETS, load_objective, objective_inputs
from app.adapter_store import TRAINED_HERE, AdapterStore, public_errors
from app.config import AppConfig, ServiceError
from app.objective_form import pasted_prompts, uploaded_prompts, write_prompts
from app.training_jobs import TrainingJob, TrainingLimits, TrainingQueue, TrainRequest, ZeroGpuTrain, training_limits


def _train(*args, **kwargs):
    from ipa.training.loop import train  # imported here: the training loop is only needed once a run starts

    return train(*args, **kwargs)


class TrainingService:
    """The page's training runs: start, stop and the status of one run a browser session, in one queue.

    queue: the queue of runs (by default one that trains with ipa.training.loop, in chunks of GPU calls on a ZeroGPU
    Space), whose finished adapters join `store` and whose runs removed for the disk budget leave it."""

    def __init__(self, config: AppConfig, store: AdapterStore, device: torch.device | str, zero_gpu: bool = False,
                 queue: TrainingQueue | None = None):
        self.config = config
        self.store = store
        self.device = torch.device(device)
        self.zero_gpu = zero_gpu
        """A ZeroGPU Space: a run trains in chunks of GPU calls (app.training_jobs.ZeroGpuTrain)."""
        train = ZeroGpuTrain(user_errors=(UserError,)) if zero_gpu else _train
        self.queue = queue or TrainingQueue(train, self._finished, store.remove_adapter, UserError, Path(config.runs_dir),
                                            config.runs_disk_mb, config.max_waiting_runs)
        store.in_use = self.in_use

    @property
    def has_gpu(self) -> bool:
        """Whether the models run on a GPU: this process's device, or ZeroGPU's calls."""
        return self.device.type == "cuda" or self.zero_gpu

    def defaults(self) -> TrainRequest:
        """Defaults for the Training tab: about 2 minutes with a tiny batch on a CPU, 5 minutes on a GPU."""
        return TrainRequest.for_machine(self.has_gpu)

    @property
    def limits(self) -> TrainingLimits:
        """The largest run the page accepts: conservative when others can reach the page (AppConfig.training_limits)."""
        return training_limits(self.config.training_limits, self.config.shared)

    @property
    def jobs(self) -> list[TrainingJob]:
        """Every run of this process, in the order they were queued."""
        return self.queue.jobs

    @property
    def job(self) -> TrainingJob | None:
        """The latest training job (queued, running or finished), or None before the first."""
        return self.jobs[-1] if self.jobs else None

    def in_use(self, name: str) -> bool:
        """Whether a run queued or training makes the adapter of this name."""
        return any(job.name == name and job.active for job in self.jobs)

    @public_errors
    def start(self, request: TrainRequest, owner: str | None = None, local: bool = True) -> dict:
        """Queue a run (it starts when the runs ahead of it are done) and return its first snapshot.

        owner: the browser session (one run waiting or running a session; only it may stop the run).
        local: whether the request comes from a browser on this machine (AppConfig.training = 'local' needs it)."""
        self.store.check_may_change(local, "train")
        objective = None
        if request.objective is not None:  # the page's own objective (page_objective), never a file it names
            objective = Objective.from_dict(request.objective)
            if objective.prompts and objective.prompts not in PROMPT_SETS:
                raise ServiceError(f"An objective trained from the page takes one of the prompt sets {', '.join(PROMPT_SETS)}, "
                                   f"not {objective.prompts!r}.")
            for block in objective.blocks:  # a class preference that was never learned fails now, not in the run
                if block.reward == "preference":
                    PreferenceModel.load(block.params["model"])
        else:
            get_task(request.task)
        pasted = pasted_prompts(request.prompts_text, self.config.max_input_chars) if request.prompts_text.strip() else None
        if request.prompts_file:
            if pasted:
                raise ServiceError("Paste prompts or upload a file of them, not both: clear one.")
            pasted = uploaded_prompts(request.prompts_file, self.config.max_input_chars)
        if pasted and objective is None:
            raise ServiceError(f"{'Pasted' if request.prompts_text.strip() else 'Uploaded'} prompts are for your own "
                               "objective: a task trains on its own data.")
        request.check(self.limits)  # before a folder is made
        stem = f"{objective.name if objective else request.task}-{request.algo}"
        name, run_dir = self.store.reserve_run_folder(lambda k: f"{stem}-{k}")
        preset = self.config.models.chosen
        approx = preset.adapter_model if preset.adapter_model != preset.base else ""
        # On a ZeroGPU Space the run's chunks train inside GPU calls (ZeroGpuTrain): "auto" finds the GPU there.
        device = "auto" if self.zero_gpu else str(self.device)
        objective_file = run_dir / "objective.json"
        try:
            if objective:
                if pasted:  # beside objective.json, which names it (a relative file is read from the objective's folder)
                    objective = dataclasses.replace(objective, prompts=write_prompts(run_dir, pasted))
                objective.save(objective_file)
            config = request.to_config(out=str(run_dir), name=name, device=device, base=preset.base, approx_base=approx,
                                       limits=self.limits, objective_file=str(objective_file) if objective else "")
            try:  # fail now, not in the thread, when the training data is missing
                if pasted:  # both parts of the split must hold prompts
                    for split in ("train", "eval"):
                        objective_inputs(load_objective(objective_file), split=split, limit=1)
                elif objective:
                    objective_inputs(objective, split="train", limit=1)
                else:
                    load_inputs(request.task, None, split="train", limit=1)
            except DataError as err:
                if pasted:  # the server's folders are not the user's business
                    mine = f"Your uploaded prompts ({Path(request.prompts_file).name})" if request.prompts_file else "Your pasted prompts"
                    raise ServiceError(self.store.public(str(err), {run_dir / objective.prompts: mine})) from None
                raise ServiceError(f"There is no training data for this {'objective' if objective else 'task'} on this machine "
                                   f"({err}) Point $IPA_DATA_DIR at the project's data folder.") from None
            return self.queue.submit(TrainingJob(name=name, request=request, config=config, owner=owner))
        except BaseException:  # nothing was queued: the reserved folder goes
            shutil.rmtree(run_dir, ignore_errors=True)
            raise

    def _finished(self, job: TrainingJob, adapter_dir: Path) -> None:
        self.store.add_adapter(job.name, adapter_dir, TRAINED_HERE)

    def stop(self, owner: str | None = None) -> dict:
        """Stop this session's run: a waiting one leaves the queue; a running one stops within seconds, then
        evaluates and saves what it has learned."""
        return self.queue.stop(owner)

    def status(self, owner: str | None = None) -> dict:
        """This session's latest run, else the running one, else the last; {'state': 'idle'} before the first. Its
        error (a run's failure quotes what failed) names no path of the server."""
        status = self.queue.status(owner)
        return {**status, "error": self.store.public(status["error"])} if status.get("error") else status

    def close(self, timeout: float = 120.0) -> None:
        """Cancel the waiting runs, stop the running one and wait for it (tests and shutdown)."""
        self.queue.close(timeout)
