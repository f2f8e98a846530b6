"""What a training run is set to, as one frozen dataclass (:class:`TrainingSettings`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["TrainingSettings"]


@dataclass(frozen=True)
class TrainingSettings:
    """The settings of a testbed training run (:func:`~memgeo.testbed.train_testbed`), each recorded in the checkpoint
    or ``testbed.json`` and checked when a run resumes.

    Attributes:
        regime: a key of :data:`~memgeo.testbed.REGIMES`: the data (built for ``seed``) and the default ``steps``.
        steps: the final step, batches of ``batch_size`` (None: the regime's).
        batch_size: items per step.
        lr: AdamW's learning rate (None: the regime's, else 1e-3).
        dropout: the probability that an item's caption is replaced by the empty one (caption dropout, which trains
            the unconditional branch; None: the regime's, else 0.1).
        dropout_duplicated: the same for the items of duplicated captions (None: the regime's, else ``dropout``).
            Both are compared with the same random draw, so runs that differ only there see the same batches, noises
            and timesteps: only the unconditional branch's exposure to the duplicates changes.
        seed: the data draw, the networks' initialisation and the batches, noises and timesteps.
        checkpoint_every: steps between checkpoints (and at the last step).
        snapshot_every: every that many steps the model is also saved, loadable, in ``out_dir/snapshots/step-N``
            (the SD layout and ``testbed.json``), so that a long run can be measured while it trains (None: never).
        mitigate_threshold: training-time mitigation (Wen et al., ICLR 2024). At every step the unconditional
            prediction of the batch is computed as well (one more forward pass, no gradient), and a sample whose
            guidance-gap norm ``|eps(x_t, t, caption) - eps(x_t, t, "")|`` (L2 over the latent) is at least the
            threshold is left out of the loss; the batches drawn are the same as without mitigation, and how many
            were left out, of duplicated and of single captions, is recorded in ``testbed.json`` (``"mitigation"``).
        mitigate_rule: the same filter with a label-free threshold instead of an absolute one: a rule of
            :data:`~memgeo.testbed.items.MITIGATION_RULES` (``"fence"``: a sample is left out where its gap norm
            reaches the far-out fence of the norms the run's recent batches had at its timestep). Not beside
            ``mitigate_threshold``. The fence's window is kept in the checkpoint, so a resumed run filters as an
            uninterrupted one.
        lr_decay_steps: the learning rate is ``lr`` until the last ``lr_decay_steps`` steps, then falls linearly
            towards 0 (:func:`~memgeo.testbed.regimes.learning_rate`; None: the regime's, else 0, a constant rate). A
            checkpoint resumes under a new schedule only where both gave it the same rates so far.
        base: the trained testbed folder a fine-tune regime (one with ``"lora"`` in the regime) starts from: its
            networks are frozen and LoRA adapters (peft) are trained on the regime's data; the output then holds the
            adapter in diffusers' format and a ``testbed.json`` naming the base (and its UNet's SHA-256).
        precision: ``"float32"``, or ``"bfloat16"`` for mixed precision (the forward passes under bfloat16 autocast;
            weights, gradients, loss and AdamW in float32). The same batches are drawn either way. bfloat16 pays only
            where the processor has bfloat16 arithmetic (AMX: 1.35x float32's samples per second on two cores;
            AVX512-BF16: 1.38-1.43x) and is 7-12x slower on AVX2 alone (``benchmarks/results/training_speed/training_speed.md``). A
            run resumes only in the precision it began in.
        ema_decay: also keep an exponential moving average of the weights (``ema <- d ema + (1 - d) w`` after every
            step, from the initial weights); the saved model and every snapshot are then the average, the weights a
            benchmark protocol evaluates (None: no average).
        compact: checkpoints hold weights only (the networks and their averages) in half precision, with the
            generator's state, and the saved model is stored in half precision (loaded in float32); a run resumed from
            one restarts AdamW's moments with a linear warm-up of the learning rate over 200 steps (recorded as
            ``resumed_at``): the same batches, not bit for bit. Not for a fine-tune.
    """

    regime: str = "small-data"
    steps: int | None = None
    batch_size: int = 64
    lr: float | None = None
    dropout: float | None = None
    dropout_duplicated: float | None = None
    seed: int = 0
    checkpoint_every: int = 500
    snapshot_every: int | None = None
    mitigate_threshold: float | None = None
    mitigate_rule: str | None = None
    lr_decay_steps: int | None = None
    base: str | None = None
    precision: str = "float32"
    ema_decay: float | None = None
    compact: bool = False

    def given(self, **options) -> "TrainingSettings":
        """These settings with ``options`` replaced; an unknown option is an error naming it and the known ones."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"train_testbed() got unknown option(s) {unknown}; its options: {names}")
        return dataclasses.replace(self, **options)
