"""The KerasTuner side of the search (src.tune): the CNN as a hypermodel trained as an
ensemble member is, and the tuners with what this package adds to each: per-trial seeds,
time-based trials, the metrics and hold-out probabilities a trial keeps, the progress
line and the repairs a killed search needs on reload.
"""

from __future__ import annotations

import errno
import io
import time
from collections.abc import Callable
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.src.distribute import utils as distribute_utils
from keras_tuner.src.engine.metrics_tracking import MetricsTracker

from src import calibrate, search_chief
from src.config import Config
from src.errors import DataError, ctrl_c_inside
from src.model import (
    build_cnn,
    clear_session,
    define_search_space,
    predict,
    steps_per_epoch,
    use_precision,
)
from src.model import fit as fit_model
from src.search_ensemble import HOLDOUT_PROBS, holdout_log_loss
from src.search_results import COMPLETED, OBJECTIVE, network_values
from src.util import WRITABLE, describe_os_error, format_duration, write_atomically

HYPERBAND_FACTOR = 3


class CNNHyperModel(kt.HyperModel):
    """src.model's CNN as a KerasTuner hypermodel, trained as an ensemble member is.

    A trial's learning rate warms up over its first epoch, then follows a cosine
    decay to its last epoch (src.model.build_cnn, as src.ensemble's fold models):
    self.epochs, or a Hyperband rung's epochs (from the earlier rung's end, whose
    weights it continues). The input pipeline is built inside each trial, so a
    trial's shuffling depends on the seed alone, not on the trials before it.
    """

    def __init__(self, train_images: int, batch_size: int, seed: int, epochs: int,
                 wide: bool = False, precision: str = "float32"):
        super().__init__()
        self.train_images = train_images
        self.batch_size = batch_size
        self.seed = seed
        self.epochs = epochs  # what a Bayesian or random trial trains
        self.wide = wide
        self.precision = precision  # a Keras dtype policy name

    def trial_epochs(self, hp: kt.HyperParameters) -> int:
        """The epochs a trial trains: its Hyperband rung's, else self.epochs."""
        return hp.values.get("tuner/epochs", self.epochs) - hp.values.get("tuner/initial_epoch", 0)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The compiled CNN for one point of the search space, its schedule ending at the
        trial's last epoch."""
        # KerasTuner clears the Keras session before each build, and with it the dtype policy.
        use_precision(self.precision)
        define_search_space(hp, wide=self.wide)  # first: build_cnn's narrow one then adds nothing
        return build_cnn(hp, steps_per_epoch(self.train_images, self.batch_size),
                         self.trial_epochs(hp))

    def fit(self, hp, model, x, y, validation_data, **kwargs) -> keras.callbacks.History:
        """Train on uint8 arrays (x, y) for every epoch of the trial, validating on
        validation_data = (x_val, y_val), as a fold model is trained."""
        x_val, y_val = validation_data
        kwargs.setdefault("epochs", self.epochs)  # Hyperband sets its rung's
        return fit_model(model, x, y, x_val, y_val, batch_size=self.batch_size,
                         seed=self.seed, **kwargs)


def planned_epochs(config: Config) -> list[int]:
    """The epochs each trial trains, in the order the oracle hands trials out (for the ETA);
    time-based trials count 1 each, since each takes the same time."""
    if config.trial_seconds:
        return [1] * config.max_trials
    if config.tuner != "hyperband":
        return [config.tune_epochs] * config.max_trials
    # One Hyperband iteration, bracket by bracket and round by round, as HyperbandOracle runs it.
    oracle = kt.oracles.HyperbandOracle(max_epochs=config.tune_epochs, factor=HYPERBAND_FACTOR)
    plan: list[int] = []
    for bracket in reversed(range(oracle._get_num_brackets())):
        for round_num in range(bracket + 1):
            start = oracle._get_epochs(bracket, round_num - 1) if round_num else 0
            epochs = oracle._get_epochs(bracket, round_num) - start
            plan += [epochs] * oracle._get_size(bracket, round_num)
    return plan


