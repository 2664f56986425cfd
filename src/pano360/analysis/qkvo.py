"""``pano360 qkvo DATA``: UniPano's analysis of the attention projections, as a tool.

UniPano (``reference/unipano_panfusion.md`` §1.1) asks which of the four attention projections W_q,
W_k, W_v, W_o carry the panorama (equirectangular) adaptation. Two experiments, on the same data,
steps and seed:

* **isolation** (paper Fig. 3 / Tab. 1): train one LoRA per subset ({q}, {k}, {v}, {o}) and one on all
  four, and evaluate each. The paper finds that q-only and k-only LoRAs do not learn the spherical
  distortion while v-only and o-only LoRAs do.
* **switching** (Fig. 4): with the all-four LoRA, sample with subsets of it turned off: (q,k,v,o),
  (v,o), (q,k), none. The paper finds that dropping v/o brings perspective generation back and
  dropping q/k keeps panorama generation.

Every variant is scored with the project's metrics (:func:`pano360.metrics.suite.evaluate`: FAED, FID,
CLIP score by default) on panoramas generated from **held-out** captions (the last ``eval_count``
panoramas of DATA are not trained on; their images are the reference set), plus a **perspective
retention** measure: the mean LPIPS distance between the variant's and the base model's perspective
image (the model's native square size, no wraparound) from the same caption and seed. 0 means the
variant still draws the base model's perspective image; larger means the adaptation took it over.

**Transformers** (FLUX.1, SD3): the projections are found through the backbone contract's attention
sites (:meth:`~pano360.backbones.family.BackboneFamily.attention_sites`), and a letter covers both
streams of a joint attention: q = ``to_q`` + ``add_q_proj``, k = ``to_k`` + ``add_k_proj``, v = ``to_v``
+ ``add_v_proj``, o = ``to_out.0`` + ``to_add_out``; in FLUX's single-stream blocks q/k/v are the
attention's ``to_q/to_k/to_v`` (over text and image tokens together) and o is the block's whole
``proj_out``, which is W_o fused with the MLP's output projection (a LoRA on the attention columns alone
would not be a plain LoRA layer), so there the o LoRA also adapts the MLP path. Training those LoRAs
needs a trainer that trains transformers; without one, ``loras`` (``--loras DIR``) runs both
experiments on LoRAs trained elsewhere (``DIR/<subset>/``, pano360 adapter folders).

Outputs in ``output``: ``loras/<subset>/`` (the trained adapters), ``heldout/`` (reference panoramas),
``variants/<experiment>-<subset>/{panoramas,perspective}/``, ``results.json`` and ``report.html``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError

PROJECTION_LETTERS = "qkvo"
DEFAULT_SUBSETS = ("q", "k", "v", "o", "qkvo")  # isolation: one LoRA per subset
DEFAULT_SWITCHES = ("qkvo", "vo", "qk", "none")  # switching: subsets of the all-four LoRA kept on
DEFAULT_METRICS = ("faed", "fid", "clip")
ALL_FOUR = "qkvo"


def parse_subset(text: str) -> str:
    """``"q,k"`` / ``"qk"`` / ``"none"`` → the letters in q k v o order (``""`` for none)."""
    cleaned = text.strip().lower().replace(",", "").replace("+", "").replace(" ", "")
    if cleaned in ("none", "", "-"):
        return ""
    if any(c not in PROJECTION_LETTERS for c in cleaned) or len(set(cleaned)) != len(cleaned):
        raise InvalidInputError(f"a projection subset is letters from q, k, v, o (e.g. 'q', 'vo', 'qkvo') or "
                                f"'none', got {text!r}")
    return "".join(c for c in PROJECTION_LETTERS if c in cleaned)


def subset_name(letters: str) -> str:
    return letters or "none"


@dataclass
class QKVOConfig:
    """Settings of a ``pano360 qkvo`` run. Sizes in pixels; ``steps`` are optimizer steps per LoRA.

    ``subsets``: the LoRAs trained for the isolation experiment (the all-four LoRA is trained in any
    case when ``switches`` is not empty); ``switches``: the subsets of the all-four LoRA kept on.
    ``training``: extra :class:`pano360.training.config.TrainingConfig` fields (e.g. ``learning_rate``).
    ``random_metric_weights``: random metric networks (smoke tests only: the numbers mean nothing).
    """

    data: str
    output: str
    model: str = "stabilityai/stable-diffusion-2-base"
    steps: int = 1000
    rank: int = 4
    subsets: tuple[str, ...] = DEFAULT_SUBSETS
    switches: tuple[str, ...] = DEFAULT_SWITCHES
    seed: int = 0
    resolution: int = 512
    eval_count: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    metrics: tuple[str, ...] = DEFAULT_METRICS
    device: str = "auto"
    dtype: str = "auto"
    weights_dir: str | None = None
    random_metric_weights: bool = False
    training: dict = field(default_factory=dict)
    loras: str | None = None  # a folder of already trained LoRAs (<subset>/): no training
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        self.subsets = tuple(parse_subset(s) for s in self.subsets)
        self.switches = tuple(parse_subset(s) for s in self.switches)

    def check(self) -> None:
        """Model-free checks; raises :class:`InvalidInputError` with one line naming the fix."""
        if not self.subsets and not self.switches:
            raise InvalidInputError("nothing to do: give --subsets and/or --switches")
        if "" in self.subsets:
            raise InvalidInputError("--subsets are LoRAs to train; 'none' is only a --switches entry")
        for name in ("steps", "rank", "eval_count", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.eval_count < 2 and any(m in ("fid", "faed", "kid") for m in self.metrics):
            raise InvalidInputError("FID/FAED need at least 2 held-out panoramas: raise --eval-count")
        from ..metrics.suite import _expand

        _expand(self.metrics)  # unknown metric names fail here

    @property
    def trained_subsets(self) -> tuple[str, ...]:
        needed = list(self.subsets)
        if self.switches and ALL_FOUR not in needed:
            needed.append(ALL_FOUR)
        return tuple(needed)


# ------------------------------------------------------------------------------------------------ steps

def split_dataset(dataset, eval_count: int):
    """(training part, held-out part) of a :class:`~pano360.training.datasets.PanoramaDataset`: the last
    ``eval_count`` panoramas are held out."""
    if len(dataset) <= eval_count:
        raise InvalidInputError(f"DATA has {len(dataset)} panoramas; --eval-count {eval_count} holds out that many, "
                                "so nothing would be left to train on: lower --eval-count or add data")
    records = list(dataset.records)
    return (dataclasses.replace(dataset, records=records[:-eval_count]),
            dataclasses.replace(dataset, records=records[-eval_count:]))


# Module names of the attention projections, UNet and MMDiT alike (image stream, then text stream; FLUX's
# single-stream blocks: their proj_out is o). Longest names first where one ends another.
PROJECTION_NAMES = {"to_out.0": "o", "to_add_out": "o", "proj_out": "o", "to_q": "q", "add_q_proj": "q",
                    "to_k": "k", "add_k_proj": "k", "to_v": "v", "add_v_proj": "v"}


def projection_letter(path: str) -> str | None:
    """q/k/v/o of an attention projection's module path (``...attn1.to_out.0``, ``...attn.add_v_proj``,
    ``single_transformer_blocks.3.proj_out``), None for anything else."""
    for name, letter in PROJECTION_NAMES.items():
        if path == name or path.endswith("." + name):
            return letter
    return None


def projection_layers(denoiser, letters: str = ALL_FOUR) -> dict[str, list[int]]:
    """{module path: [in, out]} of the projections ``letters`` of every attention of ``denoiser`` (UNet or
    transformer), found through its family's attention sites; both streams of a joint attention."""
    from ..backbones.family import family_of_denoiser

    layers = {}
    for site in family_of_denoiser(denoiser).attention_sites(denoiser):
        for projections in (site.projections, site.text_projections):
            for letter in letters:
                if letter in projections:
                    linear = denoiser.get_submodule(projections[letter])
                    linear = getattr(linear, "base", linear)  # a LoRALinear while a LoRA is attached
                    layers[projections[letter]] = [int(linear.in_features), int(linear.out_features)]
    return layers


