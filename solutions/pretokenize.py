"""GPT-2's pre-tokenization pattern, shared by the BPE trainer (bpe.py) and the tokenizer
(tokenizer.py). Nothing to write here.

Before BPE runs, text is cut into chunks with this pattern (the `regex` module's ``\\p{L}``,
letters, and ``\\p{N}``, numbers; Python's own `re` lacks them), and merges never cross two
chunks. The pieces, in the order they are tried:

- ``'s 't 're 've 'm 'll 'd``: English contractions, so that "don't" is "don" + "'t";
- `` ?\\p{L}+``: a word, with the space before it (" dog"), so "dog" after a space is one token;
- `` ?\\p{N}+`` and `` ?[^\\s\\p{L}\\p{N}]+``: runs of digits, and runs of punctuation or symbols;
- ``\\s+(?!\\S)``: a run of whitespace, less its last character when a word follows, so that
  the last space can join the word (``"a   b"`` gives ``"a"``, ``"  "``, ``" b"``);
- ``\\s+``: any whitespace left (a newline before a word).

Special tokens such as ``<|endoftext|>`` are split off before this pattern is applied.
"""

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

ENDOFTEXT = "<|endoftext|>"
