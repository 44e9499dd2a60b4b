"""Data: corpora (locate, download, verify), tokenizers, vocabularies and batching.

This replaces torchtext's `get_tokenizer`, `build_vocab_from_iterator` and `datasets.WikiText2`
with plain Python and torch (torchtext's last release no longer imports with current torch).
"""

from labkit.data.batching import (
                                  BPTTBatches,
                                  ClassificationBatches,
                                  RandomWindows,
                                  batchify,
                                  eval_windows,
                                  pad_batch,
                                  strided_windows,
)
from labkit.data.corpora import DATASETS, cache_dir, locate, sst2, wikitext2_lines
from labkit.data.lm import DataConfig, LMData, load_lm_data
from labkit.data.tokenizers import (
                                  BPETokenizer,
                                  Tokenizer,
                                  WordTokenizer,
                                  basic_english,
                                  build_tokenizer,
                                  count_words,
                                  load_tokenizer,
                                  whitespace,
)
from labkit.data.vocab import Vocab, build_vocab

__all__ = ["BPETokenizer", "BPTTBatches", "ClassificationBatches", "DATASETS", "DataConfig",
           "LMData", "RandomWindows", "Tokenizer", "Vocab", "WordTokenizer", "basic_english",
           "batchify", "build_tokenizer", "build_vocab", "cache_dir", "count_words",
           "eval_windows", "load_lm_data", "load_tokenizer", "locate", "pad_batch", "sst2",
           "strided_windows", "whitespace", "wikitext2_lines"]
