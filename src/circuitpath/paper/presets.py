"""The paper's figures as named presets: which runs each figure needs, in the settings that drew it.

Every figure of the paper was drawn by a notebook of its code (facebookresearch/pal,
`projects/visualization/notebooks/`), each in its own setting. The settings below were read from
those notebooks, and for Figs. 3-4 from the scripts whose runs their notebooks read (the d = 2
pipeline: `projects/visualization/train.py`, `finetune.py`); each experiment's docstring names the
file and line or cell of every value. What the code leaves open is said where it is decided.

Common to all (both notebooks, `Model` class, cells 9-10 of graph.ipynb and 8-9 of
factorization.ipynb): token embedding tied to the unembedding, learned positions, RMS norms, one
query, no key, an MLP with biases and GELU, and the residual `out + mlp(norm2(out))`, i.e. the MLP
added to the un-normalised attention output (`residual="attn_out"`). Adam, with a fresh optimiser
for each phase. The notebooks' presets differ in one way on purpose: training and test sequences
are distinct and disjoint (the notebooks draw both with replacement from one random stream), and the
test set is larger (2 048 sequences, or every other sequence when p^T is small) than the notebooks'
128. The `vis_*` presets draw as their scripts do (`TaskConfig.with_replacement`, `ModelConfig.init`).

| experiment           | figures    | T  | d  | h   | phases (p:steps:lr[:batch])                     | source                 |
|----------------------|------------|----|----|-----|-------------------------------------------------|------------------------|
| `minibatch`          | 2          | 8  | 32 | 128 | 4:9600:1e-3:32 (150 epochs of 64)               | graph.ipynb            |
| `scratch`            | 5, 6, 7    | 12 | 32 | 128 | 4:10000:1e-3 (`SCRATCH_LR`)                     | factorization.ipynb    |
| `curriculum`         | 3, 5, 6, 7 | 12 | 32 | 128 | 2:3000:1e-3, 4:7000:1e-2                        | factorization.ipynb    |
| `small_curriculum`   | -          | 12 | 2  | 32  | 2:3000:1e-3, 4:7000:1e-2                        | factorization.ipynb    |
| `small_scratch`      | -          | 12 | 2  | 32  | 4:10000:1e-2                                    | factorization.ipynb    |
| `vis_p2`             | -          | 12 | 2  | 32  | 2:64000:3e-3:32 (1 000 epochs)                  | train.py               |
| `vis_finetune`       | 3, 4       | 12 | 2  | 32  | 2:64000:3e-3:32, 4:64000:3e-3:32                | train.py, finetune.py  |
| `vis_finetune_reset` | 4          | 12 | 2  | 32  | vis_finetune's, unseen rows reset at the switch | a variant (`variants`) |
| `vis_scratch`        | 4          | 12 | 2  | 32  | 4:64000:3e-3:32                                 | train.py at p = 4      |

Every experiment has k = 5, n = 2 048 training sequences and n_tokens = 4 embedding rows (the
`vis_*` ones: an option, 3 in train.py's grid), and is trained for several seeds; a seed sets the
data, the initial weights and the mini-batch order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from circuitpath.config import ModelConfig, Phase, RunConfig, TaskConfig, TrainConfig
from circuitpath.errors import ConfigError

#: Updates in one epoch of Fig. 2's run: 2 048 sequences in mini-batches of 32 (graph.ipynb, cell 7).
EPOCH = 2048 // 32

#: The d = 2 pipeline (projects/visualization/train.py, `ExperimentConfig` lines 58-81 and the grid of
#: `run_grid` lines 382-399): lr 3e-3, mini-batches of 32, 1 000 epochs of 2 048 // 32 updates.
VIS_LR, VIS_BATCH, VIS_STEPS = 3e-3, 32, 1000 * EPOCH

#: Seeds of the d = 2 pipeline in `reproduce` (Figs. 3-4): its figure is one run among many whose
#: pretraining often fails, and a run is cheap, so it trains more seeds than the other experiments.
VIS_SEEDS = 32

#: The fine-tune variant `reproduce` trains beside finetune.py's own (`variants.FINETUNE_VARIANTS`):
#: a branch of `vis_finetune` at its switch with the rows of the tokens unseen in p = 2 reset.
VIS_RESET = "vis_finetune_reset"

#: Learning rate of the scratch run (Fig. 5). factorization.ipynb cell 16 sets lr = 1e-3 and then
#: overrides it with lr = 1e-2; only 1e-3 draws the paper's own Fig. 5 curve (numbers in `scratch`).
SCRATCH_LR = 1e-3


@dataclass(frozen=True)
class Experiment:
    """One training recipe of the paper; `config(seed)` is its run for one seed."""

    name: str
    figures: tuple[int, ...]
    task: TaskConfig
    model: ModelConfig
    train: TrainConfig
    doc: str

    def config(self, seed: int) -> RunConfig:
        """The run of this recipe for `seed` (data, initial weights and mini-batch order)."""
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"a seed must be a non-negative integer, got {seed!r}")
        return RunConfig(task=replace(self.task, seed=seed), model=replace(self.model, seed=seed),
                         train=replace(self.train, seed=seed))

    def phases_text(self) -> str:
        return ",".join(f"{ph.p}:{ph.steps}:{ph.lr:g}" + (f":{ph.batch_size}" if ph.batch_size else "")
                        for ph in self.train.phases)


def minibatch(residual: str, batch_size: int) -> Experiment:
    """Fig. 2: the attention flow of the all-3s input, update by update (graph.ipynb).

    - T = 8, k = 5, p = 4, n = 2 048 (cell 5: `length = 8`, `sparsity_index = 5`, `bsz = 2048`,
      the last `vocab_size = 4`).
    - Mini-batches of 32, reshuffled every epoch: 64 updates an epoch (cell 7:
      `DataLoader(batch_size=32, shuffle=True)`).
    - d = 32, h = 4d = 128 (cell 12: `emb_dim = 32`, `ffn_dim = 4 * emb_dim`).
    - Adam, lr 1e-3 (cell 16: the last assignment of the Adam branch, `lr = 1e-3`; an L1 term is
      computed there but never added to the loss).
    - Inputs drawn: the all-i sequences (cell 5 overwrites test rows 0..3 with all 0s .. all 3s);
      the frames saved are of the all-3s input (cell 25: `sample = 3`), the one the paper shows.
    - Frames: cell 16 records the attention after every update; cell 25 saves frames at epochs 0,
      10, 50 and 150, each at every update 1..63, coloured by the sign of the change since the
      previous update (widths there are softmax(attention / 0.05), a display choice).
    - Length: the notebook trains 1 000 epochs (cell 16, `niter = 1_000`) but draws nothing after
      epoch 150; we train those 150 epochs (9 600 updates), enough for the final profile (its
      training accuracy is 1 from about epoch 120 on, cell 17's plot).
    - Checkpoints: every update of the first epoch (64 frames, what the claims read), then every
      5 epochs. Every checkpoint is also a metrics line, evaluated on the 63 488 test sequences
      (4^8 is small enough to enumerate), which made a second dense epoch cost more than the
      rest of the run (measured: 73% of the run's time was spent evaluating).
    """
    steps = 150 * EPOCH
    train = TrainConfig(phases=(Phase(p=4, steps=steps, lr=1e-3, batch_size=batch_size),), log_every=5 * EPOCH,
                        checkpoint_every=5 * EPOCH, dense_checkpoints=0,
                        extra_checkpoints=tuple(range(1, EPOCH + 1)))
    return Experiment("minibatch", (2,), TaskConfig(n_ctx=8), ModelConfig(n_ctx=8, residual=residual), train,
                      minibatch.__doc__ or "")


def scratch(residual: str, lr: float = SCRATCH_LR) -> Experiment:
    """Figs. 5-7: p = 4 from scratch, full batch, 10 000 steps (factorization.ipynb).

    - T = 12, k = 5, n = 2 048 (cell 5), d = 32, h = 128 (cell 12), full batch (cell 16: one step
      on all of `X` per iteration), 10 000 steps (cell 16: `niter = 10_000 # 4`).
    - Learning rate 1e-3. Cell 16 sets `lr = 1e-3` (comment: vocab_size = 2) and then overrides it
      with `lr = 1e-2` (comment: vocab_size = 4 after 2), so the code as saved trains scratch at 1e-2.
      The figure decides: the saved Fig. 5 (cell 29's picture, read pixel by pixel) shows the scratch
      training accuracy at 0.93 at step ~2 050, 0.98 at ~2 500 and 1.0 from ~3 200, its test
      accuracy at 0.2-0.35 throughout. Measured on 8 seeds (`circuitpath sweep --seeds 0-7
      --experiments 'lr3=4:10000:1e-3;lr2=4:10000:1e-2'`, residual attn_out): at lr 1e-3 the median
      training accuracy is 0.765 at step 1 250 and 0.953 at step 2 000, and first reaches 0.99 at step
      2 600 (median; 2 050-5 000); at lr 1e-2 it is 1.000 at step 1 250 and first reaches 0.99 at
      step 1 075 (850-1 450). Only lr 1e-3 draws the paper's curve. Both memorise on 8 of 8 seeds
      (final test accuracy 0.236-0.285 at 1e-3, 0.240-0.495 at 1e-2).
    """
    return Experiment("scratch", (5, 6, 7), TaskConfig(), ModelConfig(residual=residual),
                      TrainConfig(phases=(Phase(p=4, steps=10_000, lr=lr),)), scratch.__doc__ or "")


def curriculum(residual: str) -> Experiment:
    """Figs. 3, 5-7: p = 2 for 3 000 steps at lr 1e-3, then p = 4 for 7 000 at lr 1e-2 (factorization.ipynb).

    - Same task and model as `scratch`, same initial weights (same seed).
    - Phases from cell 16 (`niter = 3_000 # 2`, `niter = 7_000 # 2 -> 4`) and its lr comments
      (`lr = 1e-3 # ... vocab_size = 2`, `lr = 1e-2 # ... vocab_size = 4 after 2`); cell 10's
      recipes say the same; the paper's text: "3000 epochs in full batch, before switching".
    - Fig. 3's claim is measured on its p = 2 phase too, beside the d = 2 pipeline that drew the
      figure (`vis_finetune`).
    """
    phases = (Phase(p=2, steps=3000, lr=1e-3), Phase(p=4, steps=7000, lr=1e-2))
    return Experiment("curriculum", (3, 5, 6, 7), TaskConfig(), ModelConfig(residual=residual),
                      TrainConfig(phases=phases), curriculum.__doc__ or "")


def small_curriculum(residual: str, d_mlp: int) -> Experiment:
    """Fig. 4: the curriculum at d = 2, h = 32, whose z_A the paper draws in the plane (factorization.ipynb).

    - d = 2: the figure's axes are z_A[1], z_A[2] (cells 73-74) and cell 60 prints z of shape
      [32, 12, 2]; the paper: "on the considered model size (d = 2)".
    - h = 32 and the learning rates from cell 16's comments (`emb_dim == 2 & ffn_dim == 32 &
      model_seed 20`: lr 1e-3 for vocab_size 2, 1e-2 for vocab_size 4 after 2) and cell 10's
      recipes; phases as `curriculum`.
    - Fig. 3 is, most likely, its p = 2 phase. Cell 52 ("attns.pdf") draws the attention of the
      first 4 test inputs (binary tokens in its tick labels) every 100 steps over the first 2 000
      (`attns[:2000:100, i, :]`) of a saved run of 4 000 steps (cell 40), whose size the notebook
      does not record. Its colour scale ends at `attns.max() / 1.5` ~ 0.09, so no attention in
      that run exceeded ~0.135. Measured over steps 0-2 000 of the p = 2 phase on 128 test inputs,
      3 seeds: the largest attention is 0.144-0.164 at d = 2 and 0.246-0.276 at d = 32; only d = 2
      fits the figure.
    - How often this pretraining succeeds, over seeds 0-31 (`circuitpath sweep --d-model 2 --d-mlp 32
      --experiments 'p2=2:3000:1e-3;p2_long=2:10000:1e-3;p2_lr1e-2=2:3000:1e-2'`): test acc >= 0.99
      at step 3 000 on none, at step 10 000 on 7, at lr 1e-2 by step 3 000 on 6 (training accuracy
      first reaches 0.99 on 8 seeds at steps 3 150-9 150, and on 7 at 800-2 900 at lr 1e-2). The
      figure's run (model seed 20) is one of the few that learn; the preset keeps its settings.
    - Inputs drawn (cell 59): the 32 sequences whose first k tokens run over {0, 1}^5, the seven
      spurious ones 0, coloured by their sum (cell 73, "out_attn.pdf"). The 16-cluster panel's
      input is not in the saved notebook (cell 74's saved output shows the binary inputs again);
      cell 59 keeps, commented out, the 1 024 sequences whose first k run over {0..3}^5 with
      spurious zeros, which we take for it.
    """
    phases = (Phase(p=2, steps=3000, lr=1e-3), Phase(p=4, steps=7000, lr=1e-2))
    return Experiment("small_curriculum", (), TaskConfig(), ModelConfig(d_model=2, d_mlp=d_mlp, residual=residual),
                      TrainConfig(phases=phases), small_curriculum.__doc__ or "")


def small_scratch(residual: str, d_mlp: int) -> Experiment:
    """Fig. 4's counterpart: p = 4 alone at d = 2, h = 32, lr 1e-2, 10 000 steps (factorization.ipynb).

    The paper: the 16 clusters "could not emerge from p = 4 only on the considered model size";
    cell 10's recipe 2 (d = 2, h = 32, vocab 4, lr 1e-2): "Works after 1. Doesn't work natively."
    """
    return Experiment("small_scratch", (), TaskConfig(), ModelConfig(d_model=2, d_mlp=d_mlp, residual=residual),
                      TrainConfig(phases=(Phase(p=4, steps=10_000, lr=1e-2),)), small_scratch.__doc__ or "")


def vis_setting(n_tokens: int, residual: str) -> tuple[TaskConfig, ModelConfig]:
    """The task and model of the d = 2 pipeline (facebookresearch/pal, projects/visualization/).

    - T = 12, k = 5, n = 2 048 (train.py lines 60-63, `seq_length`, `sparsity_index`, `nb_data`).
    - Data with replacement (src/factorization/data/modular.py lines 50-51:
      `rng.integers(0, p, (nb_data, seq_length))`, target the sum of the first k mod p), the training
      set then a test set of as many drawn after it from the same `np.random.default_rng(seed)`
      (train.py lines 116-117, 134-144): `TaskConfig(with_replacement=True)`.
    - d = 2, h = 32 (train.py line 72 `emb_dim = 2`; `run_experiments` line 257 and the grid line 393
      `ffn_dim = 32`), MLP biases (grid line 394 `ffn_bias`), GELU (line 396), tied output
      (softmax_model.py line 238), residual `out + mlp(norm2(out))` (line 248, `residual="attn_out"`).
    - n_tokens embedding rows: `nb_emb`, 3 in the grid (line 392; the model is built with
      `vocab_size = nb_emb`, lines 159-162); a p = 4 fine-tune needs 4.
    - Initial weights: `init="shared_stream"` (train.py lines 119, 149-163 and `set_parameters`,
      softmax_model.py lines 151-178; see `weights.shared_stream_weights`).
    """
    task = TaskConfig(with_replacement=True)
    model = ModelConfig(d_model=2, d_mlp=32, n_tokens=n_tokens, residual=residual, init="shared_stream")
    return task, model


def vis_train(*ps: int) -> TrainConfig:
    """Phases of 1 000 epochs at lr 3e-3 in shuffled mini-batches of 32, one per modulus, a new Adam each.

    train.py: `batch_size = 32`, `nb_epochs = 1_000`, `lr = 3e-3` (lines 66-68, grid 387-389), Adam
    (line 177), `DataLoader(shuffle=True)` each epoch (modular.py lines 66-71). finetune.py: the last
    saved weights (line 126), new data for its p (lines 133-143), the same optimisation inherited from
    the pretrained run (grid lines 313-318, 323, 353-355) and a new Adam (line 158). The batches'
    order is ours (a function of seed, phase and epoch), not the DataLoader's torch stream. The scripts
    evaluate and save every epoch; we log every 10 epochs and checkpoint every 50 (24 log-spaced
    before), phase ends included (Fig. 3 reads epochs 0 and 1 000, attn.ipynb cell 2).
    """
    phases = tuple(Phase(p=p, steps=VIS_STEPS, lr=VIS_LR, batch_size=VIS_BATCH) for p in ps)
    return TrainConfig(phases=phases, log_every=10 * EPOCH, checkpoint_every=50 * EPOCH, dense_checkpoints=24)


def vis_p2(residual: str, n_tokens: int) -> Experiment:
    """Fig. 3: the d = 2 pipeline's pretraining, p = 2, as train.py's `grid --ablation seed` runs it.

    attn.ipynb (cell 0: a run under `save_ext = 'seed'`) draws the input and the attention at epochs 0
    and 1 000 of one such run (cell 2). `vis_setting` and `vis_train` give every value's source.
    """
    task, model = vis_setting(n_tokens, residual)
    return Experiment("vis_p2", (), task, model, vis_train(2), vis_p2.__doc__ or "")


def vis_finetune(residual: str, n_tokens: int, finetune_p: int = 4) -> Experiment:
    """Fig. 4: the pretraining of `vis_p2`, then finetune.py on p = `finetune_p` (4 by default).

    finetuning.ipynb and spikes.ipynb (cell 0) read a run under `finetune/seed`. The modulus: the
    paper's text and Fig. 4b (16 clusters, sums of k = 5 tokens mod 4) say p = 4; finetune.py's own
    default and grid say 3 (`FinetuneConfig.vocab_size = 3`, line 64; grid line 312), which the
    grid's `nb_emb = 3` admits; p = 4 needs n_tokens = 4. The fine-tune is the second phase of one
    run: its weights at the switch are the pretraining's last (finetune.py line 126). Its data come
    from `default_rng(seed)` with the pretraining's seed, as `finetune.py run --seed SEED` draws them
    (its grid, lines 319 and 295, gives every fine-tune seed 0); the same stream then gives p = 4
    sequences whose tokens' high bit is the p = 2 sequences' token (numpy's bounded integers).
    """
    task, model = vis_setting(n_tokens, residual)
    return Experiment("vis_finetune", (3, 4), task, model, vis_train(2, finetune_p), vis_finetune.__doc__ or "")


def vis_scratch(residual: str, n_tokens: int) -> Experiment:
    """Fig. 4's counterpart: p = 4 alone in the d = 2 pipeline's settings (train.py with vocab_size = 4).

    The paper: the 16 clusters "could not emerge from p = 4 only on the considered model size".
    """
    task, model = vis_setting(n_tokens, residual)
    return Experiment("vis_scratch", (4,), task, model, vis_train(4), vis_scratch.__doc__ or "")


@dataclass(frozen=True)
class Figure:
    """A figure of the paper: the experiments it needs and what it shows."""

    number: int
    title: str
    experiments: tuple[str, ...]


FIGURES: dict[int, Figure] = {
    2: Figure(2, "Attention flow, update by update", ("minibatch",)),
    3: Figure(3, "Attention over the p = 2 phase", ("vis_finetune", "curriculum")),
    4: Figure(4, "Clusters of the attention output at d = 2", ("vis_finetune", VIS_RESET, "vis_scratch")),
    5: Figure(5, "Accuracy: scratch memorises, the curriculum generalises", ("scratch", "curriculum")),
    6: Figure(6, "Loss barrier between the two solutions", ("scratch", "curriculum")),
    7: Figure(7, "Parameter trajectories", ("scratch", "curriculum")),
}


def experiments(residual: str = "attn_out", batch_size: int = 32, small_d_mlp: int = 32,
                scratch_lr: float = SCRATCH_LR, vis_n_tokens: int = 4, vis_finetune_p: int = 4) -> dict[str, Experiment]:
    """Every experiment of the paper, in its settings; the arguments change what a user may vary.

    `vis_n_tokens`: embedding rows of the d = 2 pipeline (3 in its grid, 4 for a p = 4 fine-tune);
    `vis_finetune_p`: the modulus of its fine-tune (4 as the paper says, 3 as finetune.py does).
    """
    return {e.name: e for e in (
        minibatch(residual, batch_size), scratch(residual, scratch_lr), curriculum(residual),
        small_curriculum(residual, small_d_mlp), small_scratch(residual, small_d_mlp),
        vis_p2(residual, vis_n_tokens), vis_finetune(residual, vis_n_tokens, vis_finetune_p),
        vis_scratch(residual, vis_n_tokens))}


def parse_figures(text: str) -> list[int]:
    """`2,4` -> [2, 4]; `all` -> every figure. Unknown figures are refused by name."""
    if text.strip() == "all":
        return sorted(FIGURES)
    figures = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        try:
            number = int(item)
        except ValueError:
            number = None
        if number not in FIGURES:
            raise ConfigError(f"unknown figure {item!r}; the paper's figures are {', '.join(map(str, FIGURES))} (or all)")
        if number not in figures:
            figures.append(number)
    if not figures:
        raise ConfigError(f"no figure given in {text!r}")
    return sorted(figures)


def needed(figures: list[int]) -> list[str]:
    """The experiments the given figures need and that train from scratch, each once, in a fixed order
    (a branch such as `VIS_RESET` is made from one of them: see `branches_needed`)."""
    names = {name for number in figures for name in FIGURES[number].experiments}
    return [name for name in experiments() if name in names]


def branches_needed(figures: list[int]) -> list[str]:
    """The branch experiments the given figures need (made at a parent's switch after training)."""
    return [VIS_RESET] if 4 in figures else []


def is_vis(name: str) -> bool:
    """Whether an experiment is of the d = 2 pipeline (trained on `VIS_SEEDS` seeds in `reproduce`)."""
    return name.startswith("vis_")


def check_seed_count(count: int, flag: str = "--seeds") -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"{flag} must be a positive number of seeds, got {count!r}")