def study_lora(denoiser, letters: str = ALL_FOUR, rank: int = 4, seed: int | None = None):
    """A fresh LoRA (:class:`~pano360.adapters.lora.LoRAAdapter`) on the projections ``letters`` of every
    attention of ``denoiser``, UNet or transformer (what the study trains; B = 0, so it starts as the base)."""
    import torch

    from ..adapters.lora import PROJECTIONS, LoRAAdapter

    layers = projection_layers(denoiser, letters)
    if not layers:
        raise InvalidInputError(f"{type(denoiser).__name__} has no attention projections pano360 knows")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return LoRAAdapter(layers=layers, rank=rank, targets=[PROJECTIONS[c] for c in letters], attention="both")


def lora_subset(adapter, letters: str):
    """The part of a LoRA adapter on the projections in ``letters`` (a new adapter with those layers'
    weights), or None for the empty subset. UNet and transformer LoRAs alike (:func:`projection_letter`)."""
    from ..adapters.lora import PROJECTIONS

    if not letters:
        return None
    layers = {p: s for p, s in adapter.config["layers"].items() if projection_letter(p) in set(letters)}
    if not layers:
        raise InvalidInputError(f"the LoRA has no layer on {', '.join(letters)}")
    part = type(adapter)(layers=layers, rank=adapter.config["rank"], alpha=adapter.config["alpha"],
                         targets=[PROJECTIONS[c] for c in letters], attention=adapter.config["attention"])
    prefixes = tuple(f"layers.{p.replace('.', '-')}." for p in layers)
    part.load_state_dict({k: v for k, v in adapter.state_dict().items() if k.startswith(prefixes)}, strict=True)
    return part


