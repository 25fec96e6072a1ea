"""The training loop: :class:`Trainer` (setup, step, validate, save as named pieces).

    accelerate launch train.py --config configs/tiny.yaml data.path=runs/data output_dir=runs/tiny
    videogene train --config configs/tiny.yaml data.path=runs/data max_steps=200   # one process
    python -m videogene.training.loop --config ...                                 # the same

The root ``train.py`` is a shim over :func:`cli`, so ``accelerate launch train.py`` keeps
working from a checkout and an installed package trains without one. Writes
OUTPUT_DIR/checkpoint-<step>/ (accelerator state), OUTPUT_DIR/export-<step>/ (pipeline export,
docs/design.md §5), OUTPUT_DIR/export-latest, OUTPUT_DIR/logs/ (TensorBoard) and
OUTPUT_DIR/validation/*.png. Options: docs/training.md.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from collections.abc import Sequence

from ..errors import InputError
from ..utils import check_output_dir, get_logger, set_seed, setup_logging
from .config import TrainConfig, config_to_dict, flat_config, load_config, save_config

logger = get_logger("train")


def parse_args(argv: Sequence[str] | None = None, *, prog: str | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a VideoGeneUNet (conditional video diffusion of gene expression). "
        "Run with `accelerate launch train.py ...` for several processes, or `python train.py ...`"
        " / `videogene train ...` for one.",
        epilog="Examples of overrides: max_steps=2000 data.path=runs/data data.gene_sampling=nnz "
        "model.preset=small diffusion.prediction_type=v_prediction mixed_precision=bf16. "
        "Unknown keys are an error listing close matches. Options: docs/training.md.")
    p.add_argument("--config", default=None, help="YAML config (e.g. configs/tiny.yaml); default: "
                   "the built-in defaults")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. seed=1")
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="resume from the newest checkpoint in output_dir (latest) or a checkpoint "
                   "folder")
    p.add_argument("--push_to_hub", action="store_true", help="upload the final export to the Hub")
    p.add_argument("--hub_model_id", default=None, metavar="ID", help="Hub repo id, e.g. user/videogene")
    a = p.parse_args(argv)
    extra = list(a.overrides)
    if a.resume:
        extra.append(f"resume_from_checkpoint={a.resume}")
    if a.push_to_hub:
        extra.append("push_to_hub=true")
    if a.hub_model_id:
        extra.append(f"hub_model_id={a.hub_model_id}")
    return load_config(a.config, extra)


def peak_memory_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def frame_time_range(timepoints) -> tuple[float, float]:
    """``(first, last)`` day of the dataset for the model's smooth frame-time embedding (one
    time point: a one-day range from it)."""
    lo, hi = float(min(timepoints)), float(max(timepoints))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _card_metrics(metrics: dict) -> dict:
    keep = ("train/loss", "val/denoising_loss")
    return {k: float(metrics[k]) for k in keep if k in metrics and math.isfinite(float(metrics[k]))}


class Trainer:
    """One training run of ``cfg``: ``Trainer(cfg).run()`` returns the summary.

    ``__init__`` is the setup (Accelerator, data, model, EMA, optimizer, resume);
    :meth:`train_step` one micro-batch; :meth:`validate` and :meth:`save` the periodic work.
    """

    def __init__(self, cfg: TrainConfig):
        # heavy imports here, so that --help and config errors answer at once
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedType, ProjectConfiguration
        from diffusers.training_utils import EMAModel

        from ..data import load_masks, load_metadata
        from ..models import VideoGeneUNet, count_parameters, estimate_flops, model_from_preset
        from ..pipelines.samplers import exact_outside_args
        from . import checkpointing as ckpt
        from .diffusion import make_noise_scheduler
        from .gene_init import init_gene_table
        from .optim import build_lr_scheduler, build_optimizer
        from .stream import build_dataset, build_loader, fixed_batches, resolve_dataset_dir

        self.cfg = cfg
        # 1. Accelerator, trackers, seeds
        out = self.out = check_output_dir(cfg.output_dir, name="config output_dir")
        if cfg.report_to == "wandb":
            try:
                import wandb  # noqa: F401
            except ImportError:
                raise InputError("config report_to=wandb: wandb is not installed") from None
        # several processes without CUDA (torchrun on a CPU box): accelerate only picks the gloo
        # CPU backend when told cpu=True
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        acc = self.accelerator = Accelerator(
            cpu=multi_cpu, mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            log_with=None if cfg.report_to == "none" else cfg.report_to,
            project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        )
        self.rank, self.world = acc.process_index, acc.num_processes
        self.is_main = acc.is_main_process
        if self.world == 1 and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
            # accelerate's simple launcher sets MASTER_ADDR for --num_processes > 1 but starts one
            logger.warning("accelerate launch asked for several processes but this run has one: on "
                           "a machine without GPUs use `accelerate launch --config_file "
                           "configs/accelerate/cpu_2proc.yaml train.py ...` (torchrun launcher)")
        set_seed(cfg.seed)
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "training_config.yaml")
        if cfg.report_to != "none":
            acc.init_trackers("videogene", config=flat_config(cfg))

        # 2. data: metadata, this rank's shard of the stream, a fixed validation set
        with acc.main_process_first():
            self.data_dir = resolve_dataset_dir(cfg.data.path)
        self.meta, self.masks = load_metadata(self.data_dir), load_masks(self.data_dir)
        meta = self.meta
        num_frames, side = len(meta.timepoints), meta.resolution
        self.loader = build_loader(build_dataset(cfg, self.data_dir, rank=self.rank,
                                                 world_size=self.world),
                                   cfg.train_batch_size, cfg.dataloader_num_workers)
        self.val_batches = []
        if self.is_main:
            val_set = build_dataset(cfg, self.data_dir, seed=cfg.seed + 7919, gene_sampling="uniform")
            self.val_batches = fixed_batches(build_loader(val_set, cfg.train_batch_size),
                                             cfg.validation.loss_batches)

        # 3. model (gene table from the data if asked, on a fresh run), EMA, noise schedule
        model = model_from_preset(cfg.model.preset, num_genes=len(meta.genes), sample_size=side,
                                  gene_names=meta.genes, **cfg.model.overrides(),
                                  frame_time_range=frame_time_range(meta.timepoints))
        self.n_params = count_parameters(model)
        # a model with exact_outside gets its outputs outside the tissue from the zero level
        self.outside = exact_outside_args(model.config, meta.model_units())
        if self.is_main:
            flops = estimate_flops(model, num_frames)
            print(f"[train] model preset {cfg.model.preset}: {self.n_params:,} parameters, "
                  f"{flops / 1e9:.3f} GFLOPs forward per example ({3 * flops / 1e9:.3f} per "
                  f"training example); {len(meta.genes)} genes, {num_frames} frames of "
                  f"{side}x{side}; {self.world} process(es)", flush=True)
        resume_dir = ckpt.resolve_resume(out, cfg.resume_from_checkpoint)
        if cfg.gene_embedding_init == "data" and resume_dir is None:
            # the main process reads the atlas; the others receive its table (before the EMA
            # copies the parameters, so every rank's EMA starts from it too)
            if self.is_main:
                spec = meta.holdout_spec({"data": {"holdout_timepoints":
                                                   cfg.data.holdout_timepoints}})
                init_gene_table(model, self.data_dir, heldout_timepoints=spec["timepoints"],
                                heldout_frames=spec["frames"], rms=cfg.gene_embedding_init_rms,
                                components=cfg.gene_embedding_init_components,
                                seed=cfg.seed, progress=True)
            if self.world > 1:
                from accelerate.utils import broadcast

                weight = model.gene_embedding.weight
                with torch.no_grad():
                    weight.copy_(broadcast(weight.detach().to(acc.device), from_process=0))
            if cfg.debug_dump_weights:  # tests: one rank computed the table, all hold it
                (out / "debug").mkdir(parents=True, exist_ok=True)
                (out / "debug" / f"gene-table-rank{self.rank}.txt").write_text(
                    ("computed " if self.is_main else "received ")
                    + ckpt.tensor_digest(model.gene_embedding.weight))
        if cfg.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        self.ema = None
        if cfg.use_ema:
            self.ema = EMAModel(model.parameters(), decay=cfg.ema_decay, foreach=True,
                                model_cls=VideoGeneUNet, model_config=model.config)
        self.noise_scheduler = make_noise_scheduler(cfg.diffusion)
        self.null_gene_id = model.null_gene_id
        self.use_context = bool(model.config.context_channels)  # in-filling: random context subsets
        self.use_self_cond = bool(model.config.self_condition)  # x0-hat fed back as input
        # the EMA copy that validation samples and exports
        self.eval_unet = VideoGeneUNet.from_config(model.config) if self.is_main else None

        # 4. optimizer and LR schedule; only model and optimizer go through prepare (the loader
        #    stays per rank, see videogene/training/stream.py); LR schedule and EMA are
        #    registered so that save_state/load_state carry them
        if acc.distributed_type == DistributedType.FSDP and cfg.use_ema:
            raise InputError("config use_ema=true: EMA of FSDP-sharded parameters is not supported; "
                             "set use_ema=false or use DDP / DeepSpeed ZeRO-2")
        if acc.distributed_type == DistributedType.DEEPSPEED:  # no loader goes through prepare
            acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
                cfg.train_batch_size)
        optimizer = build_optimizer(model, cfg)
        self.lr_scheduler = build_lr_scheduler(optimizer, cfg)
        if cfg.torch_compile:
            model = torch.compile(model)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        acc.register_for_checkpointing(self.lr_scheduler)
        if self.ema is not None:
            self.ema.to(acc.device)
            acc.register_for_checkpointing(self.ema)
        self.raw = acc.unwrap_model(self.model, keep_torch_compile=False)

        # 5. resume: model, optimizer, LR, EMA, RNG from the checkpoint; the data stream skips
        #    the batches already consumed (batch_stream in run)
        self.global_step = 0
        if resume_dir is not None:
            ckpt.check_resumable(resume_dir)
            try:
                acc.load_state(str(resume_dir))
            except (ValueError, KeyError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(f"checkpoint {resume_dir}: does not fit this run's model or "
                                 f"optimizer ({first[:200]}); start a new output_dir") from None
            if self.ema is not None:
                self.ema.to(acc.device)
            self.global_step = ckpt.step_of(resume_dir)
            logger.info("resumed from %s at step %d", resume_dir, self.global_step)
        self.seen_genes: list[int] = []

    # ---------------------------------------------------------------------------- pieces
    def train_step(self, batch: dict, micro: int):
        """Loss, backward and (when gradients sync) the optimizer step of one micro-batch."""
        import torch

        from .diffusion import diffusion_loss, step_generator

        cfg, acc = self.cfg, self.accelerator
        gen = step_generator(cfg.seed, self.global_step, self.rank, micro)
        torch.manual_seed(gen.initial_seed())  # dropout inside the model: same per (seed, step, rank)
        with acc.accumulate(self.model):
            loss, _ = diffusion_loss(self.model, self.noise_scheduler, batch, cfg.diffusion,
                                     generator=gen, null_gene_id=self.null_gene_id,
                                     context=self.use_context,
                                     self_condition=self.use_self_cond,
                                     outside=self.outside)
            acc.backward(loss)
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def sync_eval_unet(self) -> None:
        # full weights on every rank's call (gathers under FSDP/ZeRO-3); EMA copied on top
        state = self.accelerator.get_state_dict(self.model)
        if self.is_main:
            self.eval_unet.load_state_dict(state)
            if self.ema is not None:
                self.ema.copy_to(self.eval_unet.parameters())

    def validate(self, step: int) -> dict:
        """Fixed-noise denoising loss and a labelled grid of sampled videos (main process)."""
        from .validation import denoising_loss, sample_grid, save_grid_png, validation_genes

        cfg, device, unet = self.cfg, self.accelerator.device, self.eval_unet
        unet.to(device)
        logs = {"val/denoising_loss": denoising_loss(unet, self.noise_scheduler, self.val_batches,
                                                     seed=cfg.seed, device=device,
                                                     outside=self.outside)}
        genes, real = validation_genes(cfg, self.meta, self.val_batches)
        _, grid = sample_grid(unet, self.noise_scheduler, self.meta, self.masks, genes, real=real,
                              num_inference_steps=cfg.validation.num_inference_steps,
                              guidance_scale=cfg.validation.guidance_scale, seed=cfg.seed,
                              device=device)
        save_grid_png(grid, self.out / "validation" / f"step-{step}.png", genes=genes,
                      timepoints=self.meta.timepoints, has_real=real is not None, step=step)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"val/samples": grid[None, None]}, step=step, dataformats="NCHW")
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"val/samples": wandb.Image(grid)}, step=step)
        unet.to("cpu")
        return logs

    def save(self, step: int, metrics: dict, final: bool) -> None:
        """Checkpoint (every rank), export with model card, prune, upload (main process)."""
        from ..pipelines import export_pipeline
        from . import checkpointing as ckpt
        from .hub import push_folder_to_hub, render_model_card

        cfg, acc, out = self.cfg, self.accelerator, self.out
        acc.wait_for_everyone()
        cdir = ckpt.checkpoint_dir(out, step)
        acc.save_state(str(cdir))
        if cfg.debug_dump_weights:  # tests: ranks hold the same weights, see different genes
            (out / "debug").mkdir(parents=True, exist_ok=True)
            (out / "debug" / f"weights-step{step}-rank{self.rank}.txt").write_text(
                ckpt.weights_digest(self.raw))
            (out / "debug" / f"genes-rank{self.rank}.txt").write_text(
                " ".join(map(str, self.seen_genes)))
        self.sync_eval_unet()
        if self.is_main:
            save_config(cfg, cdir / "training_config.yaml")
            card = render_model_card(cfg, self.meta, step=step, num_parameters=self.n_params,
                                     num_processes=self.world, metrics=metrics)
            edir = export_pipeline(ckpt.export_dir(out, step),
                                   unet=self.eval_unet if self.ema else self.raw,
                                   unet_raw=self.raw if self.ema else None,
                                   scheduler=self.noise_scheduler, dataset_dir=self.data_dir,
                                   training_config=config_to_dict(cfg), model_card=card)
            ckpt.point_export_latest(out, edir)
            ckpt.prune(out, cfg.checkpoints_total_limit, "checkpoint")
            ckpt.prune(out, cfg.checkpoints_total_limit, "export")
            if cfg.push_to_hub and (final or cfg.push_every_checkpoint):
                push_folder_to_hub(edir, cfg.hub_model_id, private=cfg.hub_private,
                                   commit_message=f"videogene export, step {step}")
        acc.wait_for_everyone()

    # ---------------------------------------------------------------------------- loop
    def run(self) -> dict:
        """Train to ``max_steps``: one optimizer step per ``gradient_accumulation_steps``
        micro-batches; step counter, EMA, LR, logging and checkpoints move only when gradients
        sync. Nothing in the step reads a value back to the host except at logging steps."""
        from tqdm.auto import tqdm

        from .stream import batch_stream, to_device

        cfg, acc = self.cfg, self.accelerator
        stream = batch_stream(self.loader,
                              start_batch=self.global_step * cfg.gradient_accumulation_steps)
        progress = tqdm(total=cfg.max_steps, initial=self.global_step, disable=not self.is_main,
                        desc="train")
        self.model.train()
        micro, loss_sum, loss_n, metrics, val = 0, 0.0, 0, {}, {}
        t_last, step_last, epoch, examples = time.perf_counter(), self.global_step, 0, 0
        while self.global_step < cfg.max_steps:
            # 1. next batch (counted on the host before the copy: partial batches count as such)
            epoch, batch = next(stream)
            examples += len(batch["gene_id"])
            if cfg.debug_dump_weights:
                self.seen_genes.extend(batch["gene_id"].tolist())
            batch = to_device(batch, acc.device)
            # 2. loss, backward, optimizer step
            loss = self.train_step(batch, micro)
            micro += 1
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            if not acc.sync_gradients:
                continue
            # 3. LR, EMA, step counter
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step(self.raw.parameters())
            self.global_step += 1
            step = self.global_step
            micro = 0
            progress.update(1)
            # 4. logging: the one host sync, every logging_steps
            if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                mean_loss = acc.reduce(loss_sum / loss_n, reduction="mean").item()
                dt = time.perf_counter() - t_last
                metrics = {"train/loss": mean_loss, "train/lr": self.lr_scheduler.get_last_lr()[0],
                           "train/epoch": epoch, "perf/steps_per_s": (step - step_last) / dt,
                           "perf/examples_per_s": examples * self.world / dt,
                           "perf/peak_memory_gib": peak_memory_gib(acc.device)}
                acc.log(metrics, step=step)
                progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{metrics['train/lr']:.2e}")
                loss_sum, loss_n, t_last, step_last, examples = 0.0, 0, time.perf_counter(), step, 0
            # 5. validation and checkpoint + export
            if step % cfg.validation_steps == 0 or step == cfg.max_steps:
                self.sync_eval_unet()
                if self.is_main:
                    val = self.validate(step)
                    acc.log(val, step=step)
                    logger.info("step %d: validation denoising loss %.4f", step,
                                val["val/denoising_loss"])
                acc.wait_for_everyone()
            if step % cfg.checkpointing_steps == 0 or step == cfg.max_steps:
                self.save(step, _card_metrics(metrics | val), final=step == cfg.max_steps)
        progress.close()

        acc.end_training()
        summary = {"step": self.global_step, "output_dir": str(self.out),
                   "parameters": self.n_params, "export": str(self.out / "export-latest"),
                   **_card_metrics(metrics | val)}
        if self.is_main:
            print(f"[train] done: {summary}", flush=True)
        return summary


def main(cfg: TrainConfig) -> dict:
    """Train according to ``cfg``; returns a summary (final step, losses, paths)."""
    return Trainer(cfg).run()


def cli(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """``train.py`` / ``videogene train``: bad input ends with one line and exit status 2."""
    setup_logging(0)
    name = prog or os.path.basename(sys.argv[0]) or "train"
    try:
        main(parse_args(argv, prog=prog))
    except InputError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli(prog="python -m videogene.training.loop"))