class TrialProgress:
    """The line printed after each trial: trial i of ~n, its time, elapsed, ETA.

    The ETA is this run's seconds per planned epoch times the planned epochs
    left, so Hyperband's long late rounds are not priced like its short first ones.
    """

    def __init__(self, plan: list[int], prefix: str = ""):
        self.plan = plan
        self.prefix = prefix
        self.started = self.trial_started = time.monotonic()
        self.epochs_done = 0

    def trial_begins(self) -> None:
        """Start the clock of one trial."""
        self.trial_started = time.monotonic()

    def trial_ends(self, trial: kt.engine.trial.Trial) -> str:
        """The progress line for a trial that just ended."""
        now = time.monotonic()
        number = int(trial.trial_id) + 1
        self.epochs_done += self.plan[min(number, len(self.plan)) - 1]
        outcome = "done" if trial.status == COMPLETED else trial.status.lower()
        eta = (now - self.started) / self.epochs_done * sum(self.plan[number:])
        return (f"{self.prefix}trial {number} of ~{len(self.plan)} {outcome} in "
                f"{format_duration(now - self.trial_started)}; elapsed "
                f"{format_duration(now - self.started)}, ETA ~{format_duration(eta)}")


def start_with_the_default(oracle: kt.Oracle) -> None:
    """Make the default CNN (DEFAULT_HPARAMS) the first configuration the oracle hands out.

    A short search on a CPU is noisy; starting from the configuration known to
    train well means its top-k holds that one unless a trial beats it.
    """
    sample_at_random = oracle._random_values

    def default_first() -> dict | None:
        # The space declares DEFAULT_HPARAMS as its defaults, so its values are them.
        defaults = dict(oracle.hyperparameters.values)
        if defaults and not oracle._duplicate(defaults):
            return defaults
        return sample_at_random()

    oracle._random_values = default_first


def never_twice(oracle: kt.oracles.BayesianOptimizationOracle) -> None:
    """Make the oracle hand out no network it has already tried.

    KerasTuner's Bayesian oracle returns the optimum of its Gaussian process without
    checking it against the trials so far; fitted on a few noisy trials it proposes the
    same configuration again and again (a seed-42 quick search spent 3 of its 8 trials on
    one network). Its random sampling does check, on a hash of every value; here that
    hash covers only network_values, and a proposal already tried is replaced by a
    random configuration that was not."""
    values_hash = oracle._compute_values_hash
    propose = oracle.populate_space

    def network_hash(values: dict) -> str:
        return values_hash(network_values(values))

    def propose_untried(trial_id: str) -> dict:
        proposal = propose(trial_id)
        if proposal.get("values") and oracle._duplicate(proposal["values"]):
            return oracle._random_populate_space()  # STOPPED when no untried one is left
        return proposal

    oracle._compute_values_hash = network_hash
    oracle.populate_space = propose_untried


def measure_trial_speed(hp: kt.HyperParameters, x: np.ndarray, y: np.ndarray,
                        batch_size: int, seed: int, precision: str) -> float:
    """The training images per second of the network of hp in the dtype policy precision
    on this machine, timed for calibrate.TRIAL_CALIBRATION_SECONDS after a warm-up."""
    use_precision(precision)
    model = build_cnn(hp)
    speed, _ = calibrate.training_speed(model, x, y, batch_size,
                                        calibrate.TRIAL_CALIBRATION_SECONDS, seed)
    clear_session()
    return speed


