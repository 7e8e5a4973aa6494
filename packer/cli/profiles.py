"""`packer profiles`: list the shipped (measured) profiles and the catalog of derivable ones;
`packer profile derive`: build a profile from a model's architecture and a GPU's datasheet.
(Reads JSON files only: starts fast.)"""

from __future__ import annotations

import click

from ..errors import InputError
from .common import bare, fail

__all__ = ["profiles", "profile"]


@click.command()
def profiles() -> None:
    """List the measured profiles (provenance: measured), then the catalog's models and GPUs: any
    MODEL@GPU or MODEL@GPUxN of them is a profile derived on use (provenance: derived)."""
    from ..derive import catalog_gpus, catalog_models
    from ..profile import list_profiles, load_profile

    for name in list_profiles():  # measured: NAME<TAB>description (the format scripts read)
        click.echo(f"{name}\t{load_profile(name).description}")
    for name, m in catalog_models().items():  # then the catalog, derived on use as MODEL@GPU[xN]
        click.echo(f"model:{name}\t{m.get('title', name)}: {m['num_hidden_layers']} layers, hidden {m['hidden_size']}, "
                   f"{m['num_attention_heads']}/{m['num_key_value_heads']} heads, vocab {m['vocab_size']} "
                   f"(catalog; MODEL@GPU or MODEL@GPUxN profiles are provenance: derived)")
    for name, g in catalog_gpus().items():
        click.echo(f"gpu:{name}\t{g.get('title', name)}: {g['memory_gib']:g} GiB, {g['hbm_tb_s']:g} TB/s, "
                   f"{g['bf16_dense_tflops']:g} dense BF16 TFLOPS (catalog; append xN for N-way tensor parallelism)")


@click.group()
def profile() -> None:
    """Performance profiles: `packer profile derive` builds one without measurements."""


@profile.command()
@click.option("--model", "model", required=True, metavar="NAME|config.json",
              help="A catalog model (see `packer profiles`) or a Hugging Face config.json.")
@click.option("--gpu", "gpu", required=True, metavar="NAME|spec.json",
              help="A catalog GPU or a spec JSON (memory_gib, hbm_tb_s, bf16_dense_tflops, link_gb_s).")
@click.option("--tp", default=1, show_default=True, type=int, help="GPUs per server (vLLM --tensor-parallel-size).")
@click.option("--dtype", default="bf16", show_default=True, help="Weight and KV dtype (bf16 or fp16).")
@click.option("--reference", "references", multiple=True, metavar="PROFILE",
              help="A measured profile to fit the efficiency factors on (repeatable) [both shipped profiles].")
@click.option("--max-model-len", default=None, type=int, help="vLLM's --max-model-len [the model's default].")
@click.option("--name", default=None, help="The profile's name [MODEL@GPU or MODEL@GPUxN].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="PROFILE.json")
def derive(model: str, gpu: str, tp: int, dtype: str, references: tuple[str, ...], max_model_len: int | None,
           name: str | None, out: str) -> None:
    """Derive a profile (provenance: derived) from the architecture, the GPU and the reference profiles."""
    from .. import files
    from ..derive import DEFAULT_REFERENCES, derive_profile, profile_dict

    try:
        p = derive_profile(model, gpu, tp=tp, dtype=dtype, references=references or DEFAULT_REFERENCES,
                           max_model_len=max_model_len, name=name)
    except InputError as e:
        flag = {"model": "--model", "gpu": "--gpu", "tp": "--tp", "dtype": "--dtype", "reference": "--reference",
                "profile": "--reference"}.get(e.field.split(".")[0], e.field)
        fail(f"{flag}: {bare(e) if e.field in ('model', 'gpu', 'tp', 'dtype', 'reference') else e}")
    files.write_json_atomic(out, profile_dict(p), indent=2)
    d = p.fit_report["derivation"]
    click.echo(f"wrote {out}: {p.name} (provenance: derived, {p.tensor_parallel_size} GPU"
               f"{'' if p.tensor_parallel_size == 1 else 's'} per server) from {', '.join(d['references'])}")
    kv = p.memory.kv_tokens(1, 16)
    click.echo(f"  weights {d['model']['weight_gib_per_gpu']:.2f} GiB/GPU, non-KV {p.memory.non_kv_gib:.2f} GiB, "
               f"KV {p.memory.kv_bytes_per_token} B/token -> {kv} tokens with 1 slot at rank 16; decode "
               f"{', '.join(f'{b:g}: {ms:.2f} ms' for b, ms in zip(p.step.decode_batch, p.step.decode_ms))}")
