"""The demo model's training loop, `train` (what it trains and how: the package docstring)."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, SiglipVisionConfig, SiglipVisionModel

from runtime.demo import DEMO_NOTE
from runtime.demo.train.probes import CaptionCheck, SceneProbe, check_tensor, scene_labels, score_position
from runtime.demo.train.tokenizer import train_tokenizer
from runtime.demo.world import IMAGE_SIZE, corpus_texts, make_example, verdict_text
from runtime.image import ImageSpec, preprocess
from runtime.model.checkpoint import AITQEModules, load_checkpoint
from runtime.model.config import AITQEConfig, Eos
from runtime.model.writer import aitqe_config, save_checkpoint
from runtime.prompt import PROMPT, prompt_ids

def demo_tokenizer(seed: int, vocab_size: int):
    """A Qwen2-form BPE trained on the world's captions and verdicts and on the prompt's text."""
    texts = list(corpus_texts(seed, 20_000)) + [PROMPT.format_map({"caption": ""})] * 2_000
    return train_tokenizer(texts, vocab_size)


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


def make_batch(seed: int, start: int, n: int, tok, spec: ImageSpec, eos: int,
               kind_weights: dict[str, float] | None = None):
    """Pixels, text ids (prompt + answer + EOS, right-padded), labels (answer only), mask, scene labels,
    caption-check targets."""
    exs = [make_example(seed, start + i, spec.size, pick_kind(seed, start + i, kind_weights)) for i in range(n)]
    rows, labels, score_at = [], [], []
    for e in exs:
        prompt = prompt_ids(tok, e.caption, 10_000).ids
        text = verdict_text(e.verdict)
        answer = tok(text, add_special_tokens=False)["input_ids"] + [eos]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
        score_at.append(len(prompt) + score_position(tok, text))
    width = max(map(len, rows))
    ids = torch.full((n, width), eos)
    lab = torch.full((n, width), -100)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, : len(r)], lab[i, : len(l)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(l), 1
    scenes = torch.tensor([scene_labels(e.scene) for e in exs])
    checks = check_tensor(exs, tok, score_at)
    return preprocess([e.image for e in exs], spec), ids, lab, mask, scenes, checks


def loss_of(modules: AITQEModules, pixels, ids, labels, mask, scenes, checks, probe: SceneProbe | None = None,
            check: CaptionCheck | None = None) -> tuple[torch.Tensor, ...]:
    """Mean next-token cross-entropy on the answer, the scene probe's loss, the caption check's
    and its routing loss (0 without the probes)."""
    image = modules.vision(pixels)
    embeds = torch.cat([image, modules.llm.get_input_embeddings()(ids)], dim=1)
    t = image.shape[1]
    mask = torch.cat([mask.new_ones(mask.shape[0], t), mask], dim=1)
    labels = torch.cat([labels.new_full((labels.shape[0], t), -100), labels], dim=1)
    out = modules.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels,
                      output_hidden_states=check is not None, output_attentions=check is not None)
    zero = out.loss.new_zeros(())
    checked = (check.loss(out.hidden_states[-1][:, t:], out.attentions, checks)
               if check is not None else (zero, zero))
    return out.loss, probe.loss(image, scenes) if probe is not None else zero, *checked


def pretrain_vision(modules: AITQEModules, probe: SceneProbe, steps: int, batch_at, device: str) -> None:
    """Train the tower (and projector) with the scene probe alone, before the LM sees any image."""
    params = list(modules.vision.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    start, run = time.time(), 0.0
    for step in range(steps):
        pixels, *_, scenes, _ = (t.to(device) for t in batch_at(step))
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
                      vision_config_source="", image_tokens=(vision_cfg.image_size // vision_cfg.patch_size) ** 2, eos=Eos((eos,), ""), pad_token_id=eos)
    modules = AITQEModules(cfg)
    torch.nn.init.normal_(modules.image_newline, std=0.02)
    return modules, tok, vision_cfg


def train(out: Path, *, seed: int, steps: int, batch: int, lr: float, vocab: int, log_every: int,
          init: Path | None = None, kind_weights: dict[str, float] | None = None,
          aux_weight: float = 0.0, vision_steps: int = 0, check_weight: float = 0.0, device: str = "cpu") -> None:
    torch.manual_seed(seed)
    modules, tok, vision_cfg = start_from(init, seed, vocab)
    modules.to(device)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    spec = ImageSpec(size=vision_cfg.image_size)
    params = sum(p.numel() for p in modules.parameters())
    print(f"demo model: {params / 1e6:.2f} M parameters, tokenizer {len(tok)} tokens", flush=True)
    probe = SceneProbe(modules.llm.config.hidden_size).to(device) if aux_weight or vision_steps else None
    if vision_steps:
        pretrain_vision(modules, probe, vision_steps, lambda i: make_batch(seed, i * batch, batch, tok, spec, eos), device)
    check = CaptionCheck(modules.llm.config.hidden_size).to(device) if check_weight else None
    if check is not None:
        modules.llm.set_attn_implementation("eager")  # the routing loss reads the attention weights
    trained = [p for m in (modules, probe, check) if m is not None for p in m.parameters()]
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps))))
    modules.train()
    start, curve, runs = time.time(), [], torch.zeros(4)

    def batch_at(step: int):
        return make_batch(seed, step * batch, batch, tok, spec, eos, kind_weights)

    # on a GPU two workers render the next batches while the current one trains
    workers = 0 if device == "cpu" else 2
    batches = torch.utils.data.DataLoader(range(steps), batch_size=None, collate_fn=batch_at, num_workers=workers,
                                          prefetch_factor=4 if workers else None, pin_memory=workers > 0)
    for step, tensors in enumerate(batches):
        tensors = [t.to(device, non_blocking=True) for t in tensors]
        lm, aux, checked, routed = loss_of(modules, *tensors, probe=probe, check=check)
        loss = lm + aux_weight * aux + check_weight * (checked + routed)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        runs += torch.tensor([lm.item(), aux.item(), checked.item(), routed.item()])
        if (step + 1) % log_every == 0:
            mean = (runs / log_every).tolist()
            curve.append((step + 1, mean[0]))
            print(f"step {step + 1:5d}/{steps}  loss {mean[0]:.4f}  scene probe {mean[1]:.4f}  caption check "
                  f"{mean[2]:.4f}  routing {mean[3]:.4f}  lr {sched.get_last_lr()[0]:.2e}  {time.time() - start:.0f}s",
                  flush=True)
            runs.zero_()
        if (step + 1) % max(1, steps // 4) == 0 or step + 1 == steps:
            meta = {"seed": seed, "steps": step + 1, "batch": batch, "lr": lr, "init": str(init or ""),
                    "kind_weights": kind_weights, "aux_weight": aux_weight, "vision_steps": vision_steps,
                    "check_weight": check_weight, "device": device,
                    "train_examples": (step + 1) * batch, "train_seconds": round(time.time() - start),
                    "loss_curve": curve}
            save(modules.eval().cpu(), vision_cfg, tok, out, meta)
            modules.to(device).train()
    print(f"wrote {out} after {time.time() - start:.0f}s", flush=True)
