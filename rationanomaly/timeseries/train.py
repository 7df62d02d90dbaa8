"""The training loop of the dynamic-reward agent and its report: warm-up, episodes, greedy validation.

Two modes. `reference` keeps the published code's semantics (notes/dynamic-reward.md section 1) minus its
crashes and leaks: the VAE term as coded (+lambda * error on both actions, VAE on standardised raw
windows applied to MinMax windows that stop before the classified point, z sampled), both-action targets,
next states built from the env's running state, the per-dataset lambda rule, LabelSpreading with its
defaults, the IsolationForest warm-up, margin queries, the last-10% validation. `fixed` changes only what
makes the intrinsic reward meaningful, training match evaluation and the ranking measurable: a VAE on the
agent's own MinMax windows (the classified point included, anomalous windows left out instead of spliced),
an action-dependent intrinsic term, next states of the windows themselves, no previous-action flags (the
reference trains on all-zero flags but evaluates with its own actions in them), and the Q margin as the
score for AU-PR.

Leaks and crashes removed in both modes: the VAE, the IsolationForest and the warm-up see training series
only; no train/test environment aliasing (the warm-up is rewarded like the episodes); labels are numpy
arrays (pandas 3 silently dropped the reference's chained label writes); files in natural order; seeds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from rationanomaly.evaluate import average_precision, binary_metrics, flag_labels, point_adjust
from rationanomaly.io import atomic_path, write_json_atomic
from rationanomaly.timeseries.agent import HIDDEN, LEARNING_RATE, Replay, build_q_network, dqn_update, q_values
from rationanomaly.timeseries.data import Dataset
from rationanomaly.timeseries.labelling import (
    RBF,
    WARM_CONTAMINATION,
    WARM_PER_END,
    fit_isolation_forest,
    margin_query,
    pseudo_label_selection,
    spread_labels,
    warm_up_selection,
)
from rationanomaly.timeseries.reward import (
    A1_LAMBDA,
    INTRINSIC_SCALE,
    SMD_LAMBDA,
    SMD_REWARD,
    UNLABELLED,
    WADI_LAMBDA,
    WADI_REWARD,
    YAHOO_REWARD,
    LambdaRule,
    RewardTable,
    action_intrinsic,
    episode_epsilon,
    extrinsic_rewards,
    linear_epsilon,
    next_lambda,
    reference_intrinsic,
    standardized_scores,
)
from rationanomaly.timeseries.vae import VaeConfig, reconstruction_errors, train_vae
from rationanomaly.timeseries.windows import (
    N_STEPS,
    chained_next_states,
    minmax_scale,
    preceding_windows,
    series_states,
    state_windows,
    true_next_states,
)

logger = logging.getLogger(__name__)

REFERENCE, FIXED = "reference", "fixed"
MODES = (REFERENCE, FIXED)
CHANNELS = ("first", "all")
EPSILON_SCHEDULES = ("steps", "episodes")
CHECKPOINT = "checkpoint.pt"
REPORT, TIMING = "report.json", "timing.json"


@dataclass(frozen=True)
class Settings:
    """Every knob of a run; the defaults are the Yahoo A1 script's (`preset` sets SMD's and WaDi's)."""

    layout: str = "yahoo"
    mode: str = REFERENCE
    seed: int = 0
    episodes: int = 300  # A1 L578
    al_budget: int = 30  # per episode; the run behind the repo's best A1 F1 (.517): (LP 100, AL 30, gamma .92)
    lp_budget: int = 100  # per visit (same run); HEAD calls use (200, 1000|5000|10000, .96), A1 L602-604
    gamma: float = 0.92  # same run; DISCOUNT_FACTOR = 0.5 at A1 L37 is unused
    n_steps: int = N_STEPS  # A1 L52
    reward: RewardTable = YAHOO_REWARD
    lam: LambdaRule = A1_LAMBDA
    validation_ratio: float = 0.9  # A1 L56: series with index >= 0.9 n validate
    channels: str = "all"  # SMD's reference uses column 0 only (env_smd.py L73-75): "first"
    hidden: int = HIDDEN
    learning_rate: float = LEARNING_RATE
    batch_size: int = 256  # A1 L587
    updates_per_episode: int = 10  # A1 L578 (num_epoches)
    target_every: int = 10  # A1 L582: copy when total_t % 10 == 0, i.e. once per episode
    replay_capacity: int = 500_000  # A1 L580
    replay_init: int = 1500  # A1 L581: the warm-up stops at 1,500 transitions
    warm_contamination: float = WARM_CONTAMINATION
    warm_per_end: int = WARM_PER_END
    warm_fit_points: int = 0  # 0 = every training window; SMD fits on <= 10,000 (SMD L321)
    epsilon: str = "steps"  # linspace(1, 0.1, 500k) by update count (A1 L324); WaDi: "episodes"
    vae: VaeConfig = field(default_factory=VaeConfig)
    vae_max_windows: int = 0  # 0 = all normal windows; WaDi samples 200 (notes section 1, WaDi deltas)
    label_spreading: str = RBF  # LabelSpreading() defaults (A1 L328-370); knn for SMD scale
    intrinsic_scale: float = INTRINSIC_SCALE  # fixed mode only
    checkpoint_every: int = 50  # ours: episodes between checkpoints (a resumed run continues from the last)


