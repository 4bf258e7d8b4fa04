"""``tipsv2 info`` and ``tipsv2 convert``."""
from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, device_option, echo_json, load_model, user_errors


@click.command()
@click.argument("model_name", required=False, default=None)
@click.option("--list", "list_all", is_flag=True, help="List the registered model names.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@device_option
@user_errors
def info(model_name: str | None, list_all: bool, as_json: bool, device: str) -> None:
    """Show a model's variant, parameters, dims, image size, weights fingerprint and where it came from.

    MODEL_NAME: registry name, hub id (org/name[@revision]) or model directory.
    """
    from ..loading import resolve_source
    from ..registry import EMBEDDED_DEFAULT, get_spec, list_models

    if list_all:
        rows = []
        for name in list_models():
            spec = get_spec(name)
            kind, path = resolve_source(name)
            rows.append({"name": name, "version": spec.version, "width": spec.width, "depth": spec.depth,
                         "image_size": spec.image_size if spec.version == 2 else 448,
                         "available": kind not in ("hub", "missing"), "where": kind,
                         "path": None if path is None else str(path), "hub_id": spec.hub_id})
        if as_json:
            echo_json(rows)
        else:
            for r in rows:
                status = {"hub-cache": f"HF cache ({r['hub_id']})", "hub": f"hub {r['hub_id']} (not downloaded)",
                          "missing": "- (convert it)"}.get(r["where"], r["where"])
                click.echo(f"{r['name']:<18} v{r['version']}  width {r['width']:<5} depth {r['depth']:<3} {status}")
        return
    model = load_model(model_name or EMBEDDED_DEFAULT, device=device)
    vc, tc = model.vision_config, model.config.text_config
    data = {
        "name": model.name,
        "source": model.source,
        "trained": model.meta.get("trained", True),
        "description": model.meta.get("description", ""),
        "parameters": model.num_parameters(),
        "embed_dim": model.embed_dim,
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "grid": model.image_size // model.patch_size,
        "vision": {"layers": vc.num_hidden_layers, "heads": vc.num_attention_heads, "swiglu": vc.use_swiglu_ffn,
                   "prefix_tokens": model.num_prefix_tokens},
        "text": {"layers": tc.num_hidden_layers, "vocab_size": tc.vocab_size,
                 "max_length": tc.max_position_embeddings, "tokenizer": model.tokenizer is not None,
                 "tokenizer_kind": getattr(model.tokenizer, "kind", None)},
        "weights_fingerprint": model.weights_fingerprint,
        "temperature": model.temperature,
        "dtype": str(model.dtype).replace("torch.", ""),
    }
    if as_json:
        echo_json(data)
        return
    params = data["parameters"]
    click.echo(f"model        {data['name']}" + ("" if data["trained"] else "  (RANDOM WEIGHTS: not trained)"))
    click.echo(f"loaded from  {data['source']}")
    click.echo(f"parameters   vision {params['vision']:,}  text {params['text']:,}  total {params['total']:,}")
    click.echo(f"embedding    {data['embed_dim']} dims, image {data['image_size']} px, patch {data['patch_size']} "
               f"({data['grid']}x{data['grid']} grid), prefix tokens {model.num_prefix_tokens} [CLS1, CLS2]")
    click.echo(f"vision       {vc.num_hidden_layers} layers, {vc.num_attention_heads} heads, "
               f"{'SwiGLU' if vc.use_swiglu_ffn else 'GELU MLP'}")
    tokenizer = {"transformers": "Tipsv2Tokenizer (tokenizer.json)", "sentencepiece": "SentencePiece (tokenizer.model)",
                 None: "none (vision-only)"}.get(data["text"]["tokenizer_kind"], str(data["text"]["tokenizer_kind"]))
    click.echo(f"text         {tc.num_hidden_layers} layers, vocab {tc.vocab_size}, max {tc.max_position_embeddings} tokens, "
               f"tokenizer {tokenizer}")
    click.echo(f"weights      {data['weights_fingerprint']}")


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--vision", "vision_npz", type=click.Path(dir_okay=False, path_type=Path), help="Official vision .npz.")
@click.option("--text", "text_npz", type=click.Path(dir_okay=False, path_type=Path), help="Official text .npz.")
@click.option("--tokenizer", "tokenizer_model", type=click.Path(dir_okay=False, path_type=Path),
              help="SentencePiece tokenizer.model.")
@click.option("--dpt", "dpt_decoders", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Official DPT decoder checkpoint (depth, normals or segmentation; repeatable), with --vision: "
                   "writes a Tipsv2Dpt directory for tips.load_dense (docs/dense.md).")
@click.option("--variant", required=True,
              help="Registry name of the architecture, e.g. tipsv2-b14 (TIPSv2) or tips-b14 (TIPS v1).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@user_errors
def convert(out_dir: Path, vision_npz: Path | None, text_npz: Path | None, tokenizer_model: Path | None,
            dpt_decoders: tuple[Path, ...], variant: str, as_json: bool) -> None:
    """Convert official TIPS/TIPSv2 .npz checkpoints into an HF-format directory.

    Every key and shape is checked against the variant before anything is written. Either
    checkpoint may be left out; the missing tower is then randomly initialised and recorded as
    such in OUT_DIR/tipsv2_sdk.json. The text tower needs --tokenizer.
    """
    import json

    if dpt_decoders:
        from .dense import convert_dpt

        return convert_dpt(out_dir, vision_npz, text_npz, tokenizer_model, dpt_decoders, variant, as_json)
    if vision_npz is None and text_npz is None:
        raise UserError("give at least one of --vision and --text")
    for label, path in (("--vision", vision_npz), ("--text", text_npz), ("--tokenizer", tokenizer_model)):
        if path is not None and not path.is_file():
            raise UserError(f"{label}: no such file: {path}")
    from ..registry import get_spec

    get_spec(variant)  # an unknown --variant fails here, before torch is imported
    from ..convert import convert_official
    from ..fingerprint import directory_fingerprint, short_fingerprint

    out = convert_official(vision_npz, text_npz, tokenizer_model, out_dir, variant=variant)
    meta = json.loads((out / "tipsv2_sdk.json").read_text())
    fingerprint = directory_fingerprint(out)  # stored by save_pretrained: no second hash
    if as_json:
        echo_json({"out_dir": str(out), **meta, "weights_fingerprint": fingerprint})
        return
    towers = " + ".join(t for t in ("vision", "text") if meta["converted_from"][t])
    random = f"; random {' + '.join(meta['random_towers'])} tower" if meta["random_towers"] else ""
    click.echo(f"wrote {out} ({meta['variant']}, TIPS v{meta['version']}: {towers}{random}; "
               f"weights {short_fingerprint(fingerprint)})")
