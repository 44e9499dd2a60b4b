"""`labkit export` and `labkit import`: runs out as Hugging Face GPT-2 folders or TensorBoard scalars,
GPT-2 and nanoGPT checkpoints in as runs; and the --tensorboard option of the training commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from labkit.cli.common import add_command, note, run_path

TENSORBOARD_HELP = ("also write the metrics as TensorBoard scalars into DIR/<run name>/ "
                    "(see them with: tensorboard --logdir DIR)")


def tensorboard_callbacks(args: argparse.Namespace) -> list[Any]:
    """The TensorBoard writer --tensorboard asks for, as a list of callbacks (empty without it)."""
    if not getattr(args, "tensorboard", None):
        return []
    from labkit.interop.tensorboard import TensorBoardCallback

    return [TensorBoardCallback(args.tensorboard)]


def cmd_export(args: argparse.Namespace) -> int:
    from labkit.interop import export_hf, export_tensorboard

    run = run_path(args.run, args.runs_dir)
    if args.format == "hf":
        out = export_hf(run, args.out, which=args.which)
        print(f"wrote {out}: a GPT2LMHeadModel with its tokenizer; in Python:\n"
              f"  transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
    else:
        out = export_tensorboard(run, args.out)
        print(f"wrote {out}\nsee it with: tensorboard --logdir {args.out}")
    return 0


def default_name(path: Path) -> str:
    """A run name for a checkpoint: the model's name in a Hugging Face cache
    (.../models--openai-community--gpt2/snapshots/<hash> -> openai-community-gpt2), else the
    folder's (a nanoGPT out_dir) or the file's."""
    path = path.expanduser().resolve()
    if path.parent.name == "snapshots":
        return path.parent.parent.name.removeprefix("models--").replace("--", "-")
    return path.parent.name if path.is_file() and path.suffix == ".pt" else path.stem


def cmd_import(args: argparse.Namespace) -> int:
    from labkit.interop import import_checkpoint
    from labkit.runs import safe_run_path

    path = Path(args.path).expanduser()
    out = safe_run_path(args.runs_dir, args.name or default_name(path))
    import_checkpoint(path, out, tokenizer=args.tokenizer, corpus=args.corpus, say=note)
    print(f"run directory: {out}\nnext: labkit generate {os.path.relpath(out)} --prompt 'The'  "
          f"(or labkit eval {os.path.relpath(out)})")
    return 0


def add_interop(sub: Any) -> None:
    p = add_command(sub, "export", "write a run as a Hugging Face GPT-2 folder or TensorBoard scalars",
                    "hf: a Transformer run as a Hugging Face GPT-2 checkpoint folder OUT (the config of a\n"
                    "GPT2LMHeadModel, its weights as safetensors, the tokenizer for transformers' AutoTokenizer),\n"
                    "computing the same logits. tensorboard: the run's metrics as TensorBoard scalars in\n"
                    "OUT/<run name>/. OUT must not exist yet; it is written whole or not at all.",
                    "examples:\n  labkit export tf-1 --format hf exported/tf-1\n"
                    "  labkit export tf-1 --format tensorboard tb && tensorboard --logdir tb")
    p.add_argument("--format", choices=("hf", "tensorboard"), required=True, help="what to write")
    p.add_argument("out", metavar="OUT", help="the folder to write (hf) or the TensorBoard log folder")
    p.set_defaults(func=cmd_export)

    p = add_command(sub, "import", "make a run of a Hugging Face GPT-2 folder or a nanoGPT ckpt.pt",
                    "Turn a local checkpoint into a labkit run (weights, config, tokenizer, a card saying\n"
                    "where it came from) that the app, generate, eval and finetune open like any other:\n"
                    "a Hugging Face GPT-2 folder (e.g. a snapshot in ~/.cache/huggingface/hub) or a nanoGPT\n"
                    "ckpt.pt (read with torch.load(weights_only=True): a file holding pickled objects is\n"
                    "refused). Nothing is downloaded. The memory it needs is said before loading.",
                    "examples:\n  labkit import ~/.cache/huggingface/hub/models--gpt2/snapshots/<hash> --name gpt2\n"
                    "  labkit import out-shakespeare/ckpt.pt --tokenizer ~/gpt2-tokenizer --name shakespeare",
                    run=False)
    p.add_argument("path", metavar="PATH", help="a Hugging Face GPT-2 folder, or a nanoGPT ckpt.pt (or its folder)")
    p.add_argument("--name", help="the run's folder name (default: the model's or the folder's name)")
    p.add_argument("--tokenizer", metavar="PATH", help="a Hugging Face tokenizer (its JSON file, or a folder holding "
                   "it) or a labkit run's tokenizer file; needed for nanoGPT (default: the Hugging Face folder's own)")
    p.add_argument("--corpus", default="wikitext-2", metavar="NAME|FILE", help="the corpus labkit eval scores "
                   "the run on, as labkit pretrain --corpus")
    p.set_defaults(func=cmd_import)