def preset(layout: str, mode: str = REFERENCE) -> Settings:
    """The reference's constants for a layout: A1 for yahoo, myasp-smd.py for smd, myasp-wadi.py for wadi."""
    base = Settings(layout=layout, mode=mode)
    if layout == "smd":
        return replace(
            base,
            reward=SMD_REWARD,  # SMD L45-48
            lam=SMD_LAMBDA,  # SMD L367, L448
            episodes=100,  # SMD L39
            validation_ratio=0.8,  # SMD L58
            channels="first",  # env_smd.py L73-75
            batch_size=128,  # notes section 1: SMD batch 128
            warm_fit_points=10_000,  # SMD L321
            vae=VaeConfig(epochs=50),  # SMD L555-559
            al_budget=5000,  # (LP 200, AL 5000, .96): the run behind the repository's best SMD F1 (.184)
            lp_budget=200,
            gamma=0.96,
        )
    if layout == "wadi":
        return replace(
            base,
            reward=WADI_REWARD,
            lam=WADI_LAMBDA,  # WaDi L278, L348
            episodes=20,  # notes section 1, WaDi deltas (also gamma, budgets, updates, epsilon, VAE)
            gamma=0.5,
            lp_budget=200,
            al_budget=1000,
            hidden=64,  # WaDi L220
            updates_per_episode=5,
            batch_size=64,
            target_every=5,  # the target is copied every episode
            epsilon="episodes",  # max(0.1, 1 - ep / 20)
            validation_ratio=0.8,  # ours: 4 attack slices train, the last validates
            vae=VaeConfig(hidden=(128,), decoder_hidden=(128,), latent=10, epochs=20),
            vae_max_windows=200,
            replay_capacity=20_000,  # ours: a WaDi state is ~120 channels wide
        )
    return base


def check_settings(settings: Settings) -> None:
    """Raise ValueError on a setting that cannot run, with the flag to change."""
    problems = []
    if settings.mode not in MODES:
        problems.append(f"--mode {settings.mode!r}: choose one of {', '.join(MODES)}")
    if settings.channels not in CHANNELS:
        problems.append(f"--channels {settings.channels!r}: choose one of {', '.join(CHANNELS)}")
    if settings.epsilon not in EPSILON_SCHEDULES:
        problems.append(f"epsilon schedule {settings.epsilon!r}: choose one of {', '.join(EPSILON_SCHEDULES)}")
    for name in ("episodes", "al_budget", "lp_budget"):
        if getattr(settings, name) < 0:
            problems.append(f"--{name} must be >= 0")
    for name in ("batch_size", "replay_init", "checkpoint_every", "updates_per_episode", "target_every"):
        if getattr(settings, name) < 1:
            problems.append(f"--{name} must be >= 1")
    if not 0 < settings.validation_ratio < 1:
        problems.append(f"validation_ratio {settings.validation_ratio} must lie in (0, 1)")
    if problems:
        raise ValueError("; ".join(problems))