@contextlib.contextmanager
def using_adapter(generator, adapter):
    """Run ``generator`` with only ``adapter`` (None: the base model) inside the block."""
    saved = list(generator.adapters), list(generator.adapter_sources)
    generator.adapters.clear()
    generator.adapter_sources.clear()
    try:
        if adapter is not None:
            generator.load_adapter(adapter)
        yield generator
    finally:
        generator.adapters[:], generator.adapter_sources[:] = saved


def _save_images(images, folder: Path, prompts: list[str]) -> None:
    """uint8-able float arrays [N, H, W, 3] in [0, 1] → ``folder/000.png`` … with the prompts in
    ``prompts.txt`` (one per line, the order of the files)."""
    from PIL import Image

    from ..io.atomic import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray((image * 255).round().clip(0, 255).astype("uint8")).save(folder / f"{index:03d}.png")
    atomic_write_text(folder / "prompts.txt", "".join(p.replace("\n", " ") + "\n" for p in prompts), overwrite=True)


def _generate(generator, prompts: list[str], config: QKVOConfig, height: int, width: int, wrap: bool):
    """Float arrays [N, H, W, 3] in [0, 1], one per prompt, seed ``config.seed + index``."""
    import numpy as np

    options = {} if wrap else {"wrap": False, "wrap_vae": False}
    images = []
    for index, prompt in enumerate(prompts):
        output = generator(prompt, method="circular", height=height, width=width, seed=config.seed + index,
                           num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                           output_type="np", progress=False, **options)
        images.append(np.asarray(output.images[0], dtype=np.float32))
    return np.stack(images)


def perspective_distance(images, base_images, lpips) -> list[float]:
    """LPIPS distance of each image [N, H, W, 3] in [0, 1] to the base model's image of the same index."""
    import torch

    def tensor(array):
        return torch.from_numpy(array).permute(0, 3, 1, 2).float() * 2 - 1

    with torch.no_grad():
        return [float(d) for d in lpips(tensor(images), tensor(base_images)).reshape(-1)]


def _image_set(folder: Path, images, prompts: list[str]):
    import torch

    from ..metrics.inputs import ImageSet

    tensor = torch.from_numpy((images * 255).round().clip(0, 255).astype("uint8")).permute(0, 3, 1, 2).contiguous()
    names = [f"{i:03d}.png" for i in range(len(images))]
    return ImageSet(folder=folder, names=names, images=tensor, original_size=tuple(tensor.shape[-2:]),
                    prompts=list(prompts))


def _evaluate(images, prompts, reference, folder: Path, config: QKVOConfig) -> dict:
    from ..metrics.suite import EvalConfig, evaluate

    eval_config = EvalConfig(metrics=list(config.metrics), seed=config.seed, device=config.device,
                             weights_dir=config.weights_dir, random_weights=config.random_metric_weights,
                             progress=False, batch_size=4)
    result = evaluate(_image_set(folder, images, prompts), reference, config=eval_config)
    values = {name: entry.get("value") for name, entry in result.metrics.items()}
    return {"metrics": values, "skipped": dict(result.skipped)}


def _train_lora(config: QKVOConfig, letters: str, dataset, folder: Path) -> dict:
    """Train one LoRA on the projections ``letters`` with the trainer; returns its summary."""
    from ..training.config import TrainingConfig
    from ..training.trainer import train

    options = {"rank": config.rank, "lora_targets": ",".join(letters)}
    training = TrainingConfig(data=config.data, output=str(folder), model=config.model, adapter="lora",
                              adapter_options=options, steps=config.steps, seed=config.seed,
                              resolution=config.resolution, checkpoint_every=0, overwrite=True,
                              progress=config.progress, **config.training)
    training.check()
    result = train(training, dataset=dataset)
    losses = [float(v) for v in result.losses]
    return {"folder": str(folder), "steps": result.steps, "final_loss": losses[-1] if losses else None,
            "losses": losses}


def check_training_support(model: str) -> None:
    """One line, before any model loads, when the LoRAs cannot be trained here: a transformer model and
    a trainer without transformer support (``pano360.training.trainer.TRAINS_TRANSFORMERS``)."""
    from ..plan import model_facts

    facts = model_facts(model)
    if not facts.is_dit:
        return
    from ..training import trainer

    if not getattr(trainer, "TRAINS_TRANSFORMERS", False):
        raise InvalidInputError(f"{model} is a {facts.family} transformer and this build's trainer trains UNets only "
                                "(flow-matching training: issue 20); give --loras DIR with the LoRAs "
                                "(DIR/<subset>/ adapter folders, e.g. DIR/qkvo/) trained elsewhere")


