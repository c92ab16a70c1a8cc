"""Train the built-in demo model: `python -m runtime.demo.train --output DIR`.

A ~5 M-parameter model in AITQE's exact architecture (SigLIP-style tower read at its second-to-
last layer, MLP projector, Qwen2-style LM, the same prompt with the image first), trained from
scratch with teacher forcing on the synthetic world of `runtime.demo.world`, and written in the
released checkpoint layout. It is a demo: it judges synthetic shapes, not real images.

Its tokenizer is a byte-level BPE trained on the world's texts, with the fixed pieces of the
prompt and of the verdict object (its keys and punctuation, `<Overall>`) as whole tokens, so
sequences stay short (9 image + ~20 prompt + ~60 answer tokens) and training fits a 2-core CPU.
The 48-pixel image is cut into 16-pixel patches, one per cell of the world's 3x3 grid: with 8-pixel
patches that straddle the cells, the tower took thousands of steps to tell shapes apart.

Loss is on the answer (the verdict text + EOS) only. A training-only scene probe (`SceneProbe`)
first trains the tower alone for --vision-steps (the demo's stand-in for SigLIP's pretraining),
then stays on as an auxiliary loss weighted by --aux-weight. Reproducible from --seed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, SiglipVisionConfig, SiglipVisionModel

from runtime.checkpoint import AITQEModules, load_checkpoint
from runtime.checkpoint_writer import aitqe_config, save_checkpoint, train_tokenizer
from runtime.config import AITQEConfig
from runtime.demo import DEMO_NOTE
from runtime.demo.world import (ASPECTS, COLOURS, IMAGE_SIZE, KINDS, SHAPES, SIZES, TEXTS, Scene, corpus_texts,
                                make_example, verdict_text)
from runtime.image import ImageSpec, preprocess
from runtime.prompt import PROMPT, prompt_ids

MARK = "\x00"


def fixed_pieces() -> list[str]:
    """The literal parts of the prompt and of a verdict object, between the variable values."""
    verdict = {"Recaption": MARK, "Overall Score": MARK, "Overall Explanation": MARK}
    for name in ASPECTS:
        verdict[f"{name} Score"] = 0
        verdict[f"{name} Explanation"] = MARK
    text = json.dumps(verdict).replace("\\u0000", MARK).replace(": 0,", f": {MARK},")
    return [p for p in text.split(MARK) if p] + ["<Overall>"] + [p for p in PROMPT.split("{caption}")]


def demo_tokenizer(seed: int, vocab_size: int):
    tok = train_tokenizer(list(corpus_texts(seed, 20_000)), vocab_size)
    tok.add_tokens(fixed_pieces())
    return tok


def configs(vocab: int) -> tuple[Qwen2Config, SiglipVisionConfig]:
    llm = Qwen2Config(vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)
    vision = SiglipVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=5,
                                num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=16, layer_norm_eps=1e-6,
                                hidden_act="gelu_pytorch_tanh")
    return llm, vision


def pick_kind(seed: int, index: int, weights: dict[str, float] | None) -> str | None:
    """None: the world's own kind mix; else a kind drawn with these weights."""
    if not weights:
        return None
    return random.Random(seed * 7_919 + index).choices(list(weights), list(weights.values()))[0]


def scene_labels(scene: Scene) -> list[int]:
    """Per grid cell: shape, colour, size (0 = empty); then the text (0 = none)."""
    cells = [[0, 0, 0] for _ in range(9)]
    for o in scene.objects:
        cells[o.row * 3 + o.col] = [SHAPES.index(o.shape) + 1, list(COLOURS).index(o.colour) + 1, SIZES.index(o.size) + 1]
    return [v for cell in cells for v in cell] + [TEXTS.index(scene.text) + 1 if scene.text else 0]