def timed_epochs(trial_seconds: float, images_per_second: float, train_images: int,
                 most: int) -> int:
    """The whole epochs of train_images that trial_seconds buy at images_per_second:
    at least 1, at most `most`."""
    return int(min(max(trial_seconds * images_per_second // train_images, 1), most))


class FailedTrialWrite(DataError, kt.errors.FatalError):
    """A write in a trial that failed (a full disk, a read-only folder). KerasTuner ends
    the search on a FatalError, where it would go on to the next trial after any other
    error; run_cli prints it, a DataError, on one line."""


# What a failed write says: a full disk, a read-only folder. Any other OSError in a trial
# is a file it could not read (Hyperband loads the checkpoint of the trial it continues).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def trial_os_error(error: OSError, trial_dir: str, project_dir: str) -> FailedTrialWrite:
    """The one line that ends the search for an OSError in a trial: a failed write names
    the trial's folder; a missing or damaged checkpoint of an earlier trial, the search's."""
    if error.errno in WRITE_ERRNOS:
        return FailedTrialWrite(WRITABLE, describe_os_error(error), file=trial_dir)
    return FailedTrialWrite("the search state python -m src.tune saved (an earlier trial's "
                            "checkpoint)", describe_os_error(error), file=project_dir,
                            hint="rerun with --overwrite to start the search over")


class SearchTuner:
    """What this package adds to each KerasTuner tuner.

    Per-trial seeds, time-based trials (trial_seconds > 0: each trial times its
    network, then trains the epochs those seconds buy, at most most_epochs), the
    metrics a trial reports, the progress line, and two repairs when a killed
    search is reloaded.
    """

    def __init__(self, hypermodel: CNNHyperModel, *, seed: int, progress: TrialProgress,
                 trial_seconds: float = 0.0, most_epochs: int = 1,
                 after_trial: Callable[[], None] | None = None, **kwargs):
        self.trial_seed = seed
        self.progress = progress
        self.after_trial = after_trial
        self.trial_seconds = trial_seconds
        self.most_epochs = most_epochs
        super().__init__(hypermodel, seed=seed + 1, **kwargs)  # KerasTuner reads seed 0 as "none"
        if isinstance(self.oracle, kt.Oracle):  # not a worker's client of the chief's oracle
            start_with_the_default(self.oracle)

    def search(self, *fit_args, **fit_kwargs) -> None:
        """KerasTuner's search; a chief serves its workers with search_chief.serve, which
        also ends when trials fail in a row."""
        if not distribute_utils.is_chief_oracle():
            return super().search(*fit_args, **fit_kwargs)
        self.oracle.verbose = fit_kwargs.get("verbose", self.oracle.verbose)
        self.save()
        search_chief.serve(self.oracle)

    def run_trial(self, trial, x, y, validation_data, **kwargs) -> dict[str, float]:
        """Train one configuration for every epoch of its schedule; report its last epoch's
        hold-out log-loss (the objective), val_accuracy and val_loss, its epochs (a
        Hyperband rung's include the earlier rungs'), its size and its training seconds;
        timed, its network's images per second."""
        try:
            return self._run_trial(trial, x, y, validation_data, **kwargs)
        except SystemError as error:  # KerasTuner would count it as a failed trial
            if interrupt := ctrl_c_inside(error):
                raise interrupt from None
            raise

    def _run_trial(self, trial, x, y, validation_data, **kwargs) -> dict[str, float]:
        measured = self._time_the_network(trial, x, y) if self.trial_seconds else {}
        # A seed per trial: a resumed search trains each trial as an unbroken one does.
        keras.utils.set_random_seed(self.trial_seed + int(trial.trial_id))
        started = time.perf_counter()
        try:
            (history,) = super().run_trial(trial, x, y, validation_data=validation_data,
                                           **kwargs)
            seconds = time.perf_counter() - started
            probs = self._keep_last_epoch(trial, history.model, validation_data[0])
        except OSError as error:  # the trial's checkpoint, or (Hyperband) its parent's
            raise trial_os_error(error, self.get_trial_dir(trial.trial_id),
                                 self.project_dir) from None
        logs = history.history
        return {OBJECTIVE: holdout_log_loss(probs, validation_data[1]),
                "val_accuracy": logs["val_accuracy"][-1], "val_loss": logs["val_loss"][-1],
                "epochs": history.epoch[-1] + 1, "params": history.model.count_params(),
                "seconds": round(seconds, 1), **measured}

    def _time_the_network(self, trial, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Measure the trial's network's speed and set the epochs the trial trains."""
        speed = measure_trial_speed(trial.hyperparameters, x, y, self.hypermodel.batch_size,
                                    self.trial_seed, self.hypermodel.precision)
        epochs = timed_epochs(self.trial_seconds, speed, len(x), self.most_epochs)
        self.hypermodel.epochs = epochs
        capped = (f" (the most a trial trains; {self.trial_seconds:g}s would buy more)"
                  if self.trial_seconds * speed // len(x) > epochs
                  else f" in {self.trial_seconds:g}s")
        print(f"{self.progress.prefix}trial {int(trial.trial_id) + 1}: {speed:,.0f} images/s "
              f"on this machine, so {epochs} epoch(s){capped}", flush=True)
        return {"images_per_second": round(speed, 1)}

    def _keep_last_epoch(self, trial, model: keras.Model, x_val: np.ndarray) -> np.ndarray:
        """Save what the trial's last epoch, the one it is scored by, left: its weights as
        its checkpoint, so that a Hyperband trial continuing it starts from there
        (KerasTuner's SaveBestEpoch keeps the best epoch's), and its hold-out
        probabilities, to score it by and choose the ensemble from; return those."""
        # _get_checkpoint_fname is KerasTuner's private name for the file Hyperband loads.
        model.save_weights(self._get_checkpoint_fname(trial.trial_id))
        probs = predict(model, x_val)
        saved = io.BytesIO()
        np.save(saved, probs)
        try:
            write_atomically(Path(self.get_trial_dir(trial.trial_id)) / HOLDOUT_PROBS,
                             saved.getvalue())
        except DataError as error:  # a full disk fails every trial: end the search on it
            raise FailedTrialWrite(error.expected, error.found, file=error.file) from None
        return probs

    def on_trial_begin(self, trial) -> None:
        """Start the trial's clock."""
        super().on_trial_begin(trial)
        self.progress.trial_begins()

    def on_trial_end(self, trial) -> None:
        """Report the trial to the oracle, save, run after_trial, then print the progress
        line."""
        super().on_trial_end(trial)
        if self.after_trial is not None:
            self.after_trial()
        print(self.progress.trial_ends(trial), flush=True)

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0) -> None:
        """Nothing to do: this search has no TensorBoard callback.

        KerasTuner's version imports tensorboard in every trial, callback or not,
        and TensorFlow no longer installs it: every trial would fail.
        """

    def reload(self) -> None:
        """Reload a search, repairing what a kill between two of KerasTuner's writes leaves."""
        super().reload()
        oracle = self.oracle
        # Killed after a new trial's file was written but before the oracle's state was:
        # the saved oracle never handed that trial out, so forget it (its id is reused).
        for trial_id in [t for t in oracle.trials if t not in oracle.start_order]:
            del oracle.trials[trial_id]
        # Killed after a trial's end was written but before the oracle dropped it from its
        # running trials: KerasTuner would train that finished trial again.
        oracle._retry_queue = [t for t in oracle._retry_queue
                               if oracle.trials[t].status != COMPLETED]
        # Killed after a trial reported its scores but before it ended: it trains again from
        # its start, scored on that run alone (KerasTuner would average the two runs).
        for trial_id in oracle._retry_queue:
            oracle.trials[trial_id].metrics = MetricsTracker()
            oracle.trials[trial_id].score = None


class HyperbandTuner(SearchTuner, kt.Hyperband):
    """Hyperband with this package's seeds, metrics, progress and resume repairs."""


class BayesianTuner(SearchTuner, kt.BayesianOptimization):
    """Bayesian optimisation with this package's seeds, metrics, progress and resume repairs,
    and no network trained twice."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.oracle, kt.Oracle):  # not a worker's client of the chief's oracle
            never_twice(self.oracle)


class RandomTuner(SearchTuner, kt.RandomSearch):
    """Random search with this package's seeds, metrics, progress and resume repairs."""
