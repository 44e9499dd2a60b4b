"""Hugging Face GPT-2, nanoGPT and TensorBoard, in and out of labkit runs.

- `export_hf(run, out)`: a Transformer run as a Hugging Face GPT-2 folder (`GPT2LMHeadModel`,
  its tokenizer for `transformers`), computing the same logits (hf.py, gpt2.py, tokenizer.py).
- `import_checkpoint(path, out)`: a Hugging Face GPT-2 folder or a nanoGPT ckpt.pt as a labkit run
  (importing.py, nanogpt.py); weights read lazily, nothing ever unpickled (weights.py).
- `TensorBoardCallback`, `export_tensorboard(run, out)`: metrics records as TensorBoard scalars.
Every folder is written under a temporary name and renamed into place (folders.py). Nothing here
downloads.
"""

from labkit.interop.hf import export_hf
from labkit.interop.importing import import_checkpoint
from labkit.interop.tensorboard import TensorBoardCallback, export_tensorboard

__all__ = ["TensorBoardCallback", "export_hf", "export_tensorboard", "import_checkpoint"]