def first_validation_index(count: int, ratio: float) -> int:
    """Series with index >= ceil(ratio * count) validate (A1: 67 -> 61 train / 6; A2: 100 -> 90 / 10).

    The reference trained on index <= ratio * n and validated on index >= ratio * n, so with A2 series 90
    was in both sets; here the two sets never meet.
    """
    start = math.ceil(count * ratio - 1e-9)
    if not 1 <= start < count:
        raise ValueError(
            f"{count} series cannot be split at {ratio}: need at least one training and one "
            "validation series (add series or change the ratio)"
        )
    return start


@dataclass(frozen=True, eq=False)
class Prepared:
    """Series as the agent sees them: channel-selected, MinMax-scaled, with their states; training first."""

    names: tuple[str, ...]
    raw: tuple[np.ndarray, ...]
    scaled: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    states: tuple[np.ndarray, ...]
    n_train: int


def select_channels(values: np.ndarray, channels: str) -> np.ndarray:
    """All channels, or only the first (the reference's SMD run reads column 0 of 38)."""
    return values[:, :1] if channels == "first" else values


def prepare(dataset: Dataset, settings: Settings) -> Prepared:
    """Scale and window every series; refuse series too short to classify a single point."""
    short = [s.name for s in dataset.series if s.length <= settings.n_steps + 1]
    if short:
        raise ValueError(
            f"series {short[:3]} have <= {settings.n_steps + 1} points; windows of {settings.n_steps} "
            "need longer series (drop them or use longer ones)"
        )
    raw = tuple(select_channels(s.values, settings.channels) for s in dataset.series)
    scaled = tuple(minmax_scale(v) for v in raw)
    return Prepared(
        names=tuple(s.name for s in dataset.series),
        raw=raw,
        scaled=scaled,
        labels=tuple(s.labels for s in dataset.series),
        states=tuple(series_states(v, settings.n_steps, settings.mode == REFERENCE) for v in scaled),
        n_train=first_validation_index(len(dataset.series), settings.validation_ratio),
    )


