"""AITQE -> transformers' LLaVA (`LlavaForConditionalGeneration`): config, weight names, tokenizer, processor.

AITQE is LLaVA's architecture: SigLIP read at `hidden_states[-2]` with every patch kept
(`vision_feature_layer=-2`, `vision_feature_select_strategy="full"`), Linear-GELU(erf)-Linear
(`projector_hidden_act="gelu"`; LLaVA gives both Linears a bias or neither, so the second gets a zero
bias), image embeddings in place of placeholder tokens, then Qwen2. `image_newline` is never used
and is not exported.

Weights are written with the LLaVA names of the published llava-hf checkpoints
(`language_model.model.*`, `language_model.lm_head.weight`, `vision_tower.vision_model.*`,
`multi_modal_projector.linear_{1,2}.*`), which transformers 4.x and 5.x, vLLM and SGLang all load.

The prompt: the runtime puts one `\\n` token after the image and then tokenizes
`"\\nEvaluate the caption: ..."` as a segment of its own (runtime.prompt). A processor tokenizes its
whole text at once, where `\\n\\n` after the image would merge into one token wherever the vocabulary
has that merge (Qwen2's has). So the exported tokenizer gets one extra pre-tokenizer rule, written
by hand because no library setting expresses it: a `\\n` at the very start of a text segment (the
text right after a special token, here the last image placeholder) is split off on its own. A text
starting a segment with one `\\n` followed by more whitespace is the only thing it changes; captions
sit in the middle of the prompt segment and tokenize as before. The tokenizer is saved as a plain
`PreTrainedTokenizerFast` (tokenizer.json as written), since transformers 5's `Qwen2Tokenizer`
rebuilds its pre-tokenizer from fixed settings.
"""

from __future__ import annotations

import json

import torch
from tokenizers import AddedToken, Regex, pre_tokenizers
from transformers import LlavaConfig, LlavaProcessor, PreTrainedTokenizerFast, Qwen2Config, SiglipVisionConfig

from runtime.errors import InputError
from runtime.image import ImageSpec
from runtime.prompt import IMAGE_SEPARATOR, PROMPT

IMAGE_TOKEN = "<image>"
STOP_STRING = "<Overall>"
# Fields of AITQE's config.json and the only value LLaVA can express for each.
MAPPABLE = {"mm_projector_type": "mlp", "pooling_kernel": 1, "image_aspect_ratio": "square", "rope_scaling": None}


def refuse_unmappable(raw: dict, where: str) -> None:
    """One-line InputError naming the first config field LLaVA cannot express."""
    for key, value in MAPPABLE.items():
        if key in raw and raw[key] != value and not (key == "pooling_kernel" and raw[key] is None):
            raise InputError(f"{where}: {key}={raw[key]!r} cannot be exported as LLaVA (which expresses only "
                             f"{key}={value!r}); this checkpoint has no LLaVA equivalent")


def prompt_text(caption: str) -> str:
    """The text a LLaVA processor is given for one pair (one image placeholder, then the prompt)."""
    return IMAGE_TOKEN + IMAGE_SEPARATOR + PROMPT.format_map({"caption": caption})


def chat_template() -> str:
    """Jinja: each image part -> placeholder + separator, each text part (the caption) -> AITQE's
    prompt around it. No role markers, no BOS, as the original. Only expressions emit text, so
    the template's whitespace handling cannot touch the prompt's newlines."""
    before, after = PROMPT.split("{caption}")
    return ("{%- for message in messages -%}"
            "{%- if message['content'] is string -%}{{ " + json.dumps(before) + " + message['content'] + "
            + json.dumps(after) + " }}{%- else -%}{%- for part in message['content'] -%}"
            "{%- if part['type'] == 'image' -%}{{ " + json.dumps(IMAGE_TOKEN + IMAGE_SEPARATOR) + " }}"
            "{%- elif part['type'] == 'text' -%}{{ " + json.dumps(before) + " + part['text'] + " + json.dumps(after)
            + " }}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}")


