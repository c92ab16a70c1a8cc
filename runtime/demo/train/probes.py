"""Training-only heads that give the demo model direct supervision; none is part of the checkpoint.

The released AITQE starts from a pretrained SigLIP and a pretrained Qwen2; the demo model starts
from scratch on a 2-core CPU budget, and these probes stand in for what pretraining would give:

- `SceneProbe` reads, from each image token alone (one per grid cell), which cell it is and that
  cell's object and text, so the tower learns to see shapes, colours, sizes and words;
- `CaptionCheck` reads the LM's last hidden state just after each claim in the caption (an
  object phrase, or the text) and says whether the image bears it out. Its routing loss steers a
  few attention heads along the path that judgement needs: to the claim's colour and shape words,
  to the image token of the cell it names, and, where the overall score is written, to the false
  claims (why both: docs/design-notes.md).

Both are written by hand: they are a few lines each and specific to this world's labels.
"""

from __future__ import annotations

import torch

from runtime.demo.world import COLOURS, SHAPES, SIZES, TEXTS, Example, Scene, mutation
from runtime.prompt import PROMPT, encode_prompt, separator_ids

MAX_CLAIMS = 5  # up to 4 objects and the text
# (layer, head, target column, the column is an image token) of the heads the routing loss steers
ROUTES = ((1, 0, 2, True), (0, 1, 3, False), (0, 2, 4, False))
SCORE_LAYER = 3  # its head 0, where the overall score is read, is steered to the false claims
OVERALL_KEY = '"Overall Score": "'  # the overall score's digits follow this in a verdict text


def scene_labels(scene: Scene) -> list[int]:
    """Per grid cell, in reading order: shape, colour, size (0 = empty cell) and text (0 = no text
    across this cell's row)."""
    cells = [[0, 0, 0, 0] for _ in range(9)]
    for o in scene.objects:
        cells[o.row * 3 + o.col][:3] = [SHAPES.index(o.shape) + 1, list(COLOURS).index(o.colour) + 1,
                                        SIZES.index(o.size) + 1]
    if scene.text:
        for col in range(3):
            cells[scene.text_row * 3 + col][3] = TEXTS.index(scene.text) + 1
    return [v for cell in cells for v in cell]


def claims(e: Example) -> list[tuple[str, bool, int]]:
    """The caption's claims in order, (phrase, true of the image, grid cell it names or -1 for the
    text); none for garbled/vague/unrelated."""
    if e.kind in ("exact", "verbose"):
        objs, text = e.scene.objects, e.scene.text
    elif e.kind.startswith("wrong_"):
        objs, text = mutation(e.scene, e.kind)[:2]
    else:
        return []
    out = [(o.phrase(), o in e.scene.objects, o.row * 3 + o.col) for o in objs]
    return out + ([(text, text == e.scene.text, -1)] if text else [])


def claim_targets(e: Example, tokenizer) -> list[tuple[int, int, int, int, int]]:
    """Per claim: (index in the prompt's text tokens of the character after it, 1 if true, cell,
    token of its colour word, token of its shape word; -1 for the text's).

    The character after: at a phrase's last word the LM cannot yet tell "top" from "top left"."""
    start = PROMPT.index("{caption}")
    spans = encode_prompt(tokenizer, e.caption, offsets=True)["offset_mapping"]
    before = len(separator_ids(tokenizer))  # the prompt's ids start with the separator's

    def token_at(char: int) -> int:
        return before + next(i for i, (a, b) in enumerate(spans) if a <= start + char < b)

    out, at = [], 0
    for phrase, true, cell in claims(e):
        found = e.caption.index(phrase, at)
        at = found + len(phrase)  # the caption is always followed by the rest of the prompt
        words = phrase.split(" ")
        colour, shape = ((token_at(found + len(words[0]) + 1), token_at(found + len(words[0]) + len(words[1]) + 2))
                         if cell >= 0 else (-1, -1))
        out.append((token_at(at), int(true), cell, colour, shape))
    return out


class SceneProbe(torch.nn.Module):
    """From each image token alone: which grid cell it is, and that cell's object and text.

    One token per cell, so this makes every token say where it is and what is there, in a form the
    LM's attention can match against the words of a caption."""

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, n) for n in
                                         (9, len(SHAPES) + 1, len(COLOURS) + 1, len(SIZES) + 1, len(TEXTS) + 1))

    def loss(self, image: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """image: (batch, 9, hidden); targets: (batch, 36) from `scene_labels`."""
        image, targets = image.float(), targets.reshape(-1, 9, 4)
        cell = torch.arange(9, device=image.device).expand(image.shape[0], 9)
        wanted = torch.cat([cell[..., None], targets], dim=-1)
        ce = torch.nn.functional.cross_entropy
        return sum(ce(head(image).flatten(0, 1), wanted[..., k].flatten()) for k, head in enumerate(self.heads)) / 5


class CaptionCheck(torch.nn.Module):
    """Whether each claim of the caption is true, from the LM's last hidden state just after it.

    Its routing loss also steers three attention heads there, to what the comparison needs: the
    claimed cell's image token, and the claim's colour and shape words (ROUTES); and one head
    where the overall score is written to the claims that are false."""

    def __init__(self, hidden: int):
        super().__init__()
        self.head = torch.nn.Linear(hidden, 1)

    def loss(self, hidden: torch.Tensor, attentions, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden: (batch, tokens, hidden) of the text part; attentions: per layer (batch, heads, sequence,
        sequence); targets: from `check_tensor`. Returns the check and routing losses."""
        pos, label, *_, score = targets.unbind(-1)
        keep = pos >= 0
        if not keep.any():
            return hidden.new_zeros(()), hidden.new_zeros(())
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(pos)
        logits = self.head(hidden[rows[keep], pos[keep]].float()).squeeze(-1)
        check = torch.nn.functional.binary_cross_entropy_with_logits(logits, label[keep].float())
        image = attentions[0].shape[-1] - hidden.shape[1]
        routes = []
        for layer, head, column, is_image in ROUTES:
            to = targets[..., column]
            named = keep & (to >= 0)
            if named.any():
                key = to[named] if is_image else image + to[named]
                weight = attentions[layer][rows[named], head, image + pos[named], key]
                routes.append(-torch.log(weight.float() + 1e-6).mean())
        false = keep & (label == 0)
        if false.any():
            weight = attentions[SCORE_LAYER][rows[false], 0, image + score[false], image + pos[false]]
            routes.append(-torch.log(weight.float() + 1e-6).mean())
        return check, sum(routes) / (len(ROUTES) + 1) if routes else check.new_zeros(())


def score_position(tokenizer, answer: str) -> int:
    """Index of the answer token after which the overall score's first digit comes."""
    digit = answer.index(OVERALL_KEY) + len(OVERALL_KEY)
    spans = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return next(i for i, (a, b) in enumerate(spans) if a <= digit < b) - 1


def check_tensor(examples: list[Example], tokenizer, score_at: list[int]) -> torch.Tensor:
    """`CaptionCheck` targets of a batch: `claim_targets` per claim and the text-token index of the
    token that predicts the example's overall score (`score_at`, from `score_position`), padded with -1."""
    out = torch.full((len(examples), MAX_CLAIMS, 6), -1)
    for i, e in enumerate(examples):
        for j, target in enumerate(claim_targets(e, tokenizer)):
            out[i, j] = torch.tensor([*target, score_at[i]])
    return out