class SceneProbe(torch.nn.Module):
    """Training-only head that reads each grid cell's objects and the text from the image embeddings.

    The released AITQE starts from a pretrained SigLIP; the demo tower starts from scratch, and this
    direct supervision is its stand-in for that pretraining. It is not part of the checkpoint."""

    def __init__(self, tokens: int, hidden: int):
        super().__init__()
        self.where = torch.nn.Parameter(torch.zeros(10, tokens))  # 9 cells + text: attention over patches
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, n) for n in
                                         (len(SHAPES) + 1, len(COLOURS) + 1, len(SIZES) + 1, len(TEXTS) + 1))

    def loss(self, image: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pooled = torch.einsum("qt,bth->bqh", self.where.softmax(-1), image.float())
        cells, text = pooled[:, :9], pooled[:, 9]
        ce = torch.nn.functional.cross_entropy
        cell_targets = targets[:, :27].reshape(-1, 9, 3)
        loss = sum(ce(self.heads[k](cells).flatten(0, 1), cell_targets[..., k].flatten()) for k in range(3))
        return (loss + ce(self.heads[3](text), targets[:, 27])) / 4


def make_batch(seed: int, start: int, n: int, tok, spec: ImageSpec, eos: int,
               kind_weights: dict[str, float] | None = None):
    """Pixels, text ids (prompt + answer + EOS, right-padded), labels (answer only), mask, scene labels."""
    exs = [make_example(seed, start + i, spec.size, pick_kind(seed, start + i, kind_weights)) for i in range(n)]
    rows, labels = [], []
    for e in exs:
        prompt = prompt_ids(tok, e.caption, 10_000).ids
        answer = tok(verdict_text(e.verdict), add_special_tokens=False)["input_ids"] + [eos]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, rows))
    ids = torch.full((n, width), eos)
    lab = torch.full((n, width), -100)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, : len(r)], lab[i, : len(l)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(l), 1
    scenes = torch.tensor([scene_labels(e.scene) for e in exs])
    return preprocess([e.image for e in exs], spec), ids, lab, mask, scenes


def loss_of(modules: AITQEModules, pixels, ids, labels, mask, scenes,
            probe: SceneProbe | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy on the answer, and the scene probe's loss (0 without a probe)."""
    image = modules.vision(pixels)
    embeds = torch.cat([image, modules.llm.get_input_embeddings()(ids)], dim=1)
    t = image.shape[1]
    mask = torch.cat([mask.new_ones(mask.shape[0], t), mask], dim=1)
    labels = torch.cat([labels.new_full((labels.shape[0], t), -100), labels], dim=1)
    loss = modules.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    return loss, probe.loss(image, scenes) if probe is not None else loss.new_zeros(())


def pretrain_vision(modules: AITQEModules, probe: SceneProbe, steps: int, batch_at, device: str) -> None:
    """Train the tower (and projector) with the scene probe alone, before the LM sees any image."""
    params = list(modules.vision.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    start, run = time.time(), 0.0
    for step in range(steps):
        pixels, *_, scenes = (t.to(device) for t in batch_at(step))
        loss = probe.loss(modules.vision(pixels), scenes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run += loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(f"vision step {step + 1:5d}/{steps}  scene probe {run / ((step % 100) + 1):.4f}  "
                  f"{time.time() - start:.0f}s", flush=True)
            run = 0.0


def save(modules: AITQEModules, vision_cfg: SiglipVisionConfig, tok, out: Path, meta: dict) -> None:
    state = {f"model.{k}": v for k, v in modules.llm.state_dict().items()}
    full = SiglipVisionModel(vision_cfg).state_dict()  # supplies the dead last layer, post-LN, head
    full.update({k: v for k, v in modules.vision.state_dict().items() if not k.startswith("projector.")})
    state.update({f"vision_model.vision_model.{k}": v for k, v in full.items()})
    for i in (0, 2):
        for k, v in modules.vision.projector[i].state_dict().items():
            state[f"mm_projector.{i}.{k}"] = v
    state["image_newline"] = modules.image_newline.detach()
    state = {k: v.detach().to(torch.bfloat16) for k, v in state.items()}
    config = aitqe_config(modules.llm.config, vision_cfg, tok, "siglip")
    config["aitqe_edge_demo"] = {"note": DEMO_NOTE, **meta}
    save_checkpoint(out, config=config, state=state, tokenizer=tok, vision=vision_cfg,
                    image=ImageSpec(size=vision_cfg.image_size))


def start_from(init: Path | None, seed: int, vocab: int):
    """Fresh modules and tokenizer, or those of a checkpoint (to continue training it)."""
    if init is not None:
        ck = load_checkpoint(init, dtype=torch.float32)
        modules = AITQEModules(ck.config)
        modules.load_state_dict({**{f"llm.{k}": v for k, v in ck.llm.state_dict().items()},
                                 **{f"vision.{k}": v for k, v in ck.vision.state_dict().items()},
                                 "image_newline": ck.image_newline})
        return modules, ck.tokenizer, ck.config.vision
    tok = demo_tokenizer(seed, vocab)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    llm_cfg, vision_cfg = configs(-(-len(tok) // 64) * 64)
    cfg = AITQEConfig(root=Path("."), raw={}, llm=llm_cfg, vision=vision_cfg, image=ImageSpec(size=vision_cfg.image_size),
                      vision_config_source="", image_tokens=(vision_cfg.image_size // vision_cfg.patch_size) ** 2, eos_token_id=eos, pad_token_id=eos)
    modules = AITQEModules(cfg)
    torch.nn.init.normal_(modules.image_newline, std=0.02)
    return modules, tok, vision_cfg


def train(out: Path, *, seed: int, steps: int, batch: int, lr: float, vocab: int, log_every: int,
          init: Path | None = None, kind_weights: dict[str, float] | None = None,
          aux_weight: float = 0.0, vision_steps: int = 0, device: str = "cpu") -> None:
    torch.manual_seed(seed)
    modules, tok, vision_cfg = start_from(init, seed, vocab)
    modules.to(device)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    spec = ImageSpec(size=vision_cfg.image_size)
    params = sum(p.numel() for p in modules.parameters())
    print(f"demo model: {params / 1e6:.2f} M parameters, tokenizer {len(tok)} tokens", flush=True)
    probe = (SceneProbe((vision_cfg.image_size // vision_cfg.patch_size) ** 2, modules.llm.config.hidden_size).to(device)
             if aux_weight or vision_steps else None)
    if vision_steps:
        pretrain_vision(modules, probe, vision_steps, lambda i: make_batch(seed, i * batch, batch, tok, spec, eos), device)
    trained = list(modules.parameters()) + (list(probe.parameters()) if probe else [])
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps))))
    modules.train()
    start, curve, run, run_aux = time.time(), [], 0.0, 0.0

    def batch_at(step: int):
        return make_batch(seed, step * batch, batch, tok, spec, eos, kind_weights)

    # on a GPU two workers render the next batches while the current one trains
    workers = 0 if device == "cpu" else 2
    batches = torch.utils.data.DataLoader(range(steps), batch_size=None, collate_fn=batch_at, num_workers=workers,
                                          prefetch_factor=4 if workers else None, pin_memory=workers > 0)
    for step, tensors in enumerate(batches):
        tensors = [t.to(device, non_blocking=True) for t in tensors]
        lm, aux = loss_of(modules, *tensors, probe=probe)
        loss = lm + aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        run, run_aux = run + lm.item(), run_aux + aux.item()
        if (step + 1) % log_every == 0:
            curve.append((step + 1, run / log_every))
            print(f"step {step + 1:5d}/{steps}  loss {run / log_every:.4f}  scene probe {run_aux / log_every:.4f}  "
                  f"lr {sched.get_last_lr()[0]:.2e}  {time.time() - start:.0f}s", flush=True)
            run, run_aux = 0.0, 0.0
        if (step + 1) % max(1, steps // 4) == 0 or step + 1 == steps:
            meta = {"seed": seed, "steps": step + 1, "batch": batch, "lr": lr, "init": str(init or ""),
                    "kind_weights": kind_weights, "aux_weight": aux_weight, "vision_steps": vision_steps,
                    "device": device,
                    "train_examples": (step + 1) * batch, "train_seconds": round(time.time() - start),
                    "loss_curve": curve}
            save(modules.eval().cpu(), vision_cfg, tok, out, meta)
            modules.to(device).train()
    print(f"wrote {out} after {time.time() - start:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.demo.train", description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vocab", type=int, default=768, help="BPE vocabulary before the fixed pieces")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--init", help="continue training this checkpoint (its weights and tokenizer)")
    p.add_argument("--kind-weights", help="caption-kind mix, e.g. exact:2,wrong_colour:3 (default: the world's)")
    p.add_argument("--aux-weight", type=float, default=0.0,
                   help="weight of the training-only scene probe's loss (supervises the vision tower directly)")
    p.add_argument("--vision-steps", type=int, default=0,
                   help="steps that train the tower with the scene probe alone before the joint training")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    weights = None
    if args.kind_weights:
        weights = {k: float(v) for k, v in (item.split(":") for item in args.kind_weights.split(","))}
        unknown = set(weights) - set(KINDS)
        if unknown:
            p.error(f"unknown caption kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    train(Path(args.output), seed=args.seed, steps=args.steps, batch=args.batch_size, lr=args.lr,
          vocab=args.vocab, log_every=args.log_every, init=Path(args.init) if args.init else None,
          kind_weights=weights, aux_weight=args.aux_weight, vision_steps=args.vision_steps,
          device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