def _all_windows(values: np.ndarray, n_steps: int) -> np.ndarray:
    """Every length-n window of an array, flattened time-major [N, n * d] (the reference's load_normal_data)."""
    if len(values) < n_steps:
        return np.zeros((0, n_steps * values.shape[1]), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(values, n_steps, axis=0).transpose(0, 2, 1)
    return view.reshape(len(view), -1).astype(np.float32)


def vae_training_windows(dataset: Dataset, prepared: Prepared, settings: Settings) -> np.ndarray:
    """The VAE's training windows, from training series (Yahoo) or the separate normal data (SMD, WaDi).

    reference: raw values with the anomalous rows deleted (windows splice across the gaps, as the
    reference's `normal-data/` did), standardised per position (A1 L60-75). fixed: the agent's own
    MinMax state windows that hold no anomalous point.
    """
    blocks = []
    if dataset.normal:
        for values in dataset.normal:
            values = select_channels(values, settings.channels)
            blocks.append(
                _all_windows(values if settings.mode == REFERENCE else minmax_scale(values), settings.n_steps)
            )
    else:
        for i in range(prepared.n_train):
            if settings.mode == REFERENCE:
                blocks.append(_all_windows(prepared.raw[i][prepared.labels[i] == 0], settings.n_steps))
            else:
                windows = state_windows(prepared.scaled[i], settings.n_steps)
                clean = _all_windows(prepared.labels[i][1:, None].astype(np.float32), settings.n_steps).sum(1) == 0
                blocks.append(windows[clean].reshape(int(clean.sum()), -1))
    windows = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    if not len(windows):
        raise ValueError(
            "no normal window to train the VAE on; the training series need normal stretches of "
            f"at least {settings.n_steps} points"
        )
    if settings.mode == REFERENCE:
        mean, sd = windows.mean(axis=0), windows.std(axis=0)
        windows = (windows - mean) / np.where(sd > 0, sd, 1.0)  # sklearn StandardScaler
    return windows.astype(np.float32)


def reward_windows(prepared: Prepared, index: int, settings: Settings) -> np.ndarray:
    """The windows whose VAE error rewards each window of a series (reference: one point early, as coded)."""
    build = preceding_windows if settings.mode == REFERENCE else state_windows
    windows = build(prepared.scaled[index], settings.n_steps)
    return windows.reshape(len(windows), -1)


def choose_actions(q: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Epsilon-greedy: each action is random with probability epsilon, else argmax Q (A1 make_epsilon_greedy_policy)."""
    explore = rng.random(len(q)) < epsilon
    random_actions = rng.integers(0, 2, len(q))
    return np.where(explore, random_actions, np.argmax(q, axis=1)).astype(np.int64)


def fingerprint(prepared: Prepared) -> str:
    """A hash of names, values and labels: a checkpoint only resumes on the data it was made from."""
    digest = hashlib.sha256()
    for name, values, labels in zip(prepared.names, prepared.raw, prepared.labels, strict=True):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(values).tobytes())
        digest.update(labels.tobytes())
    return digest.hexdigest()


@dataclass
class RunState:
    """Everything a checkpoint holds between episodes (the networks live beside it)."""

    labels: list[np.ndarray]
    true_labels: int = 0
    pseudo_labels: int = 0
    total_updates: int = 0
    visits: int = 0
    lam: float = 0.0
    episode: int = 0
    episodes: list[dict] = field(default_factory=list)
    warm_up: dict = field(default_factory=dict)


class Trainer:
    """One run: holds the data, networks, replay and label state; `run` goes from warm-up to the report."""

    def __init__(self, dataset: Dataset, settings: Settings, output_dir: str | Path, progress: bool = False) -> None:
        import torch

        check_settings(settings)
        self.dataset, self.settings, self.progress = dataset, settings, progress
        self.output_dir = Path(output_dir)
        self.prepared = prepare(dataset, settings)
        self.rng = np.random.default_rng(settings.seed)
        input_dim = self.prepared.states[0].shape[2]
        self.online = build_q_network(input_dim, settings.hidden, settings.seed)
        self.target = build_q_network(input_dim, settings.hidden, settings.seed)
        self.target.load_state_dict(self.online.state_dict())
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=settings.learning_rate)
        self.replay = Replay(settings.replay_capacity)
        self.state = RunState(
            labels=[np.full(len(s), UNLABELLED, dtype=np.int8) for s in self.prepared.states], lam=settings.lam.initial
        )
        self.intrinsic: list[np.ndarray] = []
        self.vae_summary: dict = {}
        self.timing: dict[str, float] = {}

    def fit_vae(self) -> None:
        """Train the VAE once and turn every training window's error into its intrinsic input."""
        settings = self.settings
        windows = vae_training_windows(self.dataset, self.prepared, settings)
        if settings.vae_max_windows and len(windows) > settings.vae_max_windows:
            windows = windows[np.sort(self.rng.choice(len(windows), settings.vae_max_windows, replace=False))]
        model, loss = train_vae(windows, settings.vae, settings.seed, self.progress)
        sample = settings.mode == REFERENCE
        errors = [
            reconstruction_errors(model, reward_windows(self.prepared, i, settings), sample, settings.seed + i)
            for i in range(self.prepared.n_train)
        ]
        pooled = np.concatenate(errors)
        mean, sd = float(pooled.mean()), float(pooled.std())
        self.intrinsic = errors if sample else [standardized_scores(e, mean, sd) for e in errors]
        self.vae_summary = {
            "windows": len(windows),
            "input_dim": int(windows.shape[1]),
            "final_loss": loss,
            "error_mean": mean,
            "error_sd": sd,
            "latent_sampled": sample,
        }

    def rewards(self, index: int, windows: np.ndarray, lam: float) -> np.ndarray:
        """[K, 2] rewards of the chosen windows of a training series under the current labels and lambda."""
        labels = self.state.labels[index][windows]
        base = extrinsic_rewards(labels, self.settings.reward)
        if self.settings.mode == REFERENCE:
            return base + reference_intrinsic(self.intrinsic[index][windows], labels, lam)
        intrinsic = action_intrinsic(self.intrinsic[index][windows], lam, self.settings.intrinsic_scale)
        return base + intrinsic * (labels != UNLABELLED)[:, None]

    def epsilon(self, episode: int) -> float:
        """Exploration rate for the current episode (by update count, or by episode for WaDi)."""
        if self.settings.epsilon == "episodes":
            return episode_epsilon(episode + 1, self.settings.episodes)
        return linear_epsilon(self.state.total_updates)

    def step_windows(self, index: int, windows: np.ndarray, lam: float, epsilon: float) -> float:
        """Act on the given windows in order, store their transitions, return the episode return sum r[a]."""
        if not len(windows):
            return 0.0
        states = self.prepared.states[index][windows]
        actions = choose_actions(q_values(self.online, states), epsilon, self.rng)
        rewards = self.rewards(index, windows, lam)
        if self.settings.mode == REFERENCE:
            next_states, _ = chained_next_states(
                self.prepared.states[index][0], self.prepared.scaled[index], windows, actions, self.settings.n_steps
            )
        else:
            next_states = true_next_states(self.prepared.states[index], windows, action_flags=False)
        self.replay.add(states, rewards, next_states)
        return float(rewards[np.arange(len(windows)), actions].sum())

    def spread(self, index: int) -> int:
        """Label spreading on one series, then pseudo-label the most certain unlabelled windows; returns how many."""
        labels = self.state.labels[index]
        if self.settings.lp_budget == 0 or not (labels != UNLABELLED).any() or (labels != UNLABELLED).all():
            return 0
        features = self.prepared.states[index][:, :, :-1]
        distributions, transduction = spread_labels(features, labels, self.settings.label_spreading)
        chosen, pseudo = pseudo_label_selection(distributions, transduction, labels, self.settings.lp_budget)
        labels[chosen] = pseudo
        self.state.pseudo_labels += len(chosen)
        return len(chosen)

    def label_truly(self, index: int, windows: np.ndarray) -> None:
        """Give windows their ground-truth label (an oracle query); counts each window once."""
        labels = self.state.labels[index]
        fresh = np.unique(windows[labels[windows] == UNLABELLED])
        self.state.true_labels += len(fresh)
        labels[windows] = self.prepared.labels[index][windows + self.settings.n_steps]

    def warm_up(self) -> None:
        """IsolationForest warm-up (A1 L328-370): label 5 + 5 extreme windows per visit until the replay is filled."""
        settings, prepared = self.settings, self.prepared
        points = np.concatenate([prepared.scaled[i][settings.n_steps :] for i in range(prepared.n_train)])
        if settings.warm_fit_points and len(points) > settings.warm_fit_points:
            points = points[np.sort(self.rng.choice(len(points), settings.warm_fit_points, replace=False))]
        forest = fit_isolation_forest(points, settings.seed, settings.warm_contamination)
        decisions = [forest.decision_function(prepared.scaled[i][settings.n_steps :]) for i in range(prepared.n_train)]
        visits, true_before, pseudo_before = 0, self.state.true_labels, self.state.pseudo_labels
        while self.replay.size < settings.replay_init:
            index = self.state.visits % prepared.n_train
            self.state.visits += 1
            visits += 1
            warm = warm_up_selection(decisions[index], settings.warm_per_end)
            self.label_truly(index, warm)
            self.step_windows(index, warm, self.state.lam, self.epsilon(0))
            self.spread(index)
        self.state.warm_up = {
            "visits": visits,
            "true_labels": self.state.true_labels - true_before,
            "pseudo_labels": self.state.pseudo_labels - pseudo_before,
            "transitions": self.replay.size,
        }

    def episode(self, number: int) -> dict:
        """One episode (A1 L376-460): query, act on every labelled window, spread labels, update, move lambda."""
        settings, prepared = self.settings, self.prepared
        index = self.state.visits % prepared.n_train
        self.state.visits += 1
        labels = self.state.labels[index]
        known = np.flatnonzero(labels != UNLABELLED)
        queried = margin_query(q_values(self.online, prepared.states[index]), labels, settings.al_budget)
        self.label_truly(index, queried)
        windows = np.concatenate([known, queried]).astype(np.int64)
        lam = self.state.lam
        episode_return = self.step_windows(index, windows, lam, self.epsilon(number))
        pseudo = self.spread(index)
        losses = []
        for _ in range(settings.updates_per_episode):
            if self.state.total_updates % settings.target_every == 0:
                self.target.load_state_dict(self.online.state_dict())
            batch = self.replay.sample(self.rng, settings.batch_size)
            losses.append(dqn_update(self.online, self.target, self.optimizer, batch, settings.gamma))
            self.state.total_updates += 1
        self.state.lam = next_lambda(lam, episode_return, settings.lam)
        return {
            "episode": number + 1,
            "series": prepared.names[index],
            "lambda": lam,
            "return": episode_return,
            "lambda_next": self.state.lam,
            "active_labels": len(queried),
            "pseudo_labels": pseudo,
            "transitions": len(windows),
            "loss": float(np.mean(losses)) if losses else None,
        }

    def checkpoint_payload(self) -> dict:
        """What a resumed run needs: settings and data identity, networks, optimiser, replay, labels, RNG."""
        return {
            "settings": asdict(self.settings),
            "fingerprint": fingerprint(self.prepared),
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.arrays(),
            "state": asdict(self.state),
            "rng": self.rng.bit_generator.state,
            "intrinsic": self.intrinsic,
            "vae": self.vae_summary,
        }

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically (a crash mid-write keeps the previous one)."""
        import torch

        with atomic_path(self.output_dir / CHECKPOINT) as tmp:
            torch.save(self.checkpoint_payload(), tmp)

    def load_checkpoint(self) -> bool:
        """Resume from output_dir's checkpoint if there is one; refuse one made with other settings or data."""
        import torch

        path = self.output_dir / CHECKPOINT
        if not path.is_file():
            return False
        saved = torch.load(path, weights_only=False)
        if saved["settings"] != asdict(self.settings) or saved["fingerprint"] != fingerprint(self.prepared):
            raise ValueError(
                f"{path} was written by a run with other settings or data; use another --output_dir "
                "or delete the checkpoint to start over"
            )
        self.online.load_state_dict(saved["online"])
        self.target.load_state_dict(saved["target"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.replay = Replay.from_arrays(saved["replay"])
        self.state = RunState(**saved["state"])
        self.rng.bit_generator.state = saved["rng"]
        self.intrinsic, self.vae_summary = saved["intrinsic"], saved["vae"]
        logger.info("resumed %s after episode %d", path, self.state.episode)
        return True

    def validate(self) -> list[dict]:
        """Greedy sequential pass over each validation series through the gymnasium env; per-series metrics."""
        from rationanomaly.timeseries.env import SeriesEnv, greedy_pass

        prepared, results = self.prepared, []
        for index in range(prepared.n_train, len(prepared.names)):
            env = SeriesEnv(
                prepared.scaled[index],
                prepared.labels[index],
                self.settings.reward,
                self.settings.n_steps,
                action_flags=self.settings.mode == REFERENCE,
            )
            predictions, scores, truth = greedy_pass(env, lambda obs: q_values(self.online, obs[None])[0])
            ranking = scores if self.settings.mode == FIXED else predictions.astype(np.float64)
            results.append(
                {
                    "name": prepared.names[index],
                    **series_metrics(truth, predictions, ranking),
                    "predictions": predictions,
                    "scores": scores,
                    "truth": truth,
                }
            )
        return results

    def run(self) -> dict:
        """Warm-up, episodes (resuming from a checkpoint), validation; writes report.json, plots and timing.json."""
        from tqdm import tqdm

        started, cpu_started = time.perf_counter(), time.process_time()
        if not self.load_checkpoint():
            self.fit_vae()
            self.timing["vae_s"] = time.perf_counter() - started
            self.warm_up()
            self.timing["warm_up_s"] = time.perf_counter() - started - self.timing["vae_s"]
            self.save_checkpoint()
        episodes_started = time.perf_counter()
        for number in tqdm(
            range(self.state.episode, self.settings.episodes), desc="episodes", disable=not self.progress, leave=False
        ):
            self.state.episodes.append(self.episode(number))
            self.state.episode = number + 1
            if self.state.episode % self.settings.checkpoint_every == 0 and self.state.episode < self.settings.episodes:
                self.save_checkpoint()
                logger.info("episode %d/%d: lambda %.3f, replay %d, true labels %d, pseudo %d", self.state.episode,
                            self.settings.episodes, self.state.lam, self.replay.size, self.state.true_labels,
                            self.state.pseudo_labels)  # fmt: skip
        self.timing["episodes_s"] = time.perf_counter() - episodes_started
        validation_started = time.perf_counter()
        results = self.validate()
        self.timing["validation_s"] = time.perf_counter() - validation_started
        report = build_report(self, results)
        write_json_atomic(self.output_dir / REPORT, report)
        write_plots(self.output_dir, self.state.episodes, results)
        self.timing["total_s"] = time.perf_counter() - started
        self.timing["cpu_s"] = time.process_time() - cpu_started  # all threads; ~total_s on an idle core
        write_json_atomic(self.output_dir / TIMING, self.timing)
        (self.output_dir / CHECKPOINT).unlink(missing_ok=True)
        return report


def series_metrics(truth: np.ndarray, predictions: np.ndarray, ranking: np.ndarray) -> dict:
    """Point-wise P/R/F1 (the reference's protocol), point-adjusted P/R/F1 and AU-PR of one series."""
    pointwise = binary_metrics(flag_labels(truth), flag_labels(predictions))
    adjusted = binary_metrics(flag_labels(truth), flag_labels(point_adjust(truth.tolist(), predictions.tolist())))
    return {
        "points": int(len(truth)),
        "anomalies": int(truth.sum()),
        "precision": pointwise.precision,
        "recall": pointwise.recall,
        "f1": pointwise.f1,
        "tp": pointwise.tp,
        "fp": pointwise.fp,
        "fn": pointwise.fn,
        "tn": pointwise.tn,
        "pa_precision": adjusted.precision,
        "pa_recall": adjusted.recall,
        "pa_f1": adjusted.f1,
        "au_pr": average_precision(truth.tolist(), ranking.tolist()),
    }


METRIC_KEYS = ("precision", "recall", "f1", "pa_precision", "pa_recall", "pa_f1", "au_pr")


def mean_metrics(rows: list[dict]) -> dict[str, float]:
    """The mean of each metric over series: the reference's headline is the mean of per-series F1."""
    return {key: float(np.mean([row[key] for row in rows])) for key in METRIC_KEYS}


def baseline_means(results: list[dict]) -> dict[str, dict[str, float]]:
    """Predict-all-normal and predict-all-anomaly on the same points: the floor a method has to beat."""
    return {
        name: mean_metrics(
            [
                series_metrics(r["truth"], np.full_like(r["truth"], flag), np.full(len(r["truth"]), float(flag)))
                for r in results
            ]
        )
        for name, flag in (("all_normal", 0), ("all_anomaly", 1))
    }


def build_report(trainer: Trainer, results: list[dict]) -> dict:
    """report.json: settings, split, per-series and mean metrics, baselines, lambda/return per episode, labels used."""
    prepared, state, settings = trainer.prepared, trainer.state, trainer.settings
    training_windows = sum(len(prepared.states[i]) for i in range(prepared.n_train))
    labelled = sum(int((state.labels[i] != UNLABELLED).sum()) for i in range(prepared.n_train))
    pooled_truth = np.concatenate([r["truth"] for r in results])
    pooled = binary_metrics(flag_labels(pooled_truth), flag_labels(np.concatenate([r["predictions"] for r in results])))
    per_series = [{k: v for k, v in r.items() if k not in ("predictions", "scores", "truth")} for r in results]
    return {
        "method": "dynamic-reward RL (DRTA/DRSMT): VAE intrinsic reward + LSTM-DQN + active learning",
        "mode": settings.mode,
        "layout": settings.layout,
        "data": trainer.dataset.source,
        "seed": settings.seed,
        "settings": asdict(settings),
        "split": {
            "train": list(prepared.names[: prepared.n_train]),
            "validation": list(prepared.names[prepared.n_train :]),
        },
        "validation": {
            "series": per_series,
            "mean": mean_metrics(per_series),
            "pooled": {"precision": pooled.precision, "recall": pooled.recall, "f1": pooled.f1},
            "baselines": baseline_means(results),
            "au_pr_from": "q_margin" if settings.mode == FIXED else "predictions",
        },
        "episodes": state.episodes,
        "lambda": [row["lambda"] for row in state.episodes],
        "returns": [row["return"] for row in state.episodes],
        "warm_up": state.warm_up,
        "labels": {
            "true": state.true_labels,
            "pseudo": state.pseudo_labels,
            "labelled_windows": labelled,
            "training_windows": training_windows,
            "share_true": state.true_labels / training_windows if training_windows else 0.0,
            "share_labelled": labelled / training_windows if training_windows else 0.0,
        },
        "vae": trainer.vae_summary,
        "updates": state.total_updates,
    }


def write_plots(folder: Path, episodes: list[dict], results: list[dict], max_series: int = 4) -> None:
    """training.png (lambda and return per episode) and validation.png (series, truth, predictions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    numbers = [row["episode"] for row in episodes]
    axes[0].plot(numbers, [row["lambda"] for row in episodes], color="tab:orange")
    axes[0].set_ylabel("lambda")
    axes[1].plot(numbers, [row["return"] for row in episodes])
    axes[1].set_ylabel("episode return")
    axes[1].set_xlabel("episode")
    figure.tight_layout()
    with atomic_path(folder / "training.png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    shown = results[:max_series]
    figure, axes = plt.subplots(len(shown), 1, figsize=(10, 2.2 * len(shown)), squeeze=False)
    for axis, result in zip(axes[:, 0], shown, strict=True):
        points = np.arange(len(result["truth"]))
        axis.plot(points, result["scores"], color="tab:gray", linewidth=0.8, label="Q1 - Q0")
        axis.scatter(
            points[result["truth"] == 1], np.zeros(int(result["truth"].sum())), color="tab:red", s=12, label="anomaly"
        )
        axis.scatter(
            points[result["predictions"] == 1],
            np.zeros(int(result["predictions"].sum())),
            marker="x",
            color="tab:green",
            s=12,
            label="flagged",
        )
        axis.set_title(f"{result['name']}: F1 {result['f1']:.3f}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    with atomic_path(folder / "validation.png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def train(dataset: Dataset, settings: Settings, output_dir: str | Path, progress: bool = False) -> dict:
    """Train and validate one run on one torch thread; returns the report also written to output_dir/report.json.

    One thread makes a seed give the same report on a machine whatever its core count or load (the float
    reduction order no longer depends on them; another CPU's vector kernels may still change the last digits)
    and is also the faster choice for these small networks on a shared CPU:
    run seeds side by side instead.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Trainer(dataset, settings, output_dir, progress).run()
    finally:
        torch.set_num_threads(threads)
