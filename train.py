#!/usr/bin/env python
"""Train a VideoGeneUNet on a prepared gene-video dataset with Hugging Face Accelerate.

    accelerate launch train.py --config configs/tiny.yaml data.path=runs/data output_dir=runs/tiny
    python train.py --config configs/tiny.yaml data.path=runs/data max_steps=200   # one device
    accelerate launch --config_file configs/accelerate/ddp.yaml train.py --config configs/base.yaml ...
    python train.py --config configs/tiny.yaml ... --resume latest --push_to_hub --hub_model_id me/m

Options are ``key=value`` overrides of the YAML config (dotted for sections, values parsed as
YAML); see docs/training.md. Writes OUTPUT_DIR/checkpoint-<step>/ (accelerator state),
OUTPUT_DIR/export-<step>/ (pipeline export, docs/design.md §5), OUTPUT_DIR/export-latest,
OUTPUT_DIR/logs/ (TensorBoard) and OUTPUT_DIR/validation/*.png.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time

from videogene.errors import InputError
from videogene.training.config import TrainConfig, config_to_dict, flat_config, load_config, save_config
from videogene.utils import check_output_dir, get_logger, set_seed, setup_logging

logger = get_logger("train")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(
        description="Train a VideoGeneUNet (conditional video diffusion of gene expression). "
        "Run with `accelerate launch train.py ...` for several processes, or `python train.py ...`.",
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


def main(cfg: TrainConfig) -> dict:
    """Train according to ``cfg``; returns a summary (final step, losses, paths)."""
    # heavy imports here, so that --help and config errors answer at once
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, ProjectConfiguration
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from videogene.data import load_masks, load_metadata
    from videogene.data.holdout import holdout_spec
    from videogene.models import VideoGeneUNet, count_parameters, estimate_flops, model_from_preset
    from videogene.pipelines import export_pipeline
    from videogene.training import checkpointing as ckpt
    from videogene.training.diffusion import diffusion_loss, make_noise_scheduler, step_generator
    from videogene.training.gene_init import init_gene_table
    from videogene.training.hub import push_folder_to_hub, render_model_card
    from videogene.training.optim import build_lr_scheduler, build_optimizer
    from videogene.training.stream import (
        batch_stream,
        build_dataset,
        build_loader,
        fixed_batches,
        resolve_dataset_dir,
        to_device,
    )
    from videogene.training.validation import denoising_loss, sample_grid, save_grid_png

    # 1. Accelerator, trackers, seeds
    out = check_output_dir(cfg.output_dir, name="config output_dir")
    if cfg.report_to == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise InputError("config report_to=wandb: wandb is not installed") from None
    # several processes without CUDA (torchrun / accelerate launch --multi_gpu on a CPU box): accelerate
    # only picks the gloo CPU backend when told cpu=True
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu, mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    if world == 1 and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
        # accelerate's simple launcher sets MASTER_ADDR for --num_processes > 1 but starts one process
        logger.warning("accelerate launch asked for several processes but this run has one: on a "
                       "machine without GPUs use `accelerate launch --config_file "
                       "configs/accelerate/cpu_2proc.yaml train.py ...` (torchrun launcher)")
    set_seed(cfg.seed)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "training_config.yaml")
    if cfg.report_to != "none":
        accelerator.init_trackers("videogene", config=flat_config(cfg))

    # 2. data: metadata, this rank's shard of the stream, a fixed validation set
    with accelerator.main_process_first():
        data_dir = resolve_dataset_dir(cfg.data.path)
    meta, masks = load_metadata(data_dir), load_masks(data_dir)
    num_frames, side = len(meta["timepoints"]), int(meta["resolution"])
    loader = build_loader(build_dataset(cfg, data_dir, rank=rank, world_size=world),
                          cfg.train_batch_size, cfg.dataloader_num_workers)
    val_batches = []
    if is_main:
        val_set = build_dataset(cfg, data_dir, seed=cfg.seed + 7919, gene_sampling="uniform")
        val_loader = build_loader(val_set, cfg.train_batch_size)
        val_batches = fixed_batches(val_loader, cfg.validation.loss_batches)

    # 3. model, EMA, noise schedule
    model = model_from_preset(cfg.model.preset, num_genes=len(meta["genes"]), sample_size=side,
                              gene_names=list(meta["genes"]), **cfg.model.overrides(),
                              frame_time_range=frame_time_range(meta["timepoints"]))
    n_params = count_parameters(model)
    if is_main:
        flops = estimate_flops(model, num_frames)
        print(f"[train] model preset {cfg.model.preset}: {n_params:,} parameters, "
              f"{flops / 1e9:.3f} GFLOPs forward per example ({3 * flops / 1e9:.3f} per training "
              f"example); {len(meta['genes'])} genes, {num_frames} frames of {side}x{side}; "
              f"{world} process(es)", flush=True)
    fresh = ckpt.resolve_resume(out, cfg.resume_from_checkpoint) is None
    if cfg.gene_embedding_init == "data" and fresh:  # on resume the checkpoint has the table
        spec = holdout_spec(meta, {"data": {"holdout_timepoints": cfg.data.holdout_timepoints}})
        init_gene_table(model, data_dir, heldout_timepoints=spec["timepoints"],
                        heldout_frames=spec["frames"], rms=cfg.gene_embedding_init_rms,
                        seed=cfg.seed, progress=is_main)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = None
    if cfg.use_ema:
        ema = EMAModel(model.parameters(), decay=cfg.ema_decay, model_cls=VideoGeneUNet,
                       model_config=model.config)
    noise_scheduler = make_noise_scheduler(cfg.diffusion)
    null_gene_id = model.null_gene_id
    use_context = bool(model.config.context_channels)  # in-filling: random clean-context subsets
    eval_unet = VideoGeneUNet.from_config(model.config) if is_main else None  # EMA copy for export

    # 4. optimizer and LR schedule; only model and optimizer go through prepare (the loader
    #    stays per rank, see videogene/training/stream.py); LR schedule and EMA are registered
    #    so that save_state/load_state carry them
    if accelerator.distributed_type == DistributedType.FSDP and cfg.use_ema:
        raise InputError("config use_ema=true: EMA of FSDP-sharded parameters is not supported; "
                         "set use_ema=false or use DDP / DeepSpeed ZeRO-2")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:  # no loader goes through prepare
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            cfg.train_batch_size)
    optimizer = build_optimizer(model, cfg)
    lr_scheduler = build_lr_scheduler(optimizer, cfg)
    if cfg.torch_compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    raw = accelerator.unwrap_model(model, keep_torch_compile=False)

    # 5. resume: model, optimizer, LR, EMA, RNG from the checkpoint; the data stream skips the
    #    batches already consumed
    global_step = 0
    resume_dir = ckpt.resolve_resume(out, cfg.resume_from_checkpoint)
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        if ema is not None:
            ema.to(accelerator.device)
        global_step = ckpt.step_of(resume_dir)
        logger.info("resumed from %s at step %d", resume_dir, global_step)
    stream = batch_stream(loader, start_batch=global_step * cfg.gradient_accumulation_steps)

    def sync_eval_unet() -> None:
        # full weights on every rank's call (gathers under FSDP/ZeRO-3); EMA copied on top
        state = accelerator.get_state_dict(model)
        if is_main:
            eval_unet.load_state_dict(state)
            if ema is not None:
                ema.copy_to(eval_unet.parameters())

    def validate(step: int) -> dict:
        eval_unet.to(accelerator.device)
        logs = {"val/denoising_loss": denoising_loss(eval_unet, noise_scheduler, val_batches,
                                                     seed=cfg.seed, device=accelerator.device)}
        genes, real = validation_genes(cfg, meta, val_batches)
        _, grid = sample_grid(eval_unet, noise_scheduler, meta, masks, genes, real=real,
                              num_inference_steps=cfg.validation.num_inference_steps,
                              guidance_scale=cfg.validation.guidance_scale, seed=cfg.seed,
                              device=accelerator.device)
        save_grid_png(grid, out / "validation" / f"step-{step}.png", genes=genes,
                      timepoints=meta["timepoints"], has_real=real is not None, step=step)
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"val/samples": grid[None, None]}, step=step, dataformats="NCHW")
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"val/samples": wandb.Image(grid)}, step=step)
        eval_unet.to("cpu")
        return logs

    def save(step: int, metrics: dict, final: bool) -> None:
        accelerator.wait_for_everyone()
        cdir = ckpt.checkpoint_dir(out, step)
        accelerator.save_state(str(cdir))
        if cfg.debug_dump_weights:  # tests: ranks hold the same weights, see different genes
            (out / "debug").mkdir(parents=True, exist_ok=True)
            (out / "debug" / f"weights-step{step}-rank{rank}.txt").write_text(ckpt.weights_digest(raw))
            (out / "debug" / f"genes-rank{rank}.txt").write_text(" ".join(map(str, seen_genes)))
        sync_eval_unet()
        if is_main:
            save_config(cfg, cdir / "training_config.yaml")
            card = render_model_card(cfg, meta, step=step, num_parameters=n_params, num_processes=world,
                                     metrics=metrics)
            edir = export_pipeline(ckpt.export_dir(out, step), unet=eval_unet if ema else raw,
                                   unet_raw=raw if ema else None, scheduler=noise_scheduler,
                                   dataset_dir=data_dir, training_config=config_to_dict(cfg),
                                   model_card=card)
            ckpt.point_export_latest(out, edir)
            ckpt.prune(out, cfg.checkpoints_total_limit, "checkpoint")
            ckpt.prune(out, cfg.checkpoints_total_limit, "export")
            if cfg.push_to_hub and (final or cfg.push_every_checkpoint):
                push_folder_to_hub(edir, cfg.hub_model_id, private=cfg.hub_private,
                                   commit_message=f"videogene export, step {step}")
        accelerator.wait_for_everyone()

    # 6. training loop: one optimizer step per gradient_accumulation_steps micro-batches; the
    #    step counter, EMA, LR, logging and checkpoints move only when gradients sync
    progress = tqdm(total=cfg.max_steps, initial=global_step, disable=not is_main, desc="train")
    model.train()
    micro, loss_sum, loss_n, metrics, val = 0, 0.0, 0, {}, {}
    t_last, step_last, epoch, seen_genes = time.perf_counter(), global_step, 0, []
    while global_step < cfg.max_steps:
        epoch, batch = next(stream)
        if cfg.debug_dump_weights:
            seen_genes.extend(batch["gene_id"].tolist())
        batch = to_device(batch, accelerator.device)
        gen = step_generator(cfg.seed, global_step, rank, micro)
        torch.manual_seed(gen.initial_seed())  # dropout inside the model: same per (seed, step, rank)
        with accelerator.accumulate(model):
            loss, _ = diffusion_loss(model, noise_scheduler, batch, cfg.diffusion, generator=gen,
                                     null_gene_id=null_gene_id, context=use_context)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        loss_sum, loss_n = loss_sum + loss.detach(), loss_n + 1
        if not accelerator.sync_gradients:
            continue
        lr_scheduler.step()
        if ema is not None:
            ema.step(raw.parameters())
        global_step += 1
        micro = 0
        progress.update(1)
        if global_step % cfg.logging_steps == 0 or global_step == cfg.max_steps:
            mean_loss = accelerator.reduce(loss_sum / loss_n, reduction="mean").item()
            dt = time.perf_counter() - t_last
            steps = global_step - step_last
            metrics = {"train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0],
                       "train/epoch": epoch, "perf/steps_per_s": steps / dt,
                       "perf/examples_per_s": steps * cfg.train_batch_size
                       * cfg.gradient_accumulation_steps * world / dt,
                       "perf/peak_memory_gib": peak_memory_gib(accelerator.device)}
            accelerator.log(metrics, step=global_step)
            progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{metrics['train/lr']:.2e}")
            loss_sum, loss_n, t_last, step_last = 0.0, 0, time.perf_counter(), global_step
        if global_step % cfg.validation_steps == 0 or global_step == cfg.max_steps:
            sync_eval_unet()
            if is_main:
                val = validate(global_step)
                accelerator.log(val, step=global_step)
                logger.info("step %d: validation denoising loss %.4f", global_step,
                            val["val/denoising_loss"])
            accelerator.wait_for_everyone()
        if global_step % cfg.checkpointing_steps == 0 or global_step == cfg.max_steps:
            save(global_step, _card_metrics(metrics | val), final=global_step == cfg.max_steps)
    progress.close()

    # 7. wrap up
    accelerator.end_training()
    summary = {"step": global_step, "output_dir": str(out), "parameters": n_params,
               "export": str(out / "export-latest"), **_card_metrics(metrics | val)}
    if is_main:
        print(f"[train] done: {summary}", flush=True)
    return summary


def frame_time_range(timepoints) -> tuple[float, float]:
    """``(first, last)`` day of the dataset for the model's smooth frame-time embedding (one
    time point: a one-day range from it)."""
    lo, hi = float(min(timepoints)), float(max(timepoints))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _card_metrics(metrics: dict) -> dict:
    keep = ("train/loss", "val/denoising_loss")
    return {k: float(metrics[k]) for k in keep if k in metrics and math.isfinite(float(metrics[k]))}


def validation_genes(cfg: TrainConfig, meta: dict, val_batches: list[dict]):
    """Genes to sample at validation and their real videos (expression units) where known."""
    import numpy as np
    import torch

    from videogene.data.units import gene_scales, model_units, to_expression

    units = model_units(meta, dataset=cfg.data.path)
    scales = torch.from_numpy(gene_scales(meta, dataset=cfg.data.path))  # (genes,)
    real_by_id = {}
    for b in val_batches:
        scale = scales[b["gene_id"]][:, None, None, None]  # (b, 1, 1, 1)
        vids = (to_expression(b["video"][:, :, 0], scale, units)
                * b["tissue_mask"][:, :, 0]).numpy()  # (b, f, h, w) expression units
        present = b["frame_present"].numpy()
        for gid, v, p in zip(b["gene_id"].tolist(), vids, present):
            real_by_id.setdefault(int(gid), v * p[:, None, None])
    names = list(meta["genes"])
    if cfg.validation.genes:
        unknown = [g for g in cfg.validation.genes if g not in names]
        if unknown:
            raise InputError(f"config validation.genes: not in the dataset vocabulary: {unknown[:5]}")
        genes = list(cfg.validation.genes)
    else:
        genes = [names[i] for i in list(real_by_id)[: cfg.validation.num_genes]] or names[:1]
    shape = (len(meta["timepoints"]), int(meta["resolution"]), int(meta["resolution"]))
    real = np.stack([real_by_id.get(names.index(g), np.zeros(shape, np.float32)) for g in genes])
    return genes, real


if __name__ == "__main__":
    setup_logging(0)
    try:
        main(parse_args())
    except InputError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