def provided_loras(config: QKVOConfig) -> dict[str, dict]:
    """The ``--loras`` folders the run needs, checked (one line naming the first one missing)."""
    from ..adapters.base import CONFIG_NAME

    root = Path(os.path.expanduser(config.loras))
    entries = {}
    for letters in config.trained_subsets:
        folder = root / subset_name(letters)
        if not (folder / CONFIG_NAME).is_file():
            raise InvalidInputError(f"--loras {config.loras}: no LoRA for subset {subset_name(letters)!r} "
                                    f"({folder} has no {CONFIG_NAME}); the run needs "
                                    f"{', '.join(subset_name(s) for s in config.trained_subsets)}")
        entries[letters] = {"folder": str(folder), "steps": "given", "final_loss": None, "losses": []}
    return entries


# ------------------------------------------------------------------------------------------------ run

def run_qkvo(config: QKVOConfig) -> dict:
    """Run both experiments; writes the outputs listed in the module docstring and returns the results."""
    from ..adapters import load_adapter
    from ..generator import PanoramaGenerator
    from ..training.datasets import open_dataset

    config.check()
    output = Path(os.path.expanduser(config.output))
    if (output / "results.json").exists() and not config.overwrite:
        raise InvalidInputError(f"{output} already holds a qkvo run (results.json); give another -o or --overwrite")
    given = provided_loras(config) if config.loras else None
    if given is None:
        check_training_support(config.model)
    dataset = open_dataset(config.data)
    train_part, held_out = split_dataset(dataset, config.eval_count)
    prompts = held_out.captions
    output.mkdir(parents=True, exist_ok=True)

    # 1. Train the LoRAs (same data, steps and seed for each), or take the given ones.
    if given is not None:
        training = given
    else:
        training = {}
        for letters in config.trained_subsets:
            training[letters] = _train_lora(config, letters, train_part, output / "loras" / subset_name(letters))

    # 2. Held-out reference panoramas at the training size.
    import numpy as np
    import torch

    height, width = config.resolution, 2 * config.resolution
    reference_images = np.stack([
        ((held_out.load(i, height).permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1) for i in range(len(held_out))])
    _save_images(reference_images, output / "heldout", prompts)
    reference = _image_set(output / "heldout", reference_images, prompts)

    # 3. Every variant: panoramas and perspective images from the held-out captions.
    generator = PanoramaGenerator.from_pretrained(config.model, device=config.device, torch_dtype=config.dtype)
    size = generator.backbone.info.native_size
    with using_adapter(generator, None):
        base_perspective = _generate(generator, prompts, config, size, size, wrap=False)
    _save_images(base_perspective, output / "variants" / "base" / "perspective", prompts)

    from ..nets.lpips import LPIPS

    lpips = LPIPS("vgg", weights_dir=config.weights_dir, pretrained=not config.random_metric_weights).eval()
    variants = [("isolation", s, s) for s in config.subsets] + [("switching", s, ALL_FOUR) for s in config.switches]
    results = {"isolation": {}, "switching": {}}
    cache: dict[tuple[str, str], dict] = {}  # (kept subset, trained LoRA) -> scores (qkvo/qkvo is in both)
    for experiment, kept, trained in variants:
        key = (kept, trained)
        if key not in cache:
            lora = load_adapter(training[trained]["folder"])
            adapter = lora_subset(lora, kept) if kept != trained else lora
            folder = output / "variants" / f"{experiment}-{subset_name(kept)}"
            with torch.no_grad(), using_adapter(generator, adapter):
                panoramas = _generate(generator, prompts, config, height, width, wrap=True)
                perspective = _generate(generator, prompts, config, size, size, wrap=False)
            _save_images(panoramas, folder / "panoramas", prompts)
            _save_images(perspective, folder / "perspective", prompts)
            scores = _evaluate(panoramas, prompts, reference, folder / "panoramas", config)
            distances = perspective_distance(perspective, base_perspective, lpips)
            scores["metrics"]["perspective_lpips"] = float(np.mean(distances))
            scores.update(folder=str(folder.relative_to(output)), lora=subset_name(trained), kept=subset_name(kept))
            cache[key] = scores
        results[experiment][subset_name(kept)] = cache[key]

    record = {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"},
        "data": {"panoramas": len(dataset), "trained_on": len(train_part), "held_out": len(held_out)},
        "held_out_prompts": prompts,
        "training": {subset_name(k): v for k, v in training.items()},
        **results,
    }
    from ..io.atomic import atomic_write_text
    from .report import render_qkvo_report

    atomic_write_text(output / "results.json", json.dumps(record, indent=2) + "\n", overwrite=True)
    atomic_write_text(output / "report.html", render_qkvo_report(record, output), overwrite=True)
    return record