def export_tokenizer(tokenizer, vocab_size: int) -> tuple[PreTrainedTokenizerFast, int, str]:
    """The runtime's tokenizer with the image placeholder added and the segment-start `\\n` rule;
    returns it, the placeholder's id, and how its embedding row was found."""
    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\A\n"), behavior="isolated"), backend.pre_tokenizer])
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=tokenizer.eos_token,
                                   pad_token=tokenizer.pad_token, bos_token=None, unk_token=None,
                                   clean_up_tokenization_spaces=False, padding_side="left")
    before = len(fast)
    fast.add_special_tokens({"additional_special_tokens": [AddedToken(IMAGE_TOKEN, special=True, normalized=False)]},
                            replace_extra_special_tokens=False)
    image_id = fast.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id < vocab_size:
        how = f"spare embedding row {image_id} (the embeddings have {vocab_size} rows, the tokenizer {before} tokens)"
    else:
        how = f"embeddings resized from {vocab_size} to {image_id + 1} rows (no spare row), the new rows zero"
    return fast, image_id, how


def image_processor(spec: ImageSpec):
    """SigLIP's image processor (PIL backend) with AITQE's size, resample, rescale, mean and std."""
    try:
        from transformers import SiglipImageProcessorPil as cls
    except ImportError:  # transformers < 5: the PIL processor is SiglipImageProcessor
        from transformers import SiglipImageProcessor as cls
    return cls(do_resize=True, size={"height": spec.size, "width": spec.size}, resample=spec.resample,
               do_rescale=True, rescale_factor=spec.rescale, do_normalize=True,
               image_mean=list(spec.mean), image_std=list(spec.std), do_convert_rgb=True)


def processor(tokenizer: PreTrainedTokenizerFast, spec: ImageSpec, patch_size: int) -> LlavaProcessor:
    return LlavaProcessor(image_processor=image_processor(spec), tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="full", chat_template=chat_template(),
                          image_token=IMAGE_TOKEN, num_additional_image_tokens=0)


def llava_config(llm: Qwen2Config, vision: SiglipVisionConfig, *, image_token_id: int, image_tokens: int,
                 vocab_size: int, eos: list[int], pad: int, dtype: str) -> LlavaConfig:
    text = Qwen2Config(**{**llm.to_dict(), "vocab_size": vocab_size, "eos_token_id": eos[0] if len(eos) == 1 else eos,
                          "pad_token_id": pad, "bos_token_id": None})
    cfg = LlavaConfig(text_config=text, vision_config=SiglipVisionConfig(**vision.to_dict()),
                      image_token_index=image_token_id, image_seq_length=image_tokens, projector_hidden_act="gelu",
                      vision_feature_select_strategy="full", vision_feature_layer=-2, multimodal_projector_bias=True,
                      tie_word_embeddings=llm.tie_word_embeddings)
    cfg.architectures = ["LlavaForConditionalGeneration"]
    cfg.dtype = dtype
    return cfg


def llava_name(name: str) -> str | None:
    """AITQE checkpoint tensor name -> llava-hf name; None for `image_newline` (never used)."""
    if name.startswith("model."):
        return "language_model." + name[len("model."):]
    if name.startswith("mm_projector."):
        return {"mm_projector.0.weight": "multi_modal_projector.linear_1.weight",
                "mm_projector.0.bias": "multi_modal_projector.linear_1.bias",
                "mm_projector.2.weight": "multi_modal_projector.linear_2.weight"}.get(name, "?" + name)
    if name == "image_newline":
        return None
    for prefix in ("vision_model.vision_model.", "vision_model."):
        if name.startswith(prefix):
            return "vision_tower.vision_model." + name[len(prefix):]
    return "?" + name


def padded(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """An embedding or lm_head matrix grown to `rows` rows with zero rows."""
    if tensor.shape[0] >= rows:
        return tensor
    return torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], *tensor.shape[1:])])
